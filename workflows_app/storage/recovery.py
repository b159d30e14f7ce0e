"""Recovery: taking over runs whose executor is gone, and poison runs.

A sweep takes the unfinished runs whose lease (or hand-over deadline) expired, those
held by a process of this machine that no longer exists, and those released with a
cancel request, rebuilds each from its step rows and continues it (or compensates
it, when canceled).

Poison runs: a run whose recovery keeps failing with the same error ends failed. Each
failed recovery is counted on the run's row with its error; the same error
``WORKFLOWS["MAX_RECOVERY_FAILURES"]`` times in a row marks the run ``failed`` with
that error (it stays visible; no compensation can run for a run that cannot be
resumed). A lost database connection is not the run's fault and is not counted.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import traceback
from collections.abc import Callable
from functools import partial

from django.db import DatabaseError, InterfaceError, OperationalError
from django.db.models import F
from django.utils import timezone

from ..conf import workflows_settings
from ..models import StepExecution, WorkflowExecution
from ..orchestration import Transaction, WorkflowNotFound, orchestrator, runtime
from ..orchestration.states import Operation
from ..sdk import get_workflow
from ..status import UNFINISHED_STATES, ExecutionStatus, StepLogStatus, TransactionState
from .orm import retention_for

logger = logging.getLogger("workflows_app")

#: Longest error text kept on the row.
ERROR_CHARS = 2000


def recovery_error(exc: BaseException) -> str:
    """How a failed recovery's error is compared with the previous one."""
    return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]


def note_recovery_failure(pk: str, options: dict, exc: BaseException) -> bool:
    """Count a failed recovery of execution ``pk``; ``True`` when this marked the run
    failed. ``options`` are the workflow's (for the retention of the failed run)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return False
    error = recovery_error(exc)
    try:
        row = (
            WorkflowExecution.objects.unfinished()
            .filter(pk=pk)
            .values("recovery_failures", "recovery_error")
            .first()
        )
        if row is None:
            return False
        count = row["recovery_failures"] + 1 if row["recovery_error"] == error else 1
        limit = int(workflows_settings.MAX_RECOVERY_FAILURES)
        rows = WorkflowExecution.objects.unfinished().filter(pk=pk)
        if count < limit:
            rows.update(recovery_failures=count, recovery_error=error)
            return False
        now = timezone.now()
        retention = retention_for(options, TransactionState.FAILED)
        marked = rows.update(
            state=TransactionState.FAILED,
            status=ExecutionStatus.FAILED,
            error=str(exc) or type(exc).__name__,
            error_stack="".join(traceback.format_exception(exc)),
            recovery_failures=count,
            recovery_error=error,
            ended_at=now,
            updated_at=now,
            owner="",
            lease_expires_at=None,
            retention_time=retention,
            expires_at=None if retention is None else now + datetime.timedelta(seconds=retention),
            version=F("version") + 1,
        )
    except DatabaseError:
        logger.exception("Could not count the failed recovery of %s", pk)
        return False
    if marked:
        logger.error(
            "Execution %s failed to resume %s times in a row with %s; marked failed",
            pk,
            count,
            error,
        )
    return bool(marked)


def clear_recovery_failures(pk: str) -> None:
    """A recovery of ``pk`` went through: the count of failures starts again."""
    WorkflowExecution.objects.filter(pk=pk, recovery_failures__gt=0).update(
        recovery_failures=0, recovery_error=""
    )


def recover(
    now: datetime.datetime,
    limit: int,
    hand_over: bool,
    prepare: Callable[[Transaction], None],
) -> int:
    """One recovery sweep (``workflow_engine.recover``); returns how many runs it
    continued or handed over. ``prepare(tx)`` attaches the engine's event handlers."""
    storage = runtime.storage
    rows = list(WorkflowExecution.objects.lease_expired(now).order_by("lease_expires_at")[:limit])
    held = WorkflowExecution.objects.held_on_host(socket.gethostname(), now)[:limit]
    dead = {row.pk: row.owner for row in held if process_is_gone(row.owner)}
    if dead:
        rows += list(WorkflowExecution.objects.filter(pk__in=dead))
    recovered = complete_waiting_parents(limit)
    seen = {row.pk for row in rows}
    rows += [
        row for row in WorkflowExecution.objects.cancel_pending()[:limit] if row.pk not in seen
    ]
    for row in rows:
        try:
            workflow = get_workflow(row.workflow_id)
        except WorkflowNotFound:
            logger.warning(
                "Cannot recover %s: workflow %s is not registered", row.pk, row.workflow_id
            )
            continue
        tx = None
        try:
            tx = storage.claim(workflow.definition, row, now, dead_owner=dead.get(row.pk))
            if tx is None:
                continue
            if hand_over:
                enqueue = partial(runtime.scheduler.enqueue, tx.workflow_id, tx.transaction_id)
                storage.save(tx, then=enqueue)
            else:
                prepare(tx)
                tx.in_background = True
                orchestrator.execute(tx)
        except Exception as exc:
            logger.exception("Recovering %s failed", row.pk)
            if tx is not None:
                storage.abandon(tx)
            note_recovery_failure(row.pk, workflow.definition.options, exc)
            continue
        if row.recovery_failures and not hand_over:
            clear_recovery_failures(row.pk)
        recovered += 1
    return recovered


def process_is_gone(owner: str) -> bool:
    """Whether a lease token ``host:pid:token`` names a process of this host that no
    longer runs (killed workers are recovered at once instead of after the lease)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def complete_waiting_parents(limit: int) -> int:
    """Complete the parent steps whose nested child ended while the parent was busy
    (the child's row is the durable record of its outcome); returns how many."""
    from ..sdk.nesting import complete_parent_step

    waiting = StepExecution.objects.filter(
        status=StepLogStatus.WAITING,
        operation=Operation.SUB_WORKFLOW,
        execution__state__in=UNFINISHED_STATES,
        execution__owner="",
    ).values_list("execution__workflow_id", "execution__transaction_id", "step_id", "handler_type")
    keys = [":".join(parts) for parts in waiting[:limit]]
    if not keys:
        return 0
    completed = 0
    for row in WorkflowExecution.objects.finished().filter(parent_step_idempotency_key__in=keys):
        try:
            child = get_workflow(row.workflow_id)
            tx = runtime.storage.load(
                child.definition, row.transaction_id, include_finished=True, claim=False
            )
            if tx is not None and tx.has_finished():
                complete_parent_step(tx)
                completed += 1
        except Exception:
            logger.exception("Completing the parent step of nested %s failed", row.pk)
    return completed
