"""django-q2 task entry points. They take ids only (django-q2 pickles and signs task
arguments, so objects would go stale or break on a key change)."""

from __future__ import annotations

import logging

logger = logging.getLogger("workflows_app")


def resume(workflow_id: str, transaction_id: str) -> str:
    """Continue an unfinished run as a worker: async handlers run here."""
    from .engine import workflow_engine

    tx = workflow_engine.resume(workflow_id, transaction_id)
    return "idle" if tx is None else str(tx.state)


def run_scheduled(workflow_id: str) -> str:
    """One run of a workflow with a ``schedule`` option."""
    from .engine import workflow_engine

    result = workflow_engine.run_scheduled(workflow_id)
    return "skipped" if result is None else str(result.transaction.state)


def clear_expired_executions() -> int:
    """The cleanup schedule: delete executions whose retention is over."""
    from .engine import workflow_engine

    return workflow_engine.clear_expired_executions()


def recover() -> int:
    """The recovery schedule (and worker start): resume runs whose worker died."""
    from .engine import workflow_engine

    return workflow_engine.recover()
