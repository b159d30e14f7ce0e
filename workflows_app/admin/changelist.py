"""The executions list: no full-table ``COUNT(*)``, progress computed in the database."""

from __future__ import annotations

from functools import cached_property

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from ..engine import workflow_engine
from ..managers import WorkflowExecutionQuerySet
from ..models import WorkflowExecution

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


class EstimatedCountPaginator(Paginator):
    """A paginator that never counts a whole large table: Django's ``ChangeList``
    always reads ``paginator.count``, which is here the queryset's
    :meth:`~workflows_app.managers.WorkflowExecutionQuerySet.list_count` (the
    planner's estimate, or a count capped at :attr:`cap`; the list then says
    "about" or "more than")."""

    cap = 10_000
    estimate_from = 10_000
    count_is_estimate = False
    count_is_capped = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, WorkflowExecutionQuerySet):
            return super().count
        counted = queryset.list_count(self.cap, self.estimate_from)
        self.count_is_estimate = counted.estimated
        self.count_is_capped = counted.capped
        return counted.count


class ExecutionChangeList(ChangeList):
    """The list's queryset reads only the listed columns plus the two progress numbers.

    Its title is the entry's name ("Workflows"), not "Select workflow execution to view".
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = capfirst(self.opts.verbose_name_plural)

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters).with_progress()
        counted = "progress_total" in queryset.query.annotations
        return queryset.only(*(LIST_COLUMNS if counted else (*LIST_COLUMNS, "execution")))


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


class WaitingFilter(admin.SimpleListFilter):
    """Runs that wait for a response: what needs a person. The same rows as the API's
    ``?waiting=true`` and ``workflows executions --waiting``
    (``WorkflowExecution.objects.waiting()``); the choice shows how many there are."""

    title = _("needs attention")
    parameter_name = "waiting"
    #: Beyond this many the count shows "999+" (the count reads at most cap + 1 rows).
    count_cap = 999

    def lookups(self, request, model_admin):
        found = WorkflowExecution.objects.waiting().count_up_to(self.count_cap)
        count = f"{self.count_cap}+" if found > self.count_cap else str(found)
        return [("true", _("Waiting for a response (%(count)s)") % {"count": count})]

    def queryset(self, request, queryset):
        if self.value() == "true":
            return queryset.waiting()
        return queryset
