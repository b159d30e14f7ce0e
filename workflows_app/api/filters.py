"""Query filters of ``GET /api/workflow-executions/``.

The FilterSet validates the query string (and documents it in the schema); the
filtering itself is the engine's ``list_workflow_executions``.
"""

from __future__ import annotations

import datetime
from typing import Any

import django_filters
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from django_filters.rest_framework import DjangoFilterBackend

from ..engine import workflow_engine
from ..models import WorkflowExecution
from ..status import TransactionState


def to_utc(value: datetime.datetime) -> datetime.datetime:
    """The instant in UTC: PostgreSQL refuses UTC offsets beyond 15:59 that ISO 8601
    (and Python) accept; past the calendar's ends, the nearest representable instant."""
    if value.tzinfo is None:
        return value
    try:
        return value.astimezone(datetime.UTC)
    except OverflowError:
        edge = datetime.datetime.max if value.year > 1 else datetime.datetime.min
        return edge.replace(tzinfo=datetime.UTC)


class WorkflowExecutionFilter(django_filters.FilterSet):
    workflow_id = django_filters.CharFilter(
        max_length=255, help_text=_("Exact workflow id (name).")
    )
    transaction_id = django_filters.CharFilter(max_length=255, help_text=_("Exact transaction id."))
    state = django_filters.MultipleChoiceFilter(
        choices=TransactionState.choices,
        help_text=_("Transaction state; repeat the parameter to match any of several."),
    )
    created_after = django_filters.IsoDateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        help_text=_("ISO 8601 date-time; executions created at or after it."),
    )
    created_before = django_filters.IsoDateTimeFilter(
        field_name="created_at",
        lookup_expr="lt",
        help_text=_("ISO 8601 date-time; executions created before it."),
    )
    waiting = django_filters.ChoiceFilter(
        choices=[("true", "true"), ("false", "false")],
        method="search",
        help_text=_(
            "true: only unfinished executions with a step waiting for a response "
            "(what needs attention); false or absent: no restriction."
        ),
    )
    q = django_filters.CharFilter(
        method="search",
        max_length=255,
        help_text=_("Substring of the id, workflow id, transaction id, run id or state."),
    )

    class Meta:
        model = WorkflowExecution
        fields: list[str] = []

    def engine_arguments(self) -> tuple[dict[str, Any], str | None]:
        """The validated query as ``list_workflow_executions`` filters and search."""
        data = self.form.cleaned_data
        filters: dict[str, Any] = {}
        for name in ("workflow_id", "transaction_id"):
            if data.get(name):
                filters[name] = data[name]
        if data.get("state"):
            filters["state"] = list(data["state"])
        created: dict[str, Any] = {}
        if data.get("created_after") is not None:
            created["gte"] = to_utc(data["created_after"])
        if data.get("created_before") is not None:
            created["lt"] = to_utc(data["created_before"])
        if created:
            filters["created_at"] = created
        if data.get("waiting") == "true":
            filters["waiting"] = True
        return filters, data.get("q") or None

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        filters, q = self.engine_arguments()
        return workflow_engine.list_workflow_executions(filters=filters, q=q).light()

    def search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Applied by :meth:`filter_queryset` through the engine (kept for the schema)."""
        return queryset


class ExecutionFilterBackend(DjangoFilterBackend):
    """django-filter's backend with the browsable API's filter form rendered from this
    app's template, so ``django_filters`` need not be in ``INSTALLED_APPS``."""

    template = "workflows_app/api/filter_form.html"
