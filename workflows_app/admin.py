"""The admin: a read-only browser of workflow executions and workflow definitions.

Section "Settings" (the AppConfig's ``verbose_name``, ``WORKFLOWS["ADMIN_SECTION_LABEL"]``)
with two entries:

* **Workflows** (:class:`WorkflowExecutionAdmin`): the list of stored executions and a
  detail page with the step graph, a Gantt chart of the attempts, the payload, the
  history of every step and the raw JSON; plus commands (cancel, retry a waiting step,
  mark a waiting step succeeded or failed, retry compensation, run again).
* **Workflow definitions** (:class:`WorkflowDefinitionAdmin`, on a proxy model): the
  registered workflows with their options, hooks and graph, and a form to run one.

Every command goes through :data:`workflows_app.engine.workflow_engine`; the admin never
drives the orchestrator or writes the models itself.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.models import Max, Min, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from . import graph
from .engine import workflow_engine
from .models import (
    EXECUTION_ID_PREFIX,
    StepExecution,
    WorkflowDefinitionEntry,
    WorkflowExecution,
)
from .orchestration import WorkflowsError
from .status import FINISHED_STATES, TransactionState

APP = WorkflowExecution._meta.app_label
PERM_CANCEL = f"{APP}.cancel_workflowexecution"
PERM_RETRY = f"{APP}.retry_workflowexecution"
PERM_COMPLETE_STEP = f"{APP}.complete_step_workflowexecution"
PERM_RUN = f"{APP}.run_workflow"

#: What the engine raises for a command that does not apply (wrong state, unknown
#: step or workflow, payload too large...): shown as an admin error message.
ENGINE_ERRORS = (WorkflowsError, ValueError, LookupError, TypeError)

#: Columns the list page needs; the JSON columns stay in the database.
LIST_COLUMNS = (
    "id",
    "workflow_id",
    "transaction_id",
    "run_id",
    "state",
    "status",
    "started_at",
    "ended_at",
    "duration_ms",
    "created_at",
)


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


# The list page: no full-table COUNT(*), progress computed in the database.


class EstimatedCountPaginator(Paginator):
    """A paginator that never counts a whole large table.

    Django's ``ChangeList`` always reads ``paginator.count``. Here:

    * unfiltered, on PostgreSQL: the planner's row estimate (``pg_class.reltuples``,
      kept fresh by autovacuum/ANALYZE) when it is at least :attr:`estimate_from`;
    * otherwise: ``SELECT COUNT(*) FROM (... LIMIT cap + 1)``, so at most
      :attr:`cap` + 1 index entries are read; beyond that the list shows "more than".
    """

    cap = 10_000
    estimate_from = 10_000
    count_is_estimate = False
    count_is_capped = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        if not queryset.query.where:
            estimate = self._estimate(queryset)
            if estimate is not None and estimate >= self.estimate_from:
                self.count_is_estimate = True
                return estimate
        found = queryset.order_by().values("pk")[: self.cap + 1].count()
        if found > self.cap:
            self.count_is_capped = True
            return self.cap
        return found

    @staticmethod
    def _estimate(queryset: QuerySet) -> int | None:
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [connection.ops.quote_name(queryset.model._meta.db_table)],
            )
            row = cursor.fetchone()
        # -1 (PostgreSQL 14+) or 0: never analysed; count for real.
        return int(row[0]) if row and row[0] and row[0] > 0 else None


def progress_annotations(queryset: QuerySet) -> dict[str, Any]:
    """``progress_done``/``progress_total`` computed by the database from the flow JSON.

    Only the two numbers leave the database instead of the whole ``execution`` column.
    Returns ``{}`` on other databases (the column is then read and counted in Python).
    """
    connection = connections[queryset.db]
    qn = connection.ops.quote_name
    column = f"{qn(queryset.model._meta.db_table)}.{qn('execution')}"
    if connection.vendor == "postgresql":
        steps = (
            f"jsonb_each(CASE WHEN jsonb_typeof({column} -> 'steps') = 'object' "
            f"THEN {column} -> 'steps' ELSE '{{}}'::jsonb END) AS s"
        )
        done = "s.value #>> '{invoke,state}' = 'done'"
    elif connection.vendor == "sqlite":
        steps = f"json_each({column}, '$.steps') AS s"
        done = "json_extract(s.value, '$.invoke.state') = 'done'"
    else:
        return {}
    return {
        "progress_total": RawSQL(f"(SELECT COUNT(*) FROM {steps} WHERE s.key <> '_root')", []),
        "progress_done": RawSQL(
            f"(SELECT COUNT(*) FROM {steps} WHERE s.key <> '_root' AND {done})", []
        ),
    }


class ExecutionQuerySet(QuerySet):
    """Executions whose date-hierarchy buckets come from index probes, not a table scan.

    The admin's date hierarchy calls ``queryset.datetimes("created_at", kind)``, which is
    ``SELECT DISTINCT date_trunc(...)`` over every matching row (~120 ms at 100,000 rows
    on PostgreSQL, growing linearly). Here the candidate years, months or days between
    the first and last ``created_at`` (two index look-ups) are each checked with an
    ``EXISTS`` on the ``(created_at, id)`` index: at most 31 tiny queries.
    """

    bucket_field = "created_at"
    max_buckets = 400

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None):
        if field_name != self.bucket_field or kind not in ("year", "month", "day"):
            return super().datetimes(field_name, kind, order, tzinfo)
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        tz = tzinfo or timezone.get_current_timezone()
        first = timezone.localtime(bounds["first"], tz)
        last = timezone.localtime(bounds["last"], tz)
        buckets = list(_buckets(first, last, kind, tz))
        if len(buckets) > self.max_buckets:
            return super().datetimes(field_name, kind, order, tzinfo)
        found = [
            start
            for start, end in buckets
            if self.filter(**{f"{field_name}__gte": start, f"{field_name}__lt": end}).exists()
        ]
        return found[::-1] if order == "DESC" else found


def _buckets(first: datetime, last: datetime, kind: str, tz) -> Iterator[tuple[datetime, datetime]]:
    """``(start, end)`` of every year, month or day from ``first`` to ``last``."""

    def following(moment: datetime) -> datetime:
        if kind == "year":
            return datetime(moment.year + 1, 1, 1, tzinfo=tz)
        if kind == "month":
            year, month = divmod(moment.month, 12)
            return datetime(moment.year + year, month + 1, 1, tzinfo=tz)
        day = moment.date() + timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=tz)

    if kind == "year":
        start = datetime(first.year, 1, 1, tzinfo=tz)
    elif kind == "month":
        start = datetime(first.year, first.month, 1, tzinfo=tz)
    else:
        start = datetime(first.year, first.month, first.day, tzinfo=tz)
    while start <= last:
        end = following(start)
        yield start, end
        start = end


class ExecutionChangeList(ChangeList):
    """The list's queryset reads only the listed columns plus the two progress numbers."""

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        annotations = progress_annotations(queryset)
        columns = LIST_COLUMNS if annotations else (*LIST_COLUMNS, "execution")
        return queryset.only(*columns).annotate(**annotations)


