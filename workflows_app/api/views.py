"""Views of the API. Every operation goes through ``workflow_engine``.

Authentication, permissions, parsers, renderers, pagination, filtering and the
exception handler are pinned here, so the host's ``REST_FRAMEWORK`` defaults do not
change how the API behaves.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.http import StreamingHttpResponse
from django.utils.translation import gettext as _
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response

from .. import jsoninput, redaction
from ..engine import ExecutionNotFound, workflow_engine
from ..models import WorkflowExecution
from ..permissions import Command
from ..sdk import RunResult
from ..step_address import StepAddress, UnknownStepError
from .browsable import StaffBrowsableNegotiation
from .events import EventStreamRenderer, ExecutionEventStream
from .exceptions import api_exception_handler
from .filters import ExecutionFilterBackend, WorkflowExecutionFilter
from .pagination import ExecutionCursorPagination
from .permissions import api_permissions
from .serializers import (
    ActionResultSerializer,
    ErrorSerializer,
    RetrySerializer,
    RunAcceptedSerializer,
    RunFinishedSerializer,
    RunSerializer,
    StepFailureSerializer,
    StepSuccessSerializer,
    WorkflowDefinitionSerializer,
    WorkflowExecutionDetailSerializer,
    WorkflowExecutionListSerializer,
    jsonable,
)

ERROR = OpenApiResponse(ErrorSerializer, description="Error")
AUTH_ERRORS = {401: ERROR, 403: ERROR}
TAG_DEFINITIONS = "workflows"
TAG_EXECUTIONS = "workflow executions"


# An answer to a waiting step: applied (200) or recorded for a busy run (202).
STEP_ANSWER_RESPONSES = {
    200: ActionResultSerializer,
    202: ActionResultSerializer,
    400: ERROR,
    404: ERROR,
    409: ERROR,
    **AUTH_ERRORS,
}


class SafeJSONParser(JSONParser):
    """JSON parser applying :mod:`workflows_app.jsoninput`: too deep, NaN, NUL or too
    large documents are a 400 before anything recurses over them."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read() if stream is not None else b""
        try:
            return jsoninput.loads(raw.decode(encoding) if encoding else raw, "The request body")
        except UnicodeDecodeError as exc:
            raise ParseError(_("JSON parse error - %s") % exc) from None
        except jsoninput.JSONInputError as exc:
            raise ParseError(_("JSON parse error - %s") % exc) from None


class WorkflowsAPIMixin:
    """Settings every view of the app pins."""

    authentication_classes = (
        [TokenAuthentication, SessionAuthentication]
        if apps.is_installed("rest_framework.authtoken")
        else [SessionAuthentication]
    )
    parser_classes = [SafeJSONParser]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]
    content_negotiation_class = StaffBrowsableNegotiation
    # drf-spectacular's, whatever the host's REST_FRAMEWORK says.
    schema = AutoSchema()
    pagination_class = None
    filter_backends: list[Any] = []

    def get_permissions(self):
        # Read on every request so that WORKFLOWS changes (override_settings) apply.
        return api_permissions()

    def get_exception_handler(self):
        return api_exception_handler


def validated(serializer_class: type, data: Any) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def stored_execution(acknowledgement: dict) -> WorkflowExecution | None:
    """The stored row of the run an acknowledgement describes, with its step log."""
    return (
        workflow_engine.list_workflow_executions(
            filters={
                "workflow_id": acknowledgement["workflow_id"],
                "transaction_id": acknowledgement["transaction_id"],
                "run_id": acknowledgement["run_id"],
            }
        )
        .prefetch_related("step_executions")
        .first()
    )


def run_response(res: RunResult) -> Response:
    """201 with the outcome of a finished run, 202 with an acknowledgement otherwise."""
    ack = jsonable(res.acknowledgement)
    if not ack["has_finished"]:
        execution_id = (
            workflow_engine.list_workflow_executions(
                filters={
                    "workflow_id": ack["workflow_id"],
                    "transaction_id": ack["transaction_id"],
                    "run_id": ack["run_id"],
                }
            )
            .values_list("id", flat=True)
            .first()
        )
        body = RunAcceptedSerializer({"acknowledgement": ack, "execution_id": execution_id}).data
        return Response(body, status=status.HTTP_202_ACCEPTED)
    redact = redaction.for_result(res)
    body = RunFinishedSerializer(
        {
            "acknowledgement": ack,
            "result": redact(jsonable(res.result)),
            "errors": redact(jsonable([error.to_dict() for error in res.errors])),
            "execution": stored_execution(ack),
        }
    ).data
    return Response(body, status=status.HTTP_201_CREATED)


