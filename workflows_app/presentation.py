"""Reading a stored run for display: the one place that knows the flow's JSON shape.

The admin's pages, the API's event stream and ``manage.py workflows show`` all show a
stored execution. They read its ``execution`` column (the flow: one entry per step
with its ``invoke`` and ``compensate`` handler states), its ``context`` column (the
steps' stored outputs and the errors) and its error dictionaries through the
functions here, so a change of the stored shape is met in one module. Nothing here
imports Django.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Id of the flow's synthetic root entry, which is not a step.
ROOT_ID = "_root"

#: Handler status of a step that waits for a response from outside the run.
WAITING_RESPONSE = "waiting_response"

#: Step display state -> label shown next to it.
STEP_STATE_LABELS: dict[str, str] = {
    "done": "Done",
    "invoking": "Invoking",
    "compensating": "Compensating",
    "waiting": "Waiting for response",
    "failed": "Failed",
    "reverted": "Reverted",
    "timeout": "Timeout",
    "dormant": "Dormant",
    "skipped": "Skipped",
    "skipped_failure": "Skipped (Failure)",
    "not_started": "Not started",
}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def flow_steps(execution: Mapping[str, Any] | None) -> list[tuple[str, dict]]:
    """The non-root steps of a flow (the ``execution`` column), in their stored order."""
    steps = _mapping(_mapping(execution).get("steps"))
    return [(sid, s) for sid, s in steps.items() if sid != ROOT_ID and isinstance(s, Mapping)]


def step_id_of(path: str, step: Mapping[str, Any]) -> str:
    """The step id (the definition's ``stepId``) of the flow entry at ``path``."""
    definition = _mapping(step.get("definition"))
    return str(definition.get("stepId") or path.rsplit(".", 1)[-1])


def has_compensation(step: Mapping[str, Any]) -> bool:
    """Whether a step of a flow has a compensation handler (``noCompensation`` unset)."""
    return not _mapping(step.get("definition")).get("noCompensation")


def display_state(step: Mapping[str, Any]) -> str:
    """The one state shown for a step of a flow.

    A failed or timed-out invoke wins (it is what went wrong); otherwise a step whose
    compensation started shows the compensation's state, unless the step has no
    compensation (nothing was undone, so it is not "Reverted"); a step waiting for an
    async response shows ``waiting``; else the invoke state.
    """
    invoke = _mapping(step.get("invoke"))
    compensate = _mapping(step.get("compensate"))
    invoke_state = str(invoke.get("state") or "not_started")
    comp_state = str(compensate.get("state") or "dormant")
    if invoke_state in ("failed", "timeout"):
        return invoke_state
    if comp_state not in ("dormant", "not_started") and has_compensation(step):
        if comp_state == "compensating" and compensate.get("status") == WAITING_RESPONSE:
            return "waiting"
        return comp_state
    if invoke_state == "invoking" and invoke.get("status") == WAITING_RESPONSE:
        return "waiting"
    return invoke_state


def state_label(state: str) -> str:
    """The label of a step display state."""
    return STEP_STATE_LABELS.get(state, state.replace("_", " ").capitalize())


def waiting_handler(step: Mapping[str, Any]) -> str | None:
    """``"invoke"`` or ``"compensate"`` when that handler waits for a response."""
    if _mapping(step.get("invoke")).get("status") == WAITING_RESPONSE:
        return "invoke"
    if _mapping(step.get("compensate")).get("status") == WAITING_RESPONSE:
        return "compensate"
    return None


def progress(execution: Mapping[str, Any] | None) -> tuple[int, int]:
    """``(completed, total)``: non-root steps, and those whose invoke state is ``done``."""
    steps = flow_steps(execution)
    done = sum(1 for _sid, s in steps if _mapping(s.get("invoke")).get("state") == "done")
    return done, len(steps)


def context_errors(context: Mapping[str, Any] | None) -> list[dict]:
    """The step errors recorded in a ``context`` column."""
    errors = _mapping(context).get("errors")
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def error_message(error: Any) -> str:
    """One line for an error dictionary (``message``, else ``name``) or any value."""
    if isinstance(error, Mapping):
        return str(error.get("message") or error.get("name") or "")
    return "" if error is None else str(error)


@dataclass
class StepErrorView:
    """One error a step handler recorded."""

    handler_type: str | None
    message: str | None
    name: str | None
    stack: str | None


@dataclass
class StepView:
    """One step of a stored flow as the pages show it."""

    path: str
    step_id: str
    state: str
    invoke: Mapping[str, Any]
    compensate: Mapping[str, Any]
    definition: Any
    waiting_handler: str | None
    #: The step's stored data in the context (``output``, ``compensateInput``).
    stored: Mapping[str, Any]
    errors: list[StepErrorView] = field(default_factory=list)

    @property
    def state_label(self) -> str:
        return state_label(self.state)

    @property
    def done(self) -> bool:
        return self.invoke.get("state") == "done"


def stored_step_data(context: Mapping[str, Any] | None, step_id: str) -> Mapping[str, Any]:
    """What the context column keeps of one step (``output``, ``compensateInput``)."""
    return _mapping(_mapping(_mapping(_mapping(context).get("data")).get("invoke")).get(step_id))


def step_views(
    execution: Mapping[str, Any] | None, context: Mapping[str, Any] | None
) -> list[StepView]:
    """Every step of a stored run with its state, stored data and errors."""
    data = _mapping(_mapping(context).get("data"))
    invoke_data = _mapping(data.get("invoke"))
    errors: dict[str, list[StepErrorView]] = defaultdict(list)
    for error in context_errors(context):
        detail = _mapping(error.get("error"))
        errors[str(error.get("stepId"))].append(
            StepErrorView(
                handler_type=error.get("handlerType"),
                message=detail.get("message"),
                name=detail.get("name"),
                stack=detail.get("stack"),
            )
        )
    views = []
    for path, step in flow_steps(execution):
        step_id = step_id_of(path, step)
        views.append(
            StepView(
                path=path,
                step_id=step_id,
                state=display_state(step),
                invoke=_mapping(step.get("invoke")),
                compensate=_mapping(step.get("compensate")),
                definition=step.get("definition"),
                waiting_handler=waiting_handler(step),
                stored=_mapping(invoke_data.get(step_id)),
                errors=errors.get(step_id, []),
            )
        )
    return views
