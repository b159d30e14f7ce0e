"""Errors raised by the orchestrator, and the normalisation of anything raised by a step."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .error_detail import ErrorDetail


class WorkflowsError(Exception):
    """Base class of the errors this package raises on purpose."""


class CompositionError(WorkflowsError):
    """A workflow or step definition is invalid (raised at definition time)."""


class WorkflowNotFound(WorkflowsError, KeyError):
    """No workflow is registered under the name asked for."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "Workflow not found"


class PermanentStepFailureError(WorkflowsError):
    """Raised by ``StepResponse.permanent_failure``: fail now, without retries."""

    error_name = "PermanentStepFailure"

    def __init__(self, message: str = "Permanent failure", compensate_input: Any = None):
        super().__init__(message)
        self.compensate_input = compensate_input


class TransactionStepTimeoutError(WorkflowsError):
    """A step ran longer than its ``timeout`` (it was not interrupted)."""


class TransactionTimeoutError(WorkflowsError):
    """The transaction ran longer than the workflow's ``timeout``."""


class TransactionCanceledError(WorkflowsError):
    """The transaction was canceled while this step waited for a response."""


class NonSerializableCheckpointError(WorkflowsError):
    """A value that must be stored cannot be encoded as JSON."""


class PayloadTooLargeError(WorkflowsError):
    """A value that must be stored is larger than ``MAX_PAYLOAD_BYTES``."""


class InvalidTransactionIdError(WorkflowsError, ValueError):
    """Transaction ids are joined with ``:`` in idempotency keys, so they may not hold one."""


class TransactionAlreadyStarted(WorkflowsError):
    """Another live worker holds this transaction."""

    def __init__(self, transaction_id: str):
        super().__init__(f"Transaction already started for transaction_id: {transaction_id}")
        self.transaction_id = transaction_id


class TransactionNotFound(WorkflowsError, LookupError):
    """No stored transaction matches."""


class InvalidStepStateError(WorkflowsError):
    """The step is not in a state that allows the requested action."""


class InvalidTransactionStateError(WorkflowsError):
    """The transaction is not in a state that allows the requested action."""


class StaleTransactionError(WorkflowsError):
    """Another executor changed the stored transaction: this branch stops silently."""


class ExecutorInterrupted(BaseException):
    """The code executing a run was interrupted while a step handler ran (e.g. a
    worker's task timeout): not an outcome of the step.

    The attempt is not recorded, the run is released as it propagates, and recovery
    continues it later. A ``BaseException``, like ``SystemExit``, so that a handler's
    ``except Exception`` does not swallow it. ``runtime.interruptions`` names what
    counts as an interruption; the worker entry sets it.
    """

    def __init__(self, cause: BaseException, step_id: str, handler_type: str):
        super().__init__(cause, step_id, handler_type)
        self.cause = cause
        self.step_id = step_id
        self.handler_type = handler_type

    def __str__(self) -> str:
        return (
            f"The executor was interrupted while step {self.step_id} ({self.handler_type}) "
            f"ran: {type(self.cause).__name__}: {self.cause}"
        )


class WorkflowError(WorkflowsError):
    """Raised by ``run(throw_on_error=True)`` when a transaction ends failed or reverted."""

    def __init__(self, message: str, errors: list[StepError], transaction: Any):
        super().__init__(message)
        self.errors = errors
        self.transaction = transaction


@dataclass(slots=True)
class StepError:
    """One recorded error: the step id, the handler type and the normalised error."""

    step_id: str
    handler_type: str
    error: dict

    def to_dict(self) -> dict:
        return {"stepId": self.step_id, "handlerType": self.handler_type, "error": self.error}

    @classmethod
    def from_dict(cls, data: dict) -> StepError:
        return cls(data["stepId"], data["handlerType"], data["error"])


def serialize_error(value: Any) -> dict:
    """Turn anything a step raised or reported into ``{"message", "name", "stack"}``.

    For an exception the ``stack`` (its formatted traceback) is computed when first read
    (:class:`~.error_detail.ErrorDetail`): most failures are compensated or retried
    without anyone reading it."""
    if isinstance(value, BaseException):
        name = getattr(value, "error_name", None) or type(value).__name__
        message = str(value) if str(value) else name
        return ErrorDetail(value, message, name)
    if isinstance(value, dict) and "message" in value:
        try:
            data = json.loads(json.dumps(value, default=str))
        except (TypeError, ValueError):
            data = {"message": str(value.get("message"))}
        data.setdefault("name", "Error")
        data.setdefault("stack", "")
        data["message"] = str(data["message"])
        return data
    try:
        message = value if isinstance(value, str) else json.dumps(value, default=str)
    except (TypeError, ValueError):
        message = "Unknown non-serializable error"
    return {"message": message, "name": "Error", "stack": ""}
