"""django-q2 task entry points. They take ids only (django-q2 pickles and signs task
arguments, so objects would go stale or break on a key change).

A task that django-q2's ``timeout`` interrupts (see
:func:`workflows_app.background.worker_interruptions`) ends with django-q2's own
exception, whatever frame the interruption landed in: the run it executed is
released on the way out, and recovery continues it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def _interruptions_as_raised() -> Iterator[None]:
    """django-q2 sees its own exception for an interruption it raised (after a
    timeout it replaces the worker process), not the orchestrator's wrapper."""
    from .orchestration import ExecutorInterrupted

    try:
        yield
    except ExecutorInterrupted as exc:
        raise exc.cause from exc


def resume(workflow_id: str, transaction_id: str) -> str:
    """Continue an unfinished run as a worker: async handlers run here.

    Resumes handed over by recovery run here, so a failure (an exception out of the
    rebuild or the run, or an interruption by the task timeout) counts toward the
    poison-run bound (``WORKFLOWS["MAX_RECOVERY_FAILURES"]``): a step that always
    outlives the timeout ends its run ``failed`` with an error naming the step and
    the timeout instead of being resumed forever. A resume that goes through
    resets the count.
    """
    from .engine import workflow_engine
    from .orchestration import runtime
    from .storage.recovery import note_resume_failure, note_resume_success

    with _interruptions_as_raised():
        try:
            tx = workflow_engine.resume(workflow_id, transaction_id)
        except runtime.releasing() as exc:
            note_resume_failure(workflow_id, transaction_id, exc)
            raise
    if tx is None:
        return "idle"
    if getattr(tx.storage_handle, "recovery_failures", 0):
        note_resume_success(workflow_id, transaction_id)
    return str(tx.state)


def complete_parent(workflow_id: str, transaction_id: str) -> str:
    """Complete the waiting parent step of a finished nested run (queued by a
    recovery sweep: the child ended while its parent was busy)."""
    from .storage.recovery import complete_parent_of

    return "completed" if complete_parent_of(workflow_id, transaction_id) else "nothing to do"


def run_scheduled(workflow_id: str) -> str:
    """One run of a workflow with a ``schedule`` option."""
    from .engine import workflow_engine

    with _interruptions_as_raised():
        result = workflow_engine.run_scheduled(workflow_id)
    return "skipped" if result is None else str(result.transaction.state)


def clear_expired_executions() -> int:
    """The cleanup schedule: delete executions whose retention is over, then
    django-q2's saved successes older than ``WORKFLOWS["TASK_RESULT_RETENTION_DAYS"]``.
    Returns the number of executions deleted."""
    from .background import prune_task_results
    from .conf import workflows_settings
    from .engine import workflow_engine

    deleted = workflow_engine.clear_expired_executions()
    prune_task_results(workflows_settings.TASK_RESULT_RETENTION_DAYS)
    return deleted


def recover() -> int:
    """The recovery schedule (and worker start): hand the runs whose worker died over
    to the workers, a resume task each, so this task's duration does not grow with
    the work the runs have left."""
    from .engine import workflow_engine

    return workflow_engine.recover(hand_over=True)
