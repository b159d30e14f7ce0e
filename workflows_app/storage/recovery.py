"""Poison runs: a run whose recovery keeps failing with the same error ends failed.

Each failed recovery is counted on the run's row with its error; the same error
``WORKFLOWS["MAX_RECOVERY_FAILURES"]`` times in a row marks the run ``failed`` with
that error (it stays visible; no compensation can run for a run that cannot be
resumed). A lost database connection is not the run's fault and is not counted.
"""

from __future__ import annotations

import datetime
import logging
import traceback

from django.db import DatabaseError, InterfaceError, OperationalError
from django.db.models import F
from django.utils import timezone

from ..conf import workflows_settings
from ..models import WorkflowExecution
from ..status import ExecutionStatus, TransactionState
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
