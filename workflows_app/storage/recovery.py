"""Recovery: taking over runs whose executor is gone, and poison runs.

A sweep takes the unfinished runs whose lease (or hand-over deadline) expired, those
held by a process of this machine that no longer exists, and those released with a
cancel request or an answer not yet applied, rebuilds each from its step rows and
continues it (applying the answer first, or compensating it, when canceled).

Poison runs: a run whose recovery keeps failing with the same error ends failed. Each
failed recovery is counted on the run's row with its error; the same error
``WORKFLOWS["MAX_RECOVERY_FAILURES"]`` times in a row marks the run ``failed`` with
that error (it stays visible; no compensation can run for a run that cannot be
resumed). A lost database connection is not the run's fault and is not counted.

The recovery schedule hands each run over to the workers (``hand_over``): the sweep
only moves the run's deadline and queues a resume task per run (and a task per
waiting parent whose nested child finished), so its duration does not grow with
what each run has left to do. The resume task counts its failures, interruptions
by the worker's task timeout included, toward the same bound.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import traceback
from collections.abc import Callable

from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from ..conf import workflows_settings
from ..models import StepExecution, WorkflowExecution
from ..orchestration import (
    Transaction,
    WorkflowNotFound,
    orchestrator,
    runtime,
)
from ..orchestration.states import Operation
from ..sdk import get_workflow
from ..status import UNFINISHED_STATES, ExecutionStatus, StepLogStatus, TransactionState
from .answers import apply_first
from .leases import lease_seconds
from .orm import retention_for

logger = logging.getLogger("workflows_app")

#: The task that completes the parent step of a finished nested run (hand-over sweeps).
COMPLETE_PARENT_TASK = "workflows_app.tasks.complete_parent"
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


def _unfinished_run(workflow_id: str, transaction_id: str) -> WorkflowExecution | None:
    return (
        WorkflowExecution.objects.unfinished()
        .filter(workflow_id=workflow_id, transaction_id=transaction_id)
        .only("pk")
        .first()
    )


def note_resume_failure(workflow_id: str, transaction_id: str, exc: BaseException) -> bool:
    """A worker's resume of the run failed or was interrupted: count it as a failed
    recovery (see :func:`note_recovery_failure`); ``True`` when the run was marked
    failed."""
    try:
        row = _unfinished_run(workflow_id, transaction_id)
        options = get_workflow(workflow_id).definition.options
    except (DatabaseError, WorkflowNotFound):
        return False
    return row is not None and note_recovery_failure(row.pk, options, exc)


def note_resume_success(workflow_id: str, transaction_id: str) -> None:
    """A worker's resume went through: the count of failed recoveries starts again."""
    WorkflowExecution.objects.filter(
        workflow_id=workflow_id, transaction_id=transaction_id, recovery_failures__gt=0
    ).update(recovery_failures=0, recovery_error="")


def queue_resumes(
    rows: list[WorkflowExecution], now: datetime.datetime, dead_owners: set[str]
) -> int:
    """Hand ``rows`` over to the workers without running or rebuilding them here;
    returns how many were queued.

    The runs still free to take (lease expired before ``now``, released without a
    deadline, or held by a process known to be gone) are locked and released at
    once with a deadline of a lease (and a new version, so a stalled former holder
    can write nothing more), all in one statement; a resume task is queued per
    run, in the same database transaction when the broker is transactional. A lost
    task is made up for after the deadline, and no sweep queues the run again
    before. With Redis or the immediate backend the tasks are sent after the
    commit, one by one (the immediate backend runs them here).
    """
    held = Q(lease_expires_at__lt=now) | Q(owner="", lease_expires_at__isnull=True)
    if dead_owners:
        held |= Q(owner__in=dead_owners)
    deadline = timezone.now() + datetime.timedelta(seconds=lease_seconds())
    scheduler = runtime.scheduler

    def take() -> list[tuple[str, str]]:
        free = (
            WorkflowExecution.objects.unfinished()
            .filter(pk__in=[row.pk for row in rows])
            .filter(held)
            .select_for_update(skip_locked=True)
        )
        taken = list(free.values_list("pk", "workflow_id", "transaction_id"))
        WorkflowExecution.objects.filter(pk__in=[pk for pk, *_ in taken]).update(
            owner="", lease_expires_at=deadline, version=F("version") + 1
        )
        return [(workflow_id, transaction_id) for _, workflow_id, transaction_id in taken]

    if getattr(scheduler, "transactional", False):
        try:
            with transaction.atomic():
                taken = take()
                for ids in taken:
                    scheduler.enqueue(*ids)
        except DatabaseError:
            # Nothing was taken: the next sweep tries again.
            logger.exception("Handing %s runs over to the workers failed", len(rows))
            return 0
        return len(taken)
    with transaction.atomic():
        taken = take()
    queued = 0
    for ids in taken:
        try:
            scheduler.enqueue(*ids)
            queued += 1
        except Exception:
            # The resume task counts its own failures (the immediate backend ran it
            # here); a broker that refuses it is not the run's fault.
            logger.exception("Handing %s:%s over to a worker failed", *ids)
    return queued


