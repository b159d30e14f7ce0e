"""The **Workflows** entry: stored executions, their detail page and commands."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import BadRequest, PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods, require_POST

from .. import graph, presentation, redaction
from ..engine import workflow_engine
from ..models import (
    EXECUTION_ID_PREFIX,
    StepExecution,
    WorkflowExecution,
)
from ..orchestration import WorkflowsError
from ..permissions import Command, has_command_permission
from ..status import HandlerType, TransactionState
from ..step_address import StepAddress
from . import confirm, dashboard, examples, worker_tasks
from .base import ReadOnlyAdmin
from .changelist import (
    EstimatedCountPaginator,
    ExecutionChangeList,
    WaitingFilter,
    WorkflowFilter,
)
from .display import (
    ENGINE_ERRORS,
    duration_text,
    outcome_text,
    pretty_json,
    state_badge,
    state_label,
)
from .forms import CompleteStepForm
from .live import live_view


@admin.register(WorkflowExecution)
class WorkflowExecutionAdmin(ReadOnlyAdmin):
    list_display = (
        "transaction_id",
        "workflow_id",
        "state_display",
        "progress_display",
        "duration_display",
        "created_display",
    )
    list_display_links = ("transaction_id",)
    list_filter = (WaitingFilter, "state", WorkflowFilter)
    # Exact matches only: every column here has a b-tree index, and PostgreSQL cannot use
    # one for icontains/istartswith (UPPER(...) LIKE); the primary key's LIKE index is
    # dropped by the initial migration. See get_search_results().
    search_fields = ("id__exact", "transaction_id__exact", "workflow_id__exact")
    search_help_text = _(
        "Exact execution id (with or without wf_exec_), transaction id or workflow id."
    )
    date_hierarchy = "created_at"
    list_per_page = 20
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ("-created_at", "-id")
    actions = None
    fields = ("id", "workflow_id", "transaction_id", "state")

    change_form_template = "admin/workflows_app/workflowexecution/change_form.html"
    complete_step_template = "admin/workflows_app/workflowexecution/complete_step.html"

    # List

    def changelist_view(self, request, extra_context=None):
        # No database stores NUL in text; PostgreSQL would fail the query with a 500.
        if "%00" in request.GET.urlencode():  # a NUL in any key or value
            raise BadRequest(_("The query string contains a NUL character."))
        since, rows = dashboard.summary()
        context = {"dashboard_since": since, "dashboard_rows": rows, **(extra_context or {})}
        return super().changelist_view(request, context)

    def get_changelist(self, request, **kwargs):
        return ExecutionChangeList

    def get_search_results(self, request, queryset, search_term):
        return queryset.matching(search_term, EXECUTION_ID_PREFIX), False

    @admin.display(description=_("State"), ordering="state")
    def state_display(self, obj: WorkflowExecution) -> str:
        return state_badge(obj.state)

    @admin.display(description=_("Progress"))
    def progress_display(self, obj: WorkflowExecution) -> str:
        if hasattr(obj, "progress_total"):
            done, total = obj.progress_done or 0, obj.progress_total or 0
        else:
            done, total = presentation.progress(obj.execution)
        return _("%(done)s of %(total)s steps") % {"done": done, "total": total}

    @admin.display(description=_("Duration"), ordering="duration_ms")
    def duration_display(self, obj: WorkflowExecution) -> str:
        return duration_text(obj)

    @admin.display(description=_("Created"), ordering="created_at")
    def created_display(self, obj: WorkflowExecution) -> str:
        created = timezone.localtime(obj.created_at)
        return format_html(
            '<time datetime="{}">{}<br><span class="wf-quiet">{}</span></time>',
            created.isoformat(),
            created.strftime("%Y-%m-%d"),
            created.strftime("%H:%M:%S"),
        )

    # Detail

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(self.detail_context(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def detail_context(self, request: HttpRequest, obj: WorkflowExecution) -> dict[str, Any]:
        """Everything the detail page shows, computed from the row and its step rows."""
        execution = obj.execution if isinstance(obj.execution, dict) else {}
        attempts = list(obj.step_executions.in_log_order())
        attempts_by_path: dict[str, list[StepExecution]] = defaultdict(list)
        for attempt in attempts:
            attempts_by_path[attempt.step_path].append(attempt)

        task_links = worker_tasks.task_urls((a.task_id for a in attempts), self.admin_site.name)
        can = self.command_permissions(request)
        steps = []
        waiting_steps = []
        for view in presentation.step_views(execution, obj.context):
            step_id = view.step_id
            state = view.state
            waiting_action = view.waiting_handler
            step_attempts = attempts_by_path.get(view.path, [])
            invoke_attempts = [
                a for a in step_attempts if a.handler_type == "invoke" and not a.iteration
            ]
            stored = view.stored
            entry = {
                "id": view.path,
                "step_id": step_id,
                "anchor": graph.step_anchor(step_id),
                "state": state,
                "state_label": view.state_label,
                "colour": graph.step_colour(state),
                "invoke": view.invoke,
                "compensate": view.compensate,
                "attempts": [
                    {
                        "handler_type": a.handler_type,
                        "attempt": a.attempt,
                        "iteration": a.iteration,
                        "total_items": a.total_items,
                        "status": a.get_status_display(),
                        "status_value": a.status,
                        "started_at": a.started_at,
                        "duration": graph.format_duration_ms(a.duration_ms),
                        "task_id": a.task_id,
                        "task_url": task_links.get(a.task_id),
                        "worker": a.worker,
                    }
                    for a in step_attempts
                ],
                "definition": pretty_json(view.definition),
                "input": pretty_json(invoke_attempts[-1].input) if invoke_attempts else None,
                "output": pretty_json(stored.get("output")) if "output" in stored else None,
                "compensate_input": (
                    pretty_json(stored.get("compensateInput"))
                    if stored.get("compensateInput") is not None
                    else None
                ),
                "errors": [vars(error) for error in view.errors],
                "waiting_action": waiting_action,
                "open": state in ("failed", "timeout", "waiting") or bool(view.errors),
            }
            if waiting_action:
                example = (
                    examples.step_response_example(obj.workflow_id, step_id)
                    if waiting_action == "invoke"
                    else None
                )
                entry["complete_form"] = CompleteStepForm(
                    initial={"step_id": step_id, "action": waiting_action, "response": example},
                    auto_id=graph.html_id("id-complete", step_id) + "-%s",
                )
                waiting_steps.append(entry)
            steps.append(entry)

        done, total = presentation.progress(execution)
        now = timezone.now()
        bars = [
            graph.Bar(
                label=(
                    f"{a.step_name or a.step_id} [{a.iteration}/{a.total_items or '?'}]"
                    if a.iteration  # one item of a for_each loop
                    else a.step_name or a.step_id
                ),
                handler_type=a.handler_type,
                attempt=a.attempt,
                status=a.status,
                start=a.started_at,
                end=a.ended_at,
                href="#" + graph.step_anchor(a.step_id),
            )
            for a in attempts
            if a.started_at is not None
        ]
        raw = {field.attname: getattr(obj, field.attname) for field in obj._meta.concrete_fields}
        registered = True
        try:
            workflow_engine.get_workflow(obj.workflow_id)
        except WorkflowsError:
            registered = False
        commands = {
            "cancel": can["cancel"] and obj.state in ("not_started", "invoking", "done"),
            "retry_compensation": can["retry"] and obj.state == TransactionState.FAILED,
            "rerun": can["run"] and registered,
            "retry_step": can["retry"],
            "complete_step": can["complete_step"],
        }
        return {
            "title": _("Workflow execution %(id)s") % {"id": self.short_id(obj)},
            "short_id": self.short_id(obj),
            "state_badge": state_badge(obj.state),
            "outcome": outcome_text(obj, waiting=bool(waiting_steps)),
            "duration": duration_text(obj),
            "progress_done": done,
            "progress_total": total,
            "progress_pills": [
                {"step_id": s["step_id"], "done": s["invoke"].get("state") == "done"} for s in steps
            ],
            "graph_svg": mark_safe(  # graph.py escapes every text it inserts
                graph.step_graph_svg(graph.nodes_from_flow(execution), title=obj.workflow_id)
            ),
            "gantt_svg": mark_safe(graph.gantt_svg(bars, now=now, title=obj.workflow_id)),
            "payload_json": pretty_json(obj.input_payload)
            if obj.input_payload is not None
            else None,
            "output_json": pretty_json(obj.output_payload)
            if obj.output_payload is not None
            else None,
            "top_error": obj.top_error() if obj.error else None,
            "error_stack": obj.error_stack,
            "history": steps,
            "waiting_steps": waiting_steps,
            "raw_json": pretty_json(raw),
            "commands": commands,
            "workflow_registered": registered,
            "attempt_count": len(attempts),
            "url_names": self.url_names(),
            "live_url": None
            if obj.is_finished
            else reverse(self.url_names()["live"], args=[obj.pk], current_app=self.admin_site.name),
        }

    @staticmethod
    def short_id(obj: WorkflowExecution) -> str:
        return obj.pk.removeprefix(EXECUTION_ID_PREFIX)

    # Commands

    def command_permissions(self, request: HttpRequest) -> dict[str, bool]:
        return {
            str(command): has_command_permission(request.user, command, on_execution=True)
            for command in (Command.CANCEL, Command.RETRY, Command.COMPLETE_STEP, Command.RUN)
        }

    def url_names(self) -> dict[str, str]:
        base = f"{self.opts.app_label}_{self.opts.model_name}"
        return {
            name: f"{self.admin_site.name}:{base}_{name}"
            for name in (
                "cancel",
                "retry_step",
                "complete_step",
                "retry_compensation",
                "rerun",
                "live",
            )
        }

    def get_urls(self):
        base = f"{self.opts.app_label}_{self.opts.model_name}"

        def wrap(view: Callable) -> Callable:
            return self.admin_site.admin_view(view)

        return [
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name=f"{base}_cancel"),
            path(
                "<path:object_id>/retry-step/",
                wrap(self.retry_step_view),
                name=f"{base}_retry_step",
            ),
            path(
                "<path:object_id>/complete-step/",
                wrap(self.complete_step_view),
                name=f"{base}_complete_step",
            ),
            path(
                "<path:object_id>/retry-compensation/",
                wrap(self.retry_compensation_view),
                name=f"{base}_retry_compensation",
            ),
            path("<path:object_id>/rerun/", wrap(self.rerun_view), name=f"{base}_rerun"),
            path(
                "<path:object_id>/live/",
                wrap(lambda request, object_id: live_view(self, request, object_id)),
                name=f"{base}_live",
            ),
            *super().get_urls(),
        ]

    def change_url(self, pk: str) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[pk],
            current_app=self.admin_site.name,
        )

    def command_object(
        self, request: HttpRequest, object_id: str, command: Command
    ) -> WorkflowExecution:
        """The execution a command applies to, after the permission checks."""
        request.current_app = self.admin_site.name
        if not has_command_permission(request.user, command, on_execution=True):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(_("No workflow execution with that id."))
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        return obj

    def run_command(
        self,
        request: HttpRequest,
        obj: WorkflowExecution,
        command: Callable[[], Any],
        success: str,
    ) -> Any:
        """Call the engine; log and report success, or report the engine's refusal."""
        try:
            result = command()
        except ENGINE_ERRORS as exc:
            self.message_user(
                request,
                _("%(what)s failed: %(error)s") % {"what": success, "error": exc},
                messages.ERROR,
            )
            return None
        ack = result.acknowledgement or {}
        state = ack.get("state", "")
        if ack.get("cancel_requested"):
            logged = f"{success} requested (state: {state})"
            message = _(
                "%(what)s requested: another worker is executing the transaction; it "
                "starts no further step and compensates."
            )
        elif ack.get("answer_recorded"):
            logged = f"{success}: answer recorded (state: {state})"
            message = _(
                "%(what)s: answer recorded. Another worker is executing the "
                "transaction; the answer applies when the run is free."
            )
        else:
            self.log_change(request, obj, f"{success} (state: {state})")
            self.message_user(
                request,
                _("%(what)s: the transaction is now %(state)s.")
                % {"what": success, "state": state_label(state)},
                messages.SUCCESS,
            )
            return result
        # Another worker holds the run: the command is noted, not yet applied.
        self.log_change(request, obj, logged)
        self.message_user(request, message % {"what": success}, messages.WARNING)
        return result

    @staticmethod
    def result_summary(result: Any) -> str:
        """The run's result (or the error it threw) as the run shows it: masked."""
        redact = redaction.for_result(result)
        if result.thrown_error is not None:
            return redact.text(str(result.thrown_error))
        text = json.dumps(redact(result.result), cls=DjangoJSONEncoder, default=str)
        return text if len(text) <= 300 else text[:297] + "..."

    @staticmethod
    def stored_execution(result: Any) -> WorkflowExecution | None:
        return WorkflowExecution.objects.of_run(result.acknowledgement or {}).only("id").first()

    def confirmed_command(
        self,
        request: HttpRequest,
        object_id: str,
        command: Command,
        plan: Callable[[WorkflowExecution], confirm.Plan],
        call: Callable[[WorkflowExecution], Any],
        label: str,
    ) -> tuple[WorkflowExecution, Any, HttpResponse]:
        """A command behind a confirmation page: GET shows ``plan``, POST runs ``call``.
        Returns the execution, the engine's result (``None`` unless run) and the
        response (the page, or a redirect to the execution)."""
        obj = self.command_object(request, object_id, command)
        if request.method != "POST":
            return obj, None, confirm.render(self, request, obj, plan(obj), request.path)
        result = self.run_command(request, obj, lambda: call(obj), label)
        return obj, result, HttpResponseRedirect(self.change_url(obj.pk))

    @method_decorator(require_http_methods(["GET", "HEAD", "POST"]))
    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self.confirmed_command(
            request,
            object_id,
            Command.CANCEL,
            confirm.cancel_plan,
            lambda obj: workflow_engine.cancel(obj.workflow_id, obj.transaction_id),
            str(_("Cancel")),
        )[2]

    @method_decorator(require_POST)
    def retry_step_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.command_object(request, object_id, Command.RETRY)
        step_id = request.POST.get("step_id", "")
        self.run_command(
            request,
            obj,
            lambda: workflow_engine.retry_step(
                StepAddress(
                    obj.workflow_id,
                    obj.transaction_id,
                    step_id,
                    request.POST.get("action", HandlerType.INVOKE),
                )
            ),
            _("Retry of step %(step)s") % {"step": step_id},
        )
        return HttpResponseRedirect(self.change_url(obj.pk))

    def complete_step_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.command_object(request, object_id, Command.COMPLETE_STEP)
        if request.method == "POST":
            form = CompleteStepForm(request.POST)
            if form.is_valid():
                step_id = form.cleaned_data["step_id"]
                address = StepAddress(
                    obj.workflow_id, obj.transaction_id, step_id, form.cleaned_data["action"]
                )
                response = form.cleaned_data["response"]
                if form.cleaned_data["outcome"] == "success":
                    label = _("Step %(step)s marked succeeded") % {"step": step_id}

                    def command() -> Any:
                        return workflow_engine.set_step_success(address, response=response)
                else:
                    label = _("Step %(step)s marked failed") % {"step": step_id}

                    def command() -> Any:
                        return workflow_engine.set_step_failure(
                            address,
                            error=response,
                            force_permanent_failure=form.cleaned_data["force_permanent_failure"],
                        )

                self.run_command(request, obj, command, str(label))
                return HttpResponseRedirect(self.change_url(obj.pk))
        else:
            form = CompleteStepForm(
                initial={
                    "step_id": request.GET.get("step", ""),
                    "action": request.GET.get("action", "invoke"),
                    "outcome": request.GET.get("outcome", ""),
                }
            )
        if form["outcome"].value() == "failure":
            plan = confirm.mark_failed_plan(obj, form["step_id"].value())
            return confirm.render(self, request, obj, plan, request.path, form=form)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": obj,
            "short_id": self.short_id(obj),
            "title": _("Complete a waiting step"),
            "form": form,
            "step_id": form["step_id"].value(),
            "url_names": self.url_names(),
            "media": self.media,
        }
        return TemplateResponse(request, self.complete_step_template, context)

    @method_decorator(require_http_methods(["GET", "HEAD", "POST"]))
    def retry_compensation_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self.confirmed_command(
            request,
            object_id,
            Command.RETRY,
            confirm.retry_compensation_plan,
            lambda obj: workflow_engine.retry_compensation(obj.workflow_id, obj.transaction_id),
            str(_("Retry of the compensation")),
        )[2]

    @method_decorator(require_http_methods(["GET", "HEAD", "POST"]))
    def rerun_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        _obj, result, response = self.confirmed_command(
            request,
            object_id,
            Command.RUN,
            confirm.rerun_plan,
            lambda obj: workflow_engine.rerun(obj.pk),
            str(_("Run again")),
        )
        if result is not None:
            new = self.stored_execution(result)
            if new is not None:
                return HttpResponseRedirect(self.change_url(new.pk))
            self.message_user(
                request,
                _("The new run is not stored. Result: %(result)s")
                % {"result": self.result_summary(result)},
                messages.INFO,
            )
        return response
