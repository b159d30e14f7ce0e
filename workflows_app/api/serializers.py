"""Request and response serializers of the API.

Request serializers validate what reaches the engine: ids without ``:`` and JSON
values accepted by :mod:`workflows_app.jsoninput` (the rule the admin forms use too).
Response serializers describe the bodies for the OpenAPI schema and render stored rows.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from .. import jsoninput
from ..conf import workflows_settings
from ..models import WorkflowExecution
from ..orchestration import codec
from ..redaction import Redactor
from ..status import HandlerType


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data, converted as the codec stores it (anything it
    cannot store becomes its ``repr``)."""
    return codec.to_json_lenient(value)


def redacted(value: Any) -> Any:
    """``value`` with the keys of ``WORKFLOWS["REDACT_KEYS"]`` masked, as JSON data."""
    return Redactor(workflows_settings.REDACT_KEYS)(jsonable(value))


def _check_text(text: str, where: str) -> None:
    try:
        jsoninput.check_text(text, where)
    except jsoninput.JSONInputError as exc:
        raise serializers.ValidationError(str(exc), code=exc.code) from None


def check_storable(value: Any, where: str = "The value") -> None:
    """Refuse JSON values that :mod:`workflows_app.jsoninput` does not accept."""
    try:
        jsoninput.check(value, where)
    except jsoninput.JSONInputError as exc:
        raise serializers.ValidationError(str(exc), code=exc.code) from None


class StorableJSONField(serializers.JSONField):
    """Any JSON value that the engine can store."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        check_storable(value, str(self.label or self.field_name))
        return value


class IdentifierField(serializers.CharField):
    """A non-empty id of at most 255 characters without ``:``, NUL or lone surrogates."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 255)
        kwargs.setdefault(
            "validators",
            [
                RegexValidator(
                    r"^[^:]+$",
                    _(
                        "Ids may not contain ':', which separates the parts of step "
                        "idempotency keys."
                    ),
                    code="colon",
                )
            ],
        )
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        _check_text(value, str(self.label or self.field_name))
        return value


# Responses


class AcknowledgementSerializer(serializers.Serializer):
    """Where a run is: its ids and whether it finished or failed."""

    transaction_id = serializers.CharField()
    workflow_id = serializers.CharField()
    run_id = serializers.CharField()
    parent_step_idempotency_key = serializers.CharField(allow_null=True, required=False)
    has_finished = serializers.BooleanField()
    has_failed = serializers.BooleanField()
    state = serializers.CharField(help_text=_("Transaction state after the call."))
    answer_recorded = serializers.BooleanField(
        required=False,
        help_text=_(
            "Present (true) when another worker holds the run: the step's answer is "
            "recorded and applied when the run is free."
        ),
    )


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    name = serializers.CharField(required=False)
    stack = serializers.CharField(required=False, allow_blank=True)


class StepErrorSerializer(serializers.Serializer):
    """One error recorded by a step handler."""

    stepId = serializers.CharField(help_text=_("Id of the step."))
    handlerType = serializers.CharField(help_text=_("invoke or compensate."))
    error = ErrorDetailSerializer()


class StepLogEntrySerializer(serializers.Serializer):
    """One attempt of a step handler (execution-log schema, camelCase keys)."""

    id = serializers.IntegerField()
    stepId = serializers.CharField()
    stepPath = serializers.CharField()
    stepName = serializers.CharField(allow_blank=True)
    handlerType = serializers.CharField()
    operation = serializers.CharField()
    status = serializers.CharField(
        help_text=_("RUNNING, COMPLETED, FAILED, TIMED_OUT, CANCELED, SKIPPED or WAITING.")
    )
    attempt = serializers.IntegerField()
    input = serializers.JSONField(allow_null=True)
    output = serializers.JSONField(allow_null=True)
    compensateInput = serializers.JSONField(allow_null=True)
    error = serializers.JSONField(allow_null=True)
    startedAt = serializers.DateTimeField(allow_null=True)
    endedAt = serializers.DateTimeField(allow_null=True)
    durationMs = serializers.IntegerField(allow_null=True)
    iteration = serializers.IntegerField(allow_null=True)
    totalItems = serializers.IntegerField(allow_null=True)

    def to_representation(self, instance: Any) -> Any:
        # The engine already gives the entry as JSON data.
        return instance


class WorkflowExecutionListSerializer(serializers.ModelSerializer):
    """A stored execution without its large JSON columns."""

    class Meta:
        model = WorkflowExecution
        fields = (
            "id",
            "workflow_id",
            "transaction_id",
            "run_id",
            "state",
            "status",
            "parent_step_idempotency_key",
            "retention_time",
            "started_at",
            "ended_at",
            "duration_ms",
            "created_at",
            "updated_at",
            "deleted_at",
        )
        read_only_fields = fields


