"""Example values for the admin's forms, and what a run's outcome means in words.

The Run form starts from the workflow's ``input_example`` option, else from the input
of its last stored run; "Mark succeeded" starts from the output the same step gave in
the last run that got past it. Each look-up is one read that walks the primary key
(a time-ordered ULID) backwards from the newest row of that workflow.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.utils.translation import gettext as _

from .. import presentation
from ..models import WorkflowExecution
from ..status import FINISHED_STATES, TransactionState


def run_input_example(workflow: Any) -> tuple[Any, str] | None:
    """``(example, where it comes from)`` for the Run form of ``workflow``, or ``None``."""
    if workflow.options.get("input_example") is not None:
        return workflow.options["input_example"], _("the workflow's input_example option")
    last = (
        WorkflowExecution.objects.newest_of(workflow.name)
        .filter(input_payload__isnull=False)
        .values_list("input_payload", flat=True)
        .first()
    )
    if last is None:
        return None
    return last, _("the input of the last stored run (sensitive values redacted)")


def step_response_example(workflow_id: str, step_id: str) -> Any:
    """The output ``step_id`` gave in the newest run that got past it, or ``None``."""
    contexts = (
        WorkflowExecution.objects.newest_of(workflow_id)
        .filter(state=TransactionState.DONE)
        .values_list("context", flat=True)[:1]
    )
    for context in contexts:
        stored = presentation.stored_step_data(context, step_id)
        if "output" in stored:
            return stored["output"]
    return None


def run_outcome(name: str, state: str) -> tuple[str, int]:
    """A message saying plainly whether a run succeeded, and its level."""
    if state == TransactionState.DONE:
        return _("%(name)s ran and succeeded.") % {"name": name}, messages.SUCCESS
    if state == TransactionState.REVERTED:
        return (
            _("%(name)s failed: its steps were compensated (the run is reverted).")
            % {"name": name},
            messages.ERROR,
        )
    if state == TransactionState.FAILED:
        return (
            _("%(name)s failed, and a compensation failed too: it needs attention.")
            % {"name": name},
            messages.ERROR,
        )
    if state not in FINISHED_STATES:
        return (
            _(
                "%(name)s started and has not finished yet (it waits for a response or runs in "
                "the background)."
            )
            % {"name": name},
            messages.WARNING,
        )
    return _("%(name)s ended %(state)s.") % {"name": name, "state": state}, messages.INFO
