"""Confirmation pages of the destructive commands (Django's delete-confirmation style).

A GET on a command's URL shows what the command will do to this run, read from its
stored flow: which steps will be compensated and in which order, which waiting step
is failed, what runs again. Only the POST of the page's form does it. Nothing here
writes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _

from .. import presentation
from ..models import WorkflowExecution

CONFIRM_TEMPLATE = "admin/workflows_app/workflowexecution/confirm_command.html"


@dataclass
class Plan:
    """What a command will do, in words and step lists, for its confirmation page."""

    command: str
    #: The command's name, as on the detail page's link.
    label: str
    question: str
    consequences: list[str] = field(default_factory=list)
    #: Steps compensated, one list per stage (a stage's steps run together), in order.
    stages: list[list[str]] = field(default_factory=list)
    #: Steps that ran but have no compensation: nothing of theirs is undone.
    nothing_to_undo: list[str] = field(default_factory=list)
    button: str = ""


def _steps(obj: WorkflowExecution) -> list[tuple[dict, presentation.StepView]]:
    flow = dict(presentation.flow_steps(obj.execution))
    return [(flow[v.path], v) for v in presentation.step_views(obj.execution, obj.context)]


def _ran(step: Mapping[str, Any]) -> bool:
    """Whether the orchestrator compensates this step when the run is reverted: its
    invoke is done or timed out, or failed permanently (it may have done something)."""
    invoke = step.get("invoke") or {}
    return invoke.get("state") in ("done", "timeout") or invoke.get("status") == (
        "permanent_failure"
    )


def stages(
    obj: WorkflowExecution, pick: Callable[[Mapping[str, Any], presentation.StepView], bool]
) -> tuple[list[list[str]], list[str]]:
    """The picked steps that have a compensation, deepest first (a step is compensated
    after every step that ran after it), grouped by depth; and the picked steps that
    have none."""
    by_depth: dict[int, list[str]] = {}
    nothing = []
    for step, view in _steps(obj):
        if not pick(step, view):
            continue
        if not presentation.has_compensation(step):
            nothing.append(view.step_id)
            continue
        depth = int(step.get("depth") or view.path.count("."))
        by_depth.setdefault(depth, []).append(view.step_id)
    return [by_depth[d] for d in sorted(by_depth, reverse=True)], nothing


def _compensated_on_revert(step: Mapping[str, Any], view: presentation.StepView) -> bool:
    return _ran(step) and view.compensate.get("state") in (None, "dormant", "not_started")


def cancel_plan(obj: WorkflowExecution) -> Plan:
    order, nothing = stages(obj, _compensated_on_revert)
    waiting = [v.step_id for _s, v in _steps(obj) if v.waiting_handler]
    plan = Plan(
        command="cancel",
        label=_("Cancel"),
        question=_("Are you sure you want to cancel %(workflow)s run %(tx)s?")
        % {"workflow": obj.workflow_id, "tx": obj.transaction_id},
        stages=order,
        nothing_to_undo=nothing,
        button=_("Yes, cancel and compensate"),
    )
    if waiting:
        plan.consequences.append(
            _("The steps waiting for a response fail at once: %(steps)s.")
            % {"steps": ", ".join(waiting)}
        )
    if order:
        plan.consequences.append(
            _("What the run did is undone: the compensations below run in this order.")
        )
    else:
        plan.consequences.append(_("No step has anything to compensate."))
    plan.consequences.append(_("The run ends Reverted (or Failed if a compensation fails)."))
    return plan


def retry_compensation_plan(obj: WorkflowExecution) -> Plan:
    order, _nothing = stages(obj, lambda step, view: view.compensate.get("state") == "failed")
    return Plan(
        command="retry_compensation",
        label=_("Retry compensation"),
        question=_("Are you sure you want to retry the failed compensations of %(tx)s?")
        % {"tx": obj.transaction_id},
        consequences=[
            _("The compensations that failed run again; the others are not repeated."),
            _("The run ends Reverted if they succeed, Failed again otherwise."),
        ],
        stages=[[step for stage in order for step in stage]] if order else [],
        button=_("Yes, retry the compensation"),
    )


def rerun_plan(obj: WorkflowExecution) -> Plan:
    steps = [v.step_id for _s, v in _steps(obj)]
    return Plan(
        command="rerun",
        label=_("Run again"),
        question=_("Are you sure you want to run %(workflow)s again with the same input?")
        % {"workflow": obj.workflow_id},
        consequences=[
            _("A new transaction starts; this run stays as it is."),
            _("Every step runs again, with whatever it does outside (%(steps)s).")
            % {"steps": ", ".join(steps) or "-"},
        ],
        button=_("Yes, run it again"),
    )


def mark_failed_plan(obj: WorkflowExecution, step_id: str) -> Plan:
    order, nothing = stages(obj, _compensated_on_revert)
    return Plan(
        command="mark_failed",
        label=_("Mark failed"),
        question=_("Are you sure you want to mark step %(step)s of %(tx)s failed?")
        % {"step": step_id, "tx": obj.transaction_id},
        consequences=[
            _(
                "The step fails with the error you give below. If it has retries left "
                "and you do not fail it permanently, it is tried again."
            ),
            _(
                "Otherwise the run is reverted: the compensations below run in this "
                "order, and it ends Reverted (or Failed if a compensation fails)."
            ),
        ],
        stages=order,
        nothing_to_undo=nothing,
        button=_("Yes, mark it failed"),
    )


def render(
    model_admin: Any,
    request: HttpRequest,
    obj: WorkflowExecution,
    plan: Plan,
    action_url: str,
    form: Any = None,
) -> TemplateResponse:
    """The confirmation page: the plan, a form that POSTs to ``action_url``, a way back."""
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "original": obj,
        "short_id": model_admin.short_id(obj),
        "title": _("Are you sure?"),
        "plan": plan,
        "action_url": action_url,
        "form": form,
        "media": model_admin.media,
    }
    return TemplateResponse(request, CONFIRM_TEMPLATE, context)