class WorkflowFilter(admin.SimpleListFilter):
    """Filter on the workflow; the choices are the registered workflows (no DB query)."""

    title = _("workflow")
    parameter_name = "workflow_id"

    def lookups(self, request, model_admin):
        names = [w.name for w in workflow_engine.list_definitions()]
        current = self.value()
        if current and current not in names:
            names.append(current)
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(workflow_id=value) if value else queryset


# Forms


class JSONInputField(forms.JSONField):
    """A JSON textarea that starts empty rather than showing ``null``."""

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)


class CompleteStepForm(forms.Form):
    """Mark a step that waits for a response as succeeded or failed."""

    step_id = forms.CharField(widget=forms.HiddenInput)
    action = forms.ChoiceField(
        choices=[("invoke", "invoke"), ("compensate", "compensate")],
        initial="invoke",
        widget=forms.HiddenInput,
    )
    response = JSONInputField(
        label=_("Response (JSON)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "class": "wf-json-input"}),
        help_text=_(
            "Succeeded: the step's output. Failed: the error, e.g. "
            '{"message": "Payment declined"}.'
        ),
    )
    force_permanent_failure = forms.BooleanField(
        label=_("Fail permanently (skip remaining retries)"), required=False
    )
    outcome = forms.ChoiceField(
        choices=[("success", _("Mark succeeded")), ("failure", _("Mark failed"))],
        widget=forms.HiddenInput,
    )


class RunWorkflowForm(forms.Form):
    """Run a registered workflow with a JSON input."""

    workflow = forms.CharField(widget=forms.HiddenInput)
    input = JSONInputField(
        label=_("Input (JSON)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "class": "wf-json-input"}),
    )
    transaction_id = forms.CharField(
        label=_("Transaction ID (optional)"), required=False, max_length=255
    )


def run_form(name: str, data: Any = None) -> RunWorkflowForm:
    """The Run form of one workflow (ids unique on the page of all workflows)."""
    return RunWorkflowForm(
        data,
        initial={"workflow": name},
        auto_id=graph.html_id("id-run", name) + "-%s",
    )


# Workflows (executions)


@admin.register(WorkflowExecution)
class WorkflowExecutionAdmin(admin.ModelAdmin):
    list_display = (
        "transaction_id",
        "workflow_id",
        "state_display",
        "progress_display",
        "duration_display",
        "created_display",
    )
    list_display_links = ("transaction_id",)
    list_filter = ("state", WorkflowFilter)
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

    class Media:
        css = {"all": ("workflows_app/admin.css",)}

    # Read-only the Django way: view permission only.

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # List

    def get_changelist(self, request, **kwargs):
        return ExecutionChangeList

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return ExecutionQuerySet(
            model=queryset.model, query=queryset.query, using=queryset._db, hints=queryset._hints
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        ids = {term}
        if not term.startswith(EXECUTION_ID_PREFIX):
            ids.add(EXECUTION_ID_PREFIX + term)
        condition = Q(pk__in=ids) | Q(transaction_id=term) | Q(workflow_id=term)
        return queryset.filter(condition), False

    @admin.display(description=_("State"), ordering="state")
    def state_display(self, obj: WorkflowExecution) -> str:
        return state_badge(obj.state)

    @admin.display(description=_("Progress"))
    def progress_display(self, obj: WorkflowExecution) -> str:
        if hasattr(obj, "progress_total"):
            done, total = obj.progress_done or 0, obj.progress_total or 0
        else:
            done, total = graph.progress(obj.execution)
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
        context_data = obj.context if isinstance(obj.context, dict) else {}
        data = context_data.get("data") if isinstance(context_data.get("data"), dict) else {}
        invoke_data = data.get("invoke") if isinstance(data.get("invoke"), dict) else {}
        errors_by_action: dict[str, list[dict]] = defaultdict(list)
        for error in context_data.get("errors") or []:
            if isinstance(error, dict):
                errors_by_action[str(error.get("action"))].append(error)

        attempts = list(StepExecution.objects.filter(execution=obj).order_by("started_at", "id"))
        attempts_by_path: dict[str, list[StepExecution]] = defaultdict(list)
        for attempt in attempts:
            attempts_by_path[attempt.step_path].append(attempt)

        can = self.command_permissions(request)
        steps = []
        waiting_steps = []
        flow = graph.flow_steps(execution)
        for step_path, step in flow:
            action = (step.get("definition") or {}).get("action") or step_path.rsplit(".", 1)[-1]
            state = graph.display_state(step)
            invoke = step.get("invoke") or {}
            compensate = step.get("compensate") or {}
            step_attempts = attempts_by_path.get(step_path, [])
            invoke_attempts = [
                a for a in step_attempts if a.handler_type == "invoke" and not a.iteration
            ]
            stored = invoke_data.get(action) if isinstance(invoke_data.get(action), dict) else {}
            waiting_action = None
            if invoke.get("status") == "waiting_response":
                waiting_action = "invoke"
            elif compensate.get("status") == "waiting_response":
                waiting_action = "compensate"
            entry = {
                "id": step_path,
                "action": action,
                "anchor": graph.step_anchor(action),
                "state": state,
                "state_label": graph.STEP_STATE_LABELS.get(state, state),
                "colour": graph.step_colour(state),
                "invoke": invoke,
                "compensate": compensate,
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
                    }
                    for a in step_attempts
                ],
                "definition": pretty_json(step.get("definition")),
                "input": pretty_json(invoke_attempts[-1].input) if invoke_attempts else None,
                "output": pretty_json(stored.get("output")) if "output" in stored else None,
                "compensate_input": (
                    pretty_json(stored.get("compensateInput"))
                    if stored.get("compensateInput") is not None
                    else None
                ),
                "errors": [
                    {
                        "handler_type": e.get("handlerType"),
                        "message": (e.get("error") or {}).get("message"),
                        "name": (e.get("error") or {}).get("name"),
                        "stack": (e.get("error") or {}).get("stack"),
                    }
                    for e in errors_by_action.get(action, [])
                ],
                "waiting_action": waiting_action,
                "open": state in ("failed", "timeout", "waiting")
                or bool(errors_by_action.get(action)),
            }
            if waiting_action:
                entry["complete_form"] = CompleteStepForm(
                    initial={"step_id": action, "action": waiting_action},
                    auto_id=graph.html_id("id-complete", action) + "-%s",
                )
                waiting_steps.append(entry)
            steps.append(entry)

        done, total = graph.progress(execution)
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
            "duration": duration_text(obj),
            "progress_done": done,
            "progress_total": total,
            "progress_pills": [
                {"action": s["action"], "done": s["invoke"].get("state") == "done"} for s in steps
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
            "top_error": obj.error if isinstance(obj.error, dict) else None,
            "error_stack": obj.error_stack,
            "history": steps,
            "waiting_steps": waiting_steps,
            "raw_json": pretty_json(raw),
            "commands": commands,
            "workflow_registered": registered,
            "attempt_count": len(attempts),
            "url_names": self.url_names(),
        }

    @staticmethod
    def short_id(obj: WorkflowExecution) -> str:
        return obj.pk.removeprefix(EXECUTION_ID_PREFIX)

    # Commands

    def command_permissions(self, request: HttpRequest) -> dict[str, bool]:
        user = request.user
        return {
            "cancel": user.has_perm(PERM_CANCEL),
            "retry": user.has_perm(PERM_RETRY),
            "complete_step": user.has_perm(PERM_COMPLETE_STEP),
            "run": user.has_perm(PERM_RUN),
        }

    def url_names(self) -> dict[str, str]:
        base = f"{self.opts.app_label}_{self.opts.model_name}"
        return {
            name: f"{self.admin_site.name}:{base}_{name}"
            for name in ("cancel", "retry_step", "complete_step", "retry_compensation", "rerun")
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
            *super().get_urls(),
        ]

    def change_url(self, pk: str) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[pk],
            current_app=self.admin_site.name,
        )

    def command_object(self, request: HttpRequest, object_id: str, perm: str) -> WorkflowExecution:
        """The execution a command applies to, after the permission checks."""
        request.current_app = self.admin_site.name
        if not request.user.has_perm(perm):
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
        state = result.acknowledgement["state"] if result.acknowledgement else ""
        self.log_change(request, obj, f"{success} (state: {state})")
        self.message_user(
            request,
            _("%(what)s: the transaction is now %(state)s.")
            % {"what": success, "state": state_label(state)},
            messages.SUCCESS,
        )
        return result

    @staticmethod
    def result_summary(result: Any) -> str:
        text = json.dumps(result.result, cls=DjangoJSONEncoder, default=str)
        return text if len(text) <= 300 else text[:297] + "..."

    @staticmethod
    def stored_execution(result: Any) -> WorkflowExecution | None:
        ack = result.acknowledgement or {}
        return (
            WorkflowExecution.objects.filter(
                workflow_id=ack.get("workflow_id"),
                transaction_id=ack.get("transaction_id"),
                run_id=ack.get("run_id"),
            )
            .only("id")
            .first()
        )

    @method_decorator(require_POST)
    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.command_object(request, object_id, PERM_CANCEL)
        self.run_command(
            request,
            obj,
            lambda: workflow_engine.cancel(obj.workflow_id, obj.transaction_id),
            str(_("Cancel")),
        )
        return HttpResponseRedirect(self.change_url(obj.pk))

    @method_decorator(require_POST)
    def retry_step_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.command_object(request, object_id, PERM_RETRY)
        step_id = request.POST.get("step_id", "")
        action = request.POST.get("action", "invoke")
        self.run_command(
            request,
            obj,
            lambda: workflow_engine.retry_step(
                workflow_id=obj.workflow_id,
                transaction_id=obj.transaction_id,
                step_id=step_id,
                action=action,
            ),
            _("Retry of step %(step)s") % {"step": step_id},
        )
        return HttpResponseRedirect(self.change_url(obj.pk))

    def complete_step_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.command_object(request, object_id, PERM_COMPLETE_STEP)
        if request.method == "POST":
            form = CompleteStepForm(request.POST)
            if form.is_valid():
                step_id = form.cleaned_data["step_id"]
                action = form.cleaned_data["action"]
                response = form.cleaned_data["response"]
                if form.cleaned_data["outcome"] == "success":
                    label = _("Step %(step)s marked succeeded") % {"step": step_id}

                    def command() -> Any:
                        return workflow_engine.set_step_success(
                            workflow_id=obj.workflow_id,
                            transaction_id=obj.transaction_id,
                            step_id=step_id,
                            action=action,
                            response=response,
                        )
                else:
                    label = _("Step %(step)s marked failed") % {"step": step_id}

                    def command() -> Any:
                        return workflow_engine.set_step_failure(
                            workflow_id=obj.workflow_id,
                            transaction_id=obj.transaction_id,
                            step_id=step_id,
                            action=action,
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
                }
            )
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

    @method_decorator(require_POST)
    def retry_compensation_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.command_object(request, object_id, PERM_RETRY)
        self.run_command(
            request,
            obj,
            lambda: workflow_engine.retry_compensation(obj.workflow_id, obj.transaction_id),
            str(_("Retry of the compensation")),
        )
        return HttpResponseRedirect(self.change_url(obj.pk))

    @method_decorator(require_POST)
    def rerun_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.command_object(request, object_id, PERM_RUN)
        result = self.run_command(
            request, obj, lambda: workflow_engine.rerun(obj.pk), str(_("Run again"))
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
        return HttpResponseRedirect(self.change_url(obj.pk))


# Workflow definitions


@admin.register(WorkflowDefinitionEntry)
class WorkflowDefinitionAdmin(admin.ModelAdmin):
    """The registry of workflows (not a database table): a catalogue and a Run form."""

    definitions_template = "admin/workflows_app/workflowdefinitionentry/definitions.html"
    actions = None

    class Media:
        css = {"all": ("workflows_app/admin.css",)}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        user = request.user
        return (
            user.has_perm(f"{APP}.view_workflowdefinitionentry")
            or user.has_perm(f"{APP}.view_workflowexecution")
            or user.has_perm(PERM_RUN)
        )

    def get_urls(self):
        base = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("", self.admin_site.admin_view(self.changelist_view), name=f"{base}_changelist"),
            path("run/", self.admin_site.admin_view(self.run_view), name=f"{base}_run"),
        ]

    def changelist_view(self, request, extra_context=None):
        return self.render_definitions(request, {})

    def render_definitions(
        self, request: HttpRequest, forms_by_name: dict[str, RunWorkflowForm], status: int = 200
    ) -> HttpResponse:
        request.current_app = self.admin_site.name
        if not self.has_view_permission(request):
            raise PermissionDenied
        executions_url = reverse(
            f"admin:{APP}_workflowexecution_changelist", current_app=self.admin_site.name
        )
        definitions = []
        for workflow in workflow_engine.list_definitions():
            description = workflow_engine.describe(workflow)
            nodes = graph.nodes_from_description(description["steps"])
            definitions.append(
                {
                    "name": workflow.name,
                    "anchor": graph.html_id("workflow", workflow.name),
                    "options": description["options"],
                    "options_json": pretty_json(description["options"]),
                    "stored": bool(description["options"].get("store")),
                    "hooks": description["hooks"],
                    "steps": [
                        {**s, "definition_json": pretty_json(s["definition"])}
                        for s in description["steps"]
                    ],
                    "definition_hash": description["definition_hash"],
                    "graph_svg": mark_safe(  # graph.py escapes its texts
                        graph.step_graph_svg(nodes, title=workflow.name)
                    ),
                    "form": forms_by_name.get(workflow.name) or run_form(workflow.name),
                    "executions_url": f"{executions_url}?workflow_id={workflow.name}",
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Workflow definitions"),
            "definitions": definitions,
            "can_run": request.user.has_perm(PERM_RUN),
            "run_url": reverse(
                f"admin:{APP}_workflowdefinitionentry_run", current_app=self.admin_site.name
            ),
            "media": self.media,
            "has_view_permission": True,
        }
        return TemplateResponse(request, self.definitions_template, context, status=status)

    def run_view(self, request: HttpRequest) -> HttpResponse:
        request.current_app = self.admin_site.name
        changelist = reverse(
            f"admin:{APP}_workflowdefinitionentry_changelist", current_app=self.admin_site.name
        )
        if request.method != "POST":
            return HttpResponseRedirect(changelist)
        if not request.user.has_perm(PERM_RUN):
            raise PermissionDenied
        name = request.POST.get("workflow", "")
        form = run_form(name, request.POST)
        if not form.is_valid():
            return self.render_definitions(request, {name: form})
        name = form.cleaned_data["workflow"]
        try:
            result = workflow_engine.run(
                name,
                input=form.cleaned_data["input"],
                transaction_id=form.cleaned_data["transaction_id"] or None,
                throw_on_error=False,
            )
        except ENGINE_ERRORS as exc:
            self.message_user(
                request,
                _("Running %(name)s failed: %(error)s") % {"name": name, "error": exc},
                messages.ERROR,
            )
            return HttpResponseRedirect(changelist)
        state = (result.acknowledgement or {}).get("state", "")
        execution = WorkflowExecutionAdmin.stored_execution(result)
        if execution is not None:
            self.log_change(request, execution, f"Ran workflow {name} from the admin")
            self.message_user(
                request,
                _("Started %(name)s: the transaction is %(state)s.")
                % {"name": name, "state": state_label(state)},
                messages.SUCCESS,
            )
            return HttpResponseRedirect(
                reverse(
                    f"admin:{APP}_workflowexecution_change",
                    args=[execution.pk],
                    current_app=self.admin_site.name,
                )
            )
        level = messages.ERROR if result.thrown_error is not None else messages.SUCCESS
        summary = WorkflowExecutionAdmin.result_summary(result)
        if result.thrown_error is not None:
            summary = str(result.thrown_error)
        self.message_user(
            request,
            format_html(
                "{} <code>{}</code>",
                _("Ran %(name)s (not stored): %(state)s.")
                % {"name": name, "state": state_label(state)},
                summary,
            ),
            level,
        )
        return HttpResponseRedirect(f"{changelist}#{graph.html_id('workflow', name)}")


__all__ = [
    "CompleteStepForm",
    "EstimatedCountPaginator",
    "RunWorkflowForm",
    "WorkflowDefinitionAdmin",
    "WorkflowExecutionAdmin",
]
