"""Shared pieces of the admin pages: state badges, durations, JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .. import graph
from ..models import (
    WorkflowExecution,
)
from ..orchestration import WorkflowsError
from ..status import FINISHED_STATES, TransactionState

APP = WorkflowExecution._meta.app_label

#: What the engine raises for a command that does not apply (wrong state, unknown
#: step or workflow, payload too large...): shown as an admin error message.
ENGINE_ERRORS = (WorkflowsError, ValueError, LookupError, TypeError)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder, default=str)


def state_label(state: str) -> str:
    try:
        return str(TransactionState(state).label)
    except ValueError:
        return str(state).replace("_", " ").capitalize()


def state_badge(state: str) -> str:
    """A coloured badge (Medusa's colours) for a transaction state."""
    return format_html(
        '<span class="wf-badge wf-{}" data-state="{}"><span class="wf-dot"></span>{}</span>',
        graph.transaction_colour(state),
        state,
        state_label(state),
    )


def elapsed_ms(execution: WorkflowExecution) -> int | None:
    """Stored duration; for an unfinished run the time since it started."""
    if execution.duration_ms is not None:
        return execution.duration_ms
    if execution.started_at is None:
        return None
    end = execution.ended_at or timezone.now()
    return int((end - execution.started_at).total_seconds() * 1000)


def duration_text(execution: WorkflowExecution) -> str:
    ms = elapsed_ms(execution)
    if ms is None:
        return "-"
    text = graph.format_duration_ms(ms)
    if execution.duration_ms is None and execution.state not in FINISHED_STATES:
        return _("%(time)s so far") % {"time": text}
    return text


#: How a finished run ended, in words that agree with its state badge.
_ENDINGS: dict[tuple[str, str], Any] = {
    ("done", "COMPLETED"): _("Completed"),
    ("reverted", "FAILED"): _("Failed, then reverted: what its steps did was compensated"),
    ("reverted", "CANCELED"): _("Canceled, then reverted: what its steps did was compensated"),
    ("reverted", "TIMED_OUT"): _("Timed out, then reverted: what its steps did was compensated"),
    ("reverted", "COMPLETED"): _("Reverted: what its steps did was compensated"),
}


def outcome_text(execution: WorkflowExecution, waiting: bool = False) -> str:
    """The run's status in words that agree with its state (the badge beside it):
    a reverted run's status ``FAILED`` reads "Failed, then reverted", not "Failed"."""
    state, status = execution.state, execution.status
    if state == TransactionState.FAILED:
        return str(_("Failed, and a compensation failed too: it needs attention"))
    if state in FINISHED_STATES:
        return str(_ENDINGS.get((state, status), state_label(state)))
    if state in (TransactionState.COMPENSATING, TransactionState.WAITING_TO_COMPENSATE):
        return str(_("Running its compensation"))
    if waiting:
        return str(_("Running, waiting for a response"))
    return str(_("Running"))
