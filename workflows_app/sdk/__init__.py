"""The Python SDK: compose steps with compensation into workflows and run them.

Everything a workflow author needs is importable from here. Nothing in this
package imports Django.
"""

from ..orchestration import (
    CompositionError,
    InvalidTransactionIdError,
    NonSerializableCheckpointError,
    PayloadTooLargeError,
    PermanentStepFailureError,
    StepContext,
    StepError,
    StepResponse,
    StepState,
    StepStatus,
    Transaction,
    TransactionAlreadyStarted,
    TransactionNotFound,
    TransactionState,
    TransactionStepTimeoutError,
    TransactionTimeoutError,
    WorkflowError,
    WorkflowNotFound,
)
from .composer import Hook, WorkflowResponse, create_hook, parallelize, transform, when
from .loops import for_each
from .references import Reference
from .registry import get_workflow, list_workflows
from .steps import Step, create_step
from .workflows import RunResult, Workflow, create_workflow

__all__ = [
    "CompositionError",
    "Hook",
    "InvalidTransactionIdError",
    "NonSerializableCheckpointError",
    "PayloadTooLargeError",
    "PermanentStepFailureError",
    "Reference",
    "RunResult",
    "Step",
    "StepContext",
    "StepError",
    "StepResponse",
    "StepState",
    "StepStatus",
    "Transaction",
    "TransactionAlreadyStarted",
    "TransactionNotFound",
    "TransactionState",
    "TransactionStepTimeoutError",
    "TransactionTimeoutError",
    "Workflow",
    "WorkflowError",
    "WorkflowNotFound",
    "WorkflowResponse",
    "create_hook",
    "create_step",
    "create_workflow",
    "for_each",
    "get_workflow",
    "list_workflows",
    "parallelize",
    "transform",
    "when",
]