def action_response(res: RunResult) -> Response:
    ack = jsonable(res.acknowledgement)
    body = ActionResultSerializer(
        {"success": True, "acknowledgement": ack, "execution": stored_execution(ack)}
    ).data
    return Response(body, status=status.HTTP_200_OK)


def step_command(command: Any, address: StepAddress, **arguments: Any) -> Response:
    """Run an engine step command; a step the workflow lacks is a field error. An
    answer recorded for a run another worker holds is a 202, as a requested cancel."""
    try:
        res = command(address, **arguments)
    except UnknownStepError as exc:
        raise ValidationError({"step_id": [str(exc)]}) from None
    response = action_response(res)
    if res.acknowledgement.get("answer_recorded"):
        response.status_code = status.HTTP_202_ACCEPTED
    return response


# Definitions


@extend_schema_view(
    list=extend_schema(
        tags=[TAG_DEFINITIONS],
        summary="List workflow definitions",
        responses={200: WorkflowDefinitionSerializer(many=True), **AUTH_ERRORS},
    ),
    retrieve=extend_schema(
        tags=[TAG_DEFINITIONS],
        summary="Describe one workflow definition",
        responses={200: WorkflowDefinitionSerializer, 404: ERROR, **AUTH_ERRORS},
    ),
)
class WorkflowViewSet(WorkflowsAPIMixin, viewsets.ViewSet):
    """Registered workflow definitions, and running them."""

    lookup_field = "workflow_id"
    lookup_value_regex = "[^/]+"
    serializer_class = WorkflowDefinitionSerializer
    read_command = Command.VIEW_DEFINITIONS
    command_for_action = {
        "run": (Command.RUN, False),
        "step_success": (Command.COMPLETE_STEP, True),
        "step_failure": (Command.COMPLETE_STEP, True),
    }

    def list(self, request):
        data = [jsonable(workflow_engine.describe(w)) for w in workflow_engine.list_definitions()]
        return Response(WorkflowDefinitionSerializer(data, many=True).data)

    def retrieve(self, request, workflow_id: str):
        workflow = workflow_engine.get_workflow(workflow_id)
        return Response(
            WorkflowDefinitionSerializer(jsonable(workflow_engine.describe(workflow))).data
        )

    @extend_schema(
        tags=[TAG_DEFINITIONS],
        summary="Run a workflow",
        description=(
            "Runs the workflow in the request. `201`: the run finished (done, failed or "
            "reverted; failures are reported in `errors` and `acknowledgement.has_failed`). "
            "`202`: the run continues, e.g. an async step waits for "
            "`steps/success`. With the `transaction_id` of an unfinished stored "
            "transaction the run resumes it."
        ),
        request=RunSerializer,
        responses={
            201: RunFinishedSerializer,
            202: RunAcceptedSerializer,
            400: ERROR,
            404: ERROR,
            409: ERROR,
            **AUTH_ERRORS,
        },
        examples=[
            OpenApiExample("Run with input", value={"input": {"order_id": 42}}, request_only=True),
        ],
    )
    @action(detail=True, methods=["post"])
    def run(self, request, workflow_id: str):
        workflow_engine.get_workflow(workflow_id)
        data = validated(RunSerializer, request.data)
        res = workflow_engine.run(
            workflow_id,
            input=data["input"],
            transaction_id=data.get("transaction_id"),
            throw_on_error=False,
        )
        return run_response(res)

    def _step_command(self, request, workflow_id: str, serializer_class: type, success: bool):
        workflow_engine.get_workflow(workflow_id)
        data = validated(serializer_class, request.data)
        address = StepAddress(workflow_id, data["transaction_id"], data["step_id"], data["action"])
        if success:
            return step_command(
                workflow_engine.set_step_success,
                address,
                response=data["response"],
                compensate_input=data["compensate_input"],
            )
        return step_command(
            workflow_engine.set_step_failure,
            address,
            error=data["error"] if data["error"] is not None else data["response"],
            force_permanent_failure=data["force_permanent_failure"],
        )

    @extend_schema(
        tags=[TAG_DEFINITIONS],
        summary="Complete a waiting step",
        description=(
            "Sets the response of a step waiting for one (an async step) and continues "
            "the transaction: `200`. When another worker executes the run, the answer is "
            "recorded and the answer is `202` with the execution "
            "(`acknowledgement.answer_recorded`): it is applied when the run is free. "
            "`409` when the step is not waiting, was already answered or the transaction "
            "has finished."
        ),
        request=StepSuccessSerializer,
        responses=STEP_ANSWER_RESPONSES,
    )
    @action(detail=True, methods=["post"], url_path="steps/success", url_name="step-success")
    def step_success(self, request, workflow_id: str):
        return self._step_command(request, workflow_id, StepSuccessSerializer, True)

    @extend_schema(
        tags=[TAG_DEFINITIONS],
        summary="Fail a waiting step",
        description=(
            "Fails a step waiting for a response; its retries apply unless "
            "`force_permanent_failure`. The error is `error`, else `response`. `202` "
            "when another worker executes the run: the failure is recorded and applied "
            "when the run is free, as for `steps/success`."
        ),
        request=StepFailureSerializer,
        responses=STEP_ANSWER_RESPONSES,
    )
    @action(detail=True, methods=["post"], url_path="steps/failure", url_name="step-failure")
    def step_failure(self, request, workflow_id: str):
        return self._step_command(request, workflow_id, StepFailureSerializer, False)


