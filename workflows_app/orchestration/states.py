"""State and status values of transactions and steps.

The string values are persisted (flow JSON, database columns) and match Medusa's,
so an execution stored by one version reads the same in the next.
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
    INVOKE = "invoke"
    COMPENSATE = "compensate"


FINISHED_STATES = frozenset(
    {TransactionState.DONE, TransactionState.REVERTED, TransactionState.FAILED}
)

# Invoke states after which the steps that follow may start.
INVOKE_SETTLED = frozenset(
    {
        StepState.DONE,
        StepState.FAILED,
        StepState.TIMEOUT,
        StepState.SKIPPED,
        StepState.SKIPPED_FAILURE,
    }
)

_STEP_TRANSITIONS = {
    StepState.DORMANT: {StepState.NOT_STARTED},
    StepState.NOT_STARTED: {
        StepState.INVOKING,
        StepState.COMPENSATING,
        StepState.FAILED,
        StepState.SKIPPED,
        StepState.SKIPPED_FAILURE,
    },
    StepState.INVOKING: {StepState.FAILED, StepState.DONE, StepState.TIMEOUT, StepState.SKIPPED},
    StepState.COMPENSATING: {StepState.REVERTED, StepState.FAILED},
    StepState.DONE: {StepState.COMPENSATING},
}


def check_step_transition(current: StepState, new: StepState) -> None:
    """Refuse a step state change the state machine does not allow."""
    if current is not new and new not in _STEP_TRANSITIONS.get(current, ()):
        raise ValueError(f'Updating State from "{current}" to "{new}" is not allowed.')