class WorkflowExecutionDetailSerializer(WorkflowExecutionListSerializer):
    """A stored execution with its flow, context, payloads and step log."""

    steps_log = StepLogEntrySerializer(many=True, read_only=True)

    class Meta(WorkflowExecutionListSerializer.Meta):
        fields = (
            *WorkflowExecutionListSerializer.Meta.fields,
            "input_payload",
            "output_payload",
            "error",
            "error_stack",
            "definition_hash",
            "owner",
            "lease_expires_at",
            "version",
            "execution",
            "context",
            "steps_log",
        )
        read_only_fields = fields


class WorkflowStepDefinitionSerializer(serializers.Serializer):
    id = serializers.CharField(help_text=_("Path of the step in the flow."))
    step_id = serializers.CharField(help_text=_("Id of the step, as in step calls."))
    depth = serializers.IntegerField()
    operation = serializers.CharField()
    definition = serializers.DictField()
    next = serializers.ListField(child=serializers.CharField())
    depends_on = serializers.ListField(child=serializers.CharField())


class WorkflowDefinitionSerializer(serializers.Serializer):
    """A registered workflow: options, steps, hooks and the step graph."""

    name = serializers.CharField()
    options = serializers.DictField()
    steps = WorkflowStepDefinitionSerializer(many=True)
    hooks = serializers.ListField(child=serializers.CharField())
    definition = serializers.DictField(help_text=_("The step graph (nested next links)."))
    definition_hash = serializers.CharField()


class RunFinishedSerializer(serializers.Serializer):
    """A run that finished: its result, errors and, when stored, the execution row."""

    acknowledgement = AcknowledgementSerializer()
    result = serializers.JSONField(allow_null=True)
    errors = StepErrorSerializer(many=True)
    execution = WorkflowExecutionDetailSerializer(
        allow_null=True,
        help_text=_("The stored execution; null when the workflow is not stored or not kept."),
    )


class RunAcceptedSerializer(serializers.Serializer):
    """A run that continues (e.g. waiting for an async step)."""

    acknowledgement = AcknowledgementSerializer()
    execution_id = serializers.CharField(
        allow_null=True, help_text=_("Id of the stored execution, to follow it.")
    )


class ActionResultSerializer(serializers.Serializer):
    """Outcome of a command on a transaction (step response, cancel, retry)."""

    success = serializers.BooleanField()
    acknowledgement = AcknowledgementSerializer()
    execution = WorkflowExecutionDetailSerializer(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    """Every error response."""

    type = serializers.CharField(
        help_text=_("invalid_data, not_found, conflict, unauthorized, not_allowed, ...")
    )
    message = serializers.CharField()
    code = serializers.CharField(required=False, help_text=_("Precise cause."))
    details = serializers.DictField(required=False, help_text=_("Field errors of a 400."))


# Requests


class RunSerializer(serializers.Serializer):
    input = StorableJSONField(required=False, allow_null=True, default=None)
    transaction_id = IdentifierField(
        required=False,
        help_text=_("Resume or re-run this transaction; generated when absent."),
    )


class StepSuccessSerializer(serializers.Serializer):
    transaction_id = IdentifierField()
    step_id = serializers.CharField(max_length=255, help_text=_("Action name of the step."))
    response = StorableJSONField(required=False, allow_null=True, default=None)
    compensate_input = StorableJSONField(required=False, allow_null=True, default=None)
    action = serializers.ChoiceField(choices=HandlerType.choices, default=HandlerType.INVOKE)

    def validate_step_id(self, value: str) -> str:
        _check_text(value, "step_id")
        return value


class StepFailureSerializer(StepSuccessSerializer):
    error = StorableJSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text=_("The error to record; `response` is used when absent (as in Medusa)."),
    )
    force_permanent_failure = serializers.BooleanField(
        default=False, help_text=_("Fail without the step's retries.")
    )


class RetrySerializer(serializers.Serializer):
    step_id = serializers.CharField(
        required=False,
        max_length=255,
        help_text=_(
            "Re-invoke this step, which must be waiting for a response. Without it, the "
            "failed compensations of a failed execution are run again."
        ),
    )
    action = serializers.ChoiceField(choices=HandlerType.choices, default=HandlerType.INVOKE)

    def validate_step_id(self, value: str) -> str:
        _check_text(value, "step_id")
        return value