def recover(
    now: datetime.datetime,
    limit: int,
    hand_over: bool,
    prepare: Callable[[Transaction], None],
) -> int:
    """One recovery sweep (``workflow_engine.recover``); returns how many runs it
    continued or handed over. ``prepare(tx)`` attaches the engine's event handlers."""
    storage = runtime.storage
    executions = WorkflowExecution.objects.all()
    if hand_over:
        # The sweep reads no stored state: the resume task rebuilds the run.
        executions = executions.only("pk", "workflow_id", "transaction_id", "owner")
    rows = list(executions.lease_expired(now).order_by("lease_expires_at")[:limit])
    held = WorkflowExecution.objects.held_on_host(socket.gethostname(), now)
    dead = {
        pk: owner for pk, owner in held.values_list("pk", "owner")[:limit] if process_is_gone(owner)
    }
    if dead:
        rows += list(executions.filter(pk__in=dead))
    recovered = complete_waiting_parents(limit, now if hand_over else None)
    for pending in (executions.cancel_pending(), executions.answer_pending()):
        seen = {row.pk for row in rows}
        rows += [row for row in pending[:limit] if row.pk not in seen]
    registered = []
    for row in rows:
        try:
            workflow = get_workflow(row.workflow_id)
        except WorkflowNotFound:
            logger.warning(
                "Cannot recover %s: workflow %s is not registered", row.pk, row.workflow_id
            )
            continue
        if hand_over:
            registered.append(row)
            continue
        tx = None
        try:
            tx = storage.claim(workflow.definition, row, now, dead_owner=dead.get(row.pk))
            if tx is None:
                continue
            prepare(tx)
            tx.in_background = True
            if not apply_first(tx):
                orchestrator.execute(tx)
        except runtime.releasing() as exc:
            logger.exception("Recovering %s failed", row.pk)
            if tx is not None:
                storage.abandon(tx)
            note_recovery_failure(row.pk, workflow.definition.options, exc)
            if not isinstance(exc, Exception):
                # An interruption of this process (a task timeout): stop the sweep.
                raise
            continue
        if row.recovery_failures:
            clear_recovery_failures(row.pk)
        recovered += 1
    if registered:
        recovered += queue_resumes(registered, now, set(dead.values()))
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


def _waiting_parent_steps() -> QuerySet:
    return StepExecution.objects.filter(
        status=StepLogStatus.WAITING,
        operation=Operation.SUB_WORKFLOW,
        execution__state__in=UNFINISHED_STATES,
        execution__owner="",
    )


def complete_waiting_parents(limit: int, queue_at: datetime.datetime | None = None) -> int:
    """Complete the parent steps whose nested child ended while the parent was busy
    (the child's row is the durable record of its outcome); returns how many.

    With ``queue_at`` (a hand-over sweep) each completion is queued as a task of its
    own (:data:`COMPLETE_PARENT_TASK`) and the parent's row gets a deadline of a
    lease, so that sweeps until then do not queue it twice and a lost task is made
    up for."""
    waiting = _waiting_parent_steps()
    if queue_at is not None:
        waiting = waiting.filter(
            Q(execution__lease_expires_at__isnull=True)
            | Q(execution__lease_expires_at__lt=queue_at)
        )
    parents = {
        ":".join(parts): pk
        for pk, *parts in waiting.values_list(
            "execution_id",
            "execution__workflow_id",
            "execution__transaction_id",
            "step_id",
            "handler_type",
        )[:limit]
    }
    if not parents:
        return 0
    children = list(
        WorkflowExecution.objects.finished()
        .filter(parent_step_idempotency_key__in=parents)
        .values_list("pk", "workflow_id", "transaction_id", "parent_step_idempotency_key")
    )
    if queue_at is not None:
        return _queue_parent_completions(
            {parents[key]: (workflow_id, tx) for _, workflow_id, tx, key in children}, queue_at
        )
    completed = 0
    for pk, workflow_id, transaction_id, _key in children:
        try:
            completed += complete_parent_of(workflow_id, transaction_id)
        except Exception:
            logger.exception("Completing the parent step of nested %s failed", pk)
    return completed


def _queue_parent_completions(children: dict[str, tuple[str, str]], now: datetime.datetime) -> int:
    """Queue a :data:`COMPLETE_PARENT_TASK` per waiting parent (``children`` maps the
    parent's pk to its finished child's ids), giving the parents a deadline of a lease
    as :func:`queue_resumes` does."""
    deadline = timezone.now() + datetime.timedelta(seconds=lease_seconds())
    scheduler = runtime.scheduler
    transactional = getattr(scheduler, "transactional", False)
    with transaction.atomic():
        free = (
            WorkflowExecution.objects.filter(pk__in=children, owner="")
            .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
            .select_for_update(skip_locked=True)
        )
        taken = list(free.values_list("pk", flat=True))
        WorkflowExecution.objects.filter(pk__in=taken).update(lease_expires_at=deadline)
        if transactional:
            for pk in taken:
                scheduler.enqueue_task(COMPLETE_PARENT_TASK, *children[pk])
    if not transactional:
        for pk in taken:
            try:
                scheduler.enqueue_task(COMPLETE_PARENT_TASK, *children[pk])
            except Exception:
                logger.exception("Queueing the completion of parent %s failed", pk)
    return len(taken)


def complete_parent_of(workflow_id: str, transaction_id: str) -> bool:
    """Complete the waiting parent step of the finished nested run ``transaction_id``
    (the :data:`COMPLETE_PARENT_TASK`); ``False`` when there is nothing to do (the
    child is unfinished or gone, the parent step no longer waits)."""
    from ..sdk.nesting import complete_parent_step

    child = get_workflow(workflow_id)
    tx = runtime.storage.load(child.definition, transaction_id, include_finished=True, claim=False)
    if tx is None or not tx.has_finished():
        return False
    key = tx.metadata.get("parentStepIdempotencyKey") or ""
    parts = key.split(":")
    if len(parts) != 4:
        return False
    parent_id, parent_tx, step_id, handler_type = parts
    waits = _waiting_parent_steps().filter(
        execution__workflow_id=parent_id,
        execution__transaction_id=parent_tx,
        step_id=step_id,
        handler_type=handler_type,
    )
    if not waits.exists():
        return False
    complete_parent_step(tx)
    return True
