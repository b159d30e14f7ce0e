"""Cancel requests: a cancel that arrives while another process executes the run.

The request is recorded on the run's row (``cancel_requested_at``); the executor
looks at most once every :data:`CANCEL_POLL_SECONDS` at a step boundary, and a run
released with a pending request is taken over by the next recovery sweep. Either
way the run stops starting steps and compensates (Medusa's cancel in flight).
"""

from __future__ import annotations

import time

from django.utils import timezone

from ..models import WorkflowExecution
from ..orchestration import Transaction
from .leases import Handle

#: How often, at most, an executing run reads whether a cancel was requested.
CANCEL_POLL_SECONDS = 1.0


def request_cancel(workflow_id: str, transaction_id: str) -> bool:
    """Record a cancel of the unfinished run; ``False`` when there is none."""
    runs = WorkflowExecution.objects.unfinished().filter(
        workflow_id=workflow_id, transaction_id=transaction_id
    )
    if runs.filter(cancel_requested_at__isnull=True).update(cancel_requested_at=timezone.now()):
        return True
    return runs.exists()


def cancel_requested(tx: Transaction) -> bool:
    """Whether a cancel was requested for the run ``tx`` this process executes."""
    handle = tx.storage_handle
    if not isinstance(handle, Handle):
        return False
    if handle.cancel_requested:
        return True
    now = time.monotonic()
    if now - handle.cancel_checked < CANCEL_POLL_SECONDS:
        return False
    handle.cancel_checked = now
    handle.cancel_requested = WorkflowExecution.objects.filter(
        pk=handle.pk, cancel_requested_at__isnull=False
    ).exists()
    return handle.cancel_requested
