"""The transaction orchestrator: flow model, state machine, execution loop, compensation.

Nothing here imports Django; storage and scheduling arrive through ``runtime``.
"""

from . import codec
from .attempts import build_record, locate_error, storable
from .calls import run_coroutine
from .context import StepContext
from .definition import ROOT_ID, FlowDefinition, StepNode, StepOptions, check_step_options
from .errors import (
    CompositionError,
    ExecutorInterrupted,
    InvalidStepStateError,
    InvalidTransactionIdError,
    InvalidTransactionStateError,
    NonSerializableCheckpointError,
    PayloadTooLargeError,
    PermanentStepFailureError,
    StaleTransactionError,
    StepError,
    TransactionAlreadyStarted,
    TransactionCanceledError,
    TransactionNotFound,
    TransactionStepTimeoutError,
    TransactionTimeoutError,
    WorkflowError,
    WorkflowNotFound,
    WorkflowsError,
    serialize_error,
)
from .orchestrator import Orchestrator, orchestrator
from .responses import SkipStepResponse, StepResponse
from .runtime import Runtime, runtime
from .scheduler import Scheduler, ThreadScheduler
from .states import (
    FINISHED_STATES,
    AttemptStatus,
    HandlerType,
    Operation,
    StepState,
    StepStatus,
    TransactionState,
)
from .storage import AttemptRecord, InMemoryStorage, Storage
from .transaction import StepRun, Transaction

__all__ = [
    "FINISHED_STATES",
    "ROOT_ID",
    "AttemptRecord",
    "AttemptStatus",
    "CompositionError",
    "ExecutorInterrupted",
    "FlowDefinition",
    "HandlerType",
    "InMemoryStorage",
    "InvalidStepStateError",
    "InvalidTransactionIdError",
    "InvalidTransactionStateError",
    "NonSerializableCheckpointError",
    "Operation",
    "Orchestrator",
    "PayloadTooLargeError",
    "PermanentStepFailureError",
    "Runtime",
    "Scheduler",
    "SkipStepResponse",
    "StaleTransactionError",
    "StepContext",
    "StepError",
    "StepNode",
    "StepOptions",
    "StepResponse",
    "StepRun",
    "StepState",
    "StepStatus",
    "Storage",
    "ThreadScheduler",
    "Transaction",
    "TransactionAlreadyStarted",
    "TransactionCanceledError",
    "TransactionNotFound",
    "TransactionState",
    "TransactionStepTimeoutError",
    "TransactionTimeoutError",
    "WorkflowError",
    "WorkflowNotFound",
    "WorkflowsError",
    "build_record",
    "check_step_options",
    "codec",
    "locate_error",
    "orchestrator",
    "run_coroutine",
    "runtime",
    "serialize_error",
    "storable",
]
