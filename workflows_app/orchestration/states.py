"""The names of the engine: states and statuses of transactions, steps and attempts,
handler types and step operations, each defined once.

The string values are persisted (flow JSON, database columns) and match Medusa's,
so an execution stored by one version reads the same in the next. The Django choices
in ``workflows_app.status`` take their values from here.
"""

from enum import StrEnum


class TransactionState(StrEnum):
    NOT_STARTED = "not_started"
    INVOKING = "invoking"
    WAITING_TO_COMPENSATE = "waiting_to_compensate"
    COMPENSATING = "compensating"
    DONE = "done"
    REVERTED = "reverted"
    FAILED = "failed"


class StepState(StrEnum):
    NOT_STARTED = "not_started"
    INVOKING = "invoking"
    COMPENSATING = "compensating"
    DONE = "done"
    REVERTED = "reverted"
    FAILED = "failed"
    DORMANT = "dormant"
    SKIPPED = "skipped"
    SKIPPED_FAILURE = "skipped_failure"
    TIMEOUT = "timeout"


class StepStatus(StrEnum):
    IDLE = "idle"
    OK = "ok"
    WAITING = "waiting_response"
    TEMPORARY_FAILURE = "temp_failure"
    PERMANENT_FAILURE = "permanent_failure"


class HandlerType(StrEnum):
    """Which handler of a step an attempt ran."""

    INVOKE = "invoke"
    COMPENSATE = "compensate"


class AttemptStatus(StrEnum):
    """How one attempt of a step handler ended (the execution log's status words)."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELED = "CANCELED"
    SKIPPED = "SKIPPED"
    WAITING = "WAITING"


class Operation(StrEnum):
    """What a step node runs: a plain step, a ``for_each`` loop or a sub-workflow."""

    STEP = "step"
    LOOP = "builtin:loop"
    SUB_WORKFLOW = "sub-workflow"


FINISHED_STATES = frozenset(
    {TransactionState.DONE, TransactionState.REVERTED, TransactionState.FAILED}
)