# Executions


EXECUTION_ID = OpenApiParameter(
    "id", OpenApiTypes.STR, OpenApiParameter.PATH, description="Execution id (wf_exec_...)."
)


@extend_schema_view(
    list=extend_schema(
        tags=[TAG_EXECUTIONS],
        summary="List stored executions",
        description=(
            "Newest first, cursor-paginated (`next`/`previous` links; no total count). "
            "Leaves out `execution`, `context` and the payloads; fetch one execution for "
            "those."
        ),
        responses={
            200: WorkflowExecutionListSerializer(many=True),
            400: ERROR,
            404: OpenApiResponse(ErrorSerializer, description="Invalid cursor"),
            **AUTH_ERRORS,
        },
    ),
    retrieve=extend_schema(
        tags=[TAG_EXECUTIONS],
        summary="One stored execution",
        parameters=[EXECUTION_ID],
        responses={200: WorkflowExecutionDetailSerializer, 404: ERROR, **AUTH_ERRORS},
    ),
)
class WorkflowExecutionViewSet(WorkflowsAPIMixin, viewsets.GenericViewSet):
    """Stored executions: list, inspect, cancel, retry, re-run and follow."""

    queryset = WorkflowExecution.objects.none()
    read_command = Command.VIEW
    command_for_action = {
        "cancel": (Command.CANCEL, True),
        "retry": (Command.RETRY, True),
        "rerun": (Command.RUN, True),
    }
    lookup_url_kwarg = "id"
    lookup_value_regex = "[^/]+"
    pagination_class = ExecutionCursorPagination
    filter_backends = [ExecutionFilterBackend]
    filterset_class = WorkflowExecutionFilter

    #: Bounds of ``events/``: total duration, keep-alive comment and state poll periods.
    events_max_seconds = 600.0
    #: A WSGI server notices a closed connection only when a write fails: keep it short.
    events_keepalive_seconds = 5.0
    events_poll_seconds = 2.0

    def get_queryset(self):
        return workflow_engine.list_workflow_executions().light()

    def get_serializer_class(self):
        if self.action == "list":
            return WorkflowExecutionListSerializer
        return WorkflowExecutionDetailSerializer

    def get_execution(self, execution_id: str) -> WorkflowExecution:
        if "\x00" in execution_id:
            raise ExecutionNotFound(f"Workflow execution {execution_id!r} could not be found.")
        return workflow_engine.retrieve_workflow_execution(execution_id)

    def list(self, request):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        serializer = WorkflowExecutionListSerializer(page, many=True)
        return self.get_paginated_response(serializer.data)

    def retrieve(self, request, id: str):
        execution = self.get_execution(id)
        return Response(WorkflowExecutionDetailSerializer(execution).data)

    @extend_schema(
        tags=[TAG_EXECUTIONS],
        summary="Cancel an execution",
        description=(
            "Reverts a running or `done` transaction through compensation: `200` when the "
            "cancel took effect here. When another worker executes the run, the cancel is "
            "recorded and the answer is `202` with the execution: that worker starts no "
            "further step and compensates. `409` when it is failed, reverted or "
            "compensating."
        ),
        parameters=[EXECUTION_ID],
        request=None,
        responses={
            200: ActionResultSerializer,
            202: ActionResultSerializer,
            404: ERROR,
            409: ERROR,
            **AUTH_ERRORS,
        },
    )
    @action(detail=True, methods=["post"], pagination_class=None, filter_backends=[])
    def cancel(self, request, id: str):
        execution = self.get_execution(id)
        res = workflow_engine.cancel(execution.workflow_id, execution.transaction_id)
        response = action_response(res)
        if res.acknowledgement.get("cancel_requested"):
            # Another worker executes the run: it stops at its next step boundary.
            response.status_code = status.HTTP_202_ACCEPTED
        return response

    @extend_schema(
        tags=[TAG_EXECUTIONS],
        summary="Retry a waiting step, or a failed execution's compensation",
        description=(
            "With `step_id`: invokes that step again; it must be waiting for a response "
            "(else `409`). Without `step_id`: runs the failed compensations of a `failed` "
            "execution again (else `409`)."
        ),
        parameters=[EXECUTION_ID],
        request=RetrySerializer,
        responses={200: ActionResultSerializer, 400: ERROR, 404: ERROR, 409: ERROR, **AUTH_ERRORS},
    )
    @action(detail=True, methods=["post"], pagination_class=None, filter_backends=[])
    def retry(self, request, id: str):
        execution = self.get_execution(id)
        data = validated(RetrySerializer, request.data)
        if data.get("step_id"):
            address = StepAddress(
                execution.workflow_id, execution.transaction_id, data["step_id"], data["action"]
            )
            return step_command(workflow_engine.retry_step, address)
        res = workflow_engine.retry_compensation(execution.workflow_id, execution.transaction_id)
        return action_response(res)

    @extend_schema(
        tags=[TAG_EXECUTIONS],
        summary="Run an execution's workflow again with the same input",
        description="Starts a new transaction; answers like `run`.",
        parameters=[EXECUTION_ID],
        request=None,
        responses={
            201: RunFinishedSerializer,
            202: RunAcceptedSerializer,
            404: ERROR,
            409: ERROR,
            **AUTH_ERRORS,
        },
    )
    @action(detail=True, methods=["post"], pagination_class=None, filter_backends=[])
    def rerun(self, request, id: str):
        execution = self.get_execution(id)
        return run_response(workflow_engine.rerun(execution.pk))

    @extend_schema(
        tags=[TAG_EXECUTIONS],
        summary="Follow an execution (Server-Sent Events)",
        description=(
            "Streams `event: <event_type>` / `data: <json>` messages (`on_step_begin`, "
            "`on_step_success`, `on_step_awaiting`, `on_finish`, ...) for the execution's "
            "transaction, with `: keep-alive` comments every 5 s. Ends after "
            "`on_finish`; an execution that has already finished gets one `on_finish` "
            "built from the stored row (`stored: true`) at once. A stream lasts at most "
            "`timeout` seconds (default and maximum 600), then sends `stream_timeout`."
        ),
        parameters=[
            EXECUTION_ID,
            OpenApiParameter(
                "timeout",
                OpenApiTypes.INT,
                OpenApiParameter.QUERY,
                required=False,
                description="Maximum duration of the stream in seconds (1-600).",
            ),
        ],
        request=None,
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR, description="An event stream."
            ),
            400: ERROR,
            404: ERROR,
            **AUTH_ERRORS,
        },
    )
    @action(
        detail=True,
        methods=["get"],
        pagination_class=None,
        filter_backends=[],
        renderer_classes=[JSONRenderer, EventStreamRenderer],
    )
    def events(self, request, id: str):
        max_seconds = self.events_max_seconds
        raw = request.query_params.get("timeout")
        if raw is not None:
            try:
                max_seconds = float(int(raw))
            except ValueError:
                raise ValidationError({"timeout": [_("A whole number of seconds is required.")]})
            if not 1 <= max_seconds <= self.events_max_seconds:
                raise ValidationError(
                    {"timeout": [_("Between 1 and %d seconds.") % self.events_max_seconds]}
                )
        execution = self.get_execution(id)
        stream = ExecutionEventStream(
            execution,
            max_seconds=max_seconds,
            keepalive_seconds=self.events_keepalive_seconds,
            poll_seconds=self.events_poll_seconds,
            user_key=request.user.pk,
        )
        response = StreamingHttpResponse(stream, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
