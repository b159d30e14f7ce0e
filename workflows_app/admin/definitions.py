"""The **Workflow definitions** entry: the registry of workflows and a Run form."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _

from .. import graph
from ..engine import workflow_engine
from ..models import (
    WorkflowDefinitionEntry,
)
from ..permissions import Command, has_command_permission
from . import examples
from .base import ReadOnlyAdmin
from .display import APP, ENGINE_ERRORS, pretty_json, state_label
from .executions import WorkflowExecutionAdmin
from .forms import RunWorkflowForm, run_form


@admin.register(WorkflowDefinitionEntry)
class WorkflowDefinitionAdmin(ReadOnlyAdmin):
    """The registry of workflows (not a database table): a catalogue and a Run form."""

    definitions_template = "admin/workflows_app/workflowdefinitionentry/definitions.html"
    actions = None

    view_command = Command.VIEW_DEFINITIONS

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
                    "form": forms_by_name.get(workflow.name)
                    or run_form(workflow.name, example=examples.run_input_example(workflow)),
                    "executions_url": f"{executions_url}?workflow_id={workflow.name}",
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Workflow definitions"),
            "definitions": definitions,
            "can_run": has_command_permission(request.user, Command.RUN),
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
        if not has_command_permission(request.user, Command.RUN):
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
            self.message_user(request, *examples.run_outcome(name, state))
            return HttpResponseRedirect(
                reverse(
                    f"admin:{APP}_workflowexecution_change",
                    args=[execution.pk],
                    current_app=self.admin_site.name,
                )
            )
        level = messages.ERROR if result.thrown_error is not None else messages.SUCCESS
        summary = WorkflowExecutionAdmin.result_summary(result)
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
