"""JSON error bodies for the API: ``{"type": ..., "message": ...}``.

The views set :func:`api_exception_handler` through ``get_exception_handler()``, so the
host's ``REST_FRAMEWORK["EXCEPTION_HANDLER"]`` does not change the error format.

``type`` is one of a few stable words (``invalid_data``, ``not_found``, ``conflict``,
``unauthorized``, ``not_allowed``, ...); ``code`` names the precise cause (a DRF error
code or the engine's exception class); ``details`` carries field errors of a 400.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from ..orchestration import (
    CompositionError,
    InvalidStepStateError,
    InvalidTransactionIdError,
    InvalidTransactionStateError,
    NonSerializableCheckpointError,
    PayloadTooLargeError,
    StaleTransactionError,
    TransactionAlreadyStarted,
    TransactionNotFound,
    WorkflowNotFound,
    WorkflowsError,
)
from ..step_address import TransactionFinishedError

INVALID_DATA = "invalid_data"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
UNAUTHORIZED = "unauthorized"
NOT_ALLOWED = "not_allowed"
UNSUPPORTED = "unsupported"
THROTTLED = "throttled"

#: Engine errors, most specific first: (class, HTTP status, type).
ENGINE_ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (TransactionFinishedError, status.HTTP_409_CONFLICT, CONFLICT),
    (WorkflowNotFound, status.HTTP_404_NOT_FOUND, NOT_FOUND),
    (TransactionNotFound, status.HTTP_404_NOT_FOUND, NOT_FOUND),
    (TransactionAlreadyStarted, status.HTTP_409_CONFLICT, CONFLICT),
    (InvalidStepStateError, status.HTTP_409_CONFLICT, CONFLICT),
    (InvalidTransactionStateError, status.HTTP_409_CONFLICT, CONFLICT),
    (StaleTransactionError, status.HTTP_409_CONFLICT, CONFLICT),
    (InvalidTransactionIdError, status.HTTP_400_BAD_REQUEST, INVALID_DATA),
    (PayloadTooLargeError, status.HTTP_400_BAD_REQUEST, INVALID_DATA),
    (NonSerializableCheckpointError, status.HTTP_400_BAD_REQUEST, INVALID_DATA),
    (CompositionError, status.HTTP_400_BAD_REQUEST, INVALID_DATA),
)

#: DRF exceptions: (class, type). Their own status code is kept.
DRF_ERRORS: tuple[tuple[type[exceptions.APIException], str], ...] = (
    (exceptions.ValidationError, INVALID_DATA),
    (exceptions.ParseError, INVALID_DATA),
    (exceptions.NotAuthenticated, UNAUTHORIZED),
    (exceptions.AuthenticationFailed, UNAUTHORIZED),
    (exceptions.PermissionDenied, NOT_ALLOWED),
    (exceptions.NotFound, NOT_FOUND),
    (exceptions.MethodNotAllowed, NOT_ALLOWED),
    (exceptions.NotAcceptable, UNSUPPORTED),
    (exceptions.UnsupportedMediaType, UNSUPPORTED),
    (exceptions.Throttled, THROTTLED),
)


def error_body(type_: str, message: str, code: str | None = None, details: Any = None) -> dict:
    """The JSON body of an error response."""
    body: dict[str, Any] = {"type": type_, "message": message}
    if code:
        body["code"] = code
    if details is not None:
        body["details"] = details
    return body


def _first_message(detail: Any) -> str:
    """The first human-readable message in a DRF error detail structure."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            message = _first_message(value)
            if key in ("non_field_errors", "detail"):
                return message
            return f"{key}: {message}"
        return "Invalid request."
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid request."
    return str(detail)


def _drf_response(exc: exceptions.APIException) -> Response:
    type_ = next((t for cls, t in DRF_ERRORS if isinstance(exc, cls)), INVALID_DATA)
    detail = exc.detail
    details = None
    if isinstance(exc, exceptions.ValidationError):
        details = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        message = _first_message(detail)
        code = "invalid"
    else:
        message = str(detail)
        code = getattr(detail, "code", None) or exc.default_code
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    return Response(error_body(type_, message, code, details), exc.status_code, headers=headers)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Turn engine, DRF and Django errors into ``{"type", "message"}`` responses.

    Anything else is left to Django (a real bug, reported as a 500).
    """
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, RequestDataTooBig):
        set_rollback()
        return Response(
            error_body(INVALID_DATA, str(exc) or "Request body too large.", "payload_too_large"),
            status.HTTP_400_BAD_REQUEST,
        )
    elif isinstance(exc, SuspiciousOperation):
        set_rollback()
        return Response(
            error_body(INVALID_DATA, str(exc) or "Bad request.", "bad_request"),
            status.HTTP_400_BAD_REQUEST,
        )

    if isinstance(exc, exceptions.APIException):
        set_rollback()
        return _drf_response(exc)

    if isinstance(exc, WorkflowsError):
        for cls, http_status, type_ in ENGINE_ERRORS:
            if isinstance(exc, cls):
                set_rollback()
                return Response(error_body(type_, str(exc), type(exc).__name__), http_status)
    return None
