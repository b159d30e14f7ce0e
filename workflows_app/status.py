"""Choice enums shared by the models, the admin filters and the API.

The values come from the Django-free enums of ``orchestration.states`` (defined once
there); this module only adds the translated labels.
"""

from django.db import models
from django.utils.translation import pgettext_lazy

from .orchestration import states


class TransactionState(models.TextChoices):
    """State of a whole transaction (Medusa's ``TransactionState``)."""

    NOT_STARTED = (
        states.TransactionState.NOT_STARTED,
        pgettext_lazy("workflow state", "Not started"),
    )
    INVOKING = states.TransactionState.INVOKING, pgettext_lazy("workflow state", "Invoking")
    WAITING_TO_COMPENSATE = (
        states.TransactionState.WAITING_TO_COMPENSATE,
        pgettext_lazy("workflow state", "Waiting to compensate"),
    )
    COMPENSATING = (
        states.TransactionState.COMPENSATING,
        pgettext_lazy("workflow state", "Compensating"),
    )
    DONE = states.TransactionState.DONE, pgettext_lazy("workflow state", "Done")
    REVERTED = states.TransactionState.REVERTED, pgettext_lazy("workflow state", "Reverted")
    FAILED = states.TransactionState.FAILED, pgettext_lazy("workflow state", "Failed")


class ExecutionStatus(models.TextChoices):
    """Status of an execution as shown in the execution log."""

    RUNNING = states.AttemptStatus.RUNNING, pgettext_lazy("execution status", "Running")
    COMPLETED = states.AttemptStatus.COMPLETED, pgettext_lazy("execution status", "Completed")
    FAILED = states.AttemptStatus.FAILED, pgettext_lazy("execution status", "Failed")
    TIMED_OUT = states.AttemptStatus.TIMED_OUT, pgettext_lazy("execution status", "Timed out")
    CANCELED = states.AttemptStatus.CANCELED, pgettext_lazy("execution status", "Canceled")


class StepLogStatus(models.TextChoices):
    """Status of one attempt of a step handler in the execution log."""

    RUNNING = states.AttemptStatus.RUNNING, pgettext_lazy("step status", "Running")
    COMPLETED = states.AttemptStatus.COMPLETED, pgettext_lazy("step status", "Completed")
    FAILED = states.AttemptStatus.FAILED, pgettext_lazy("step status", "Failed")
    TIMED_OUT = states.AttemptStatus.TIMED_OUT, pgettext_lazy("step status", "Timed out")
    CANCELED = states.AttemptStatus.CANCELED, pgettext_lazy("step status", "Canceled")
    SKIPPED = states.AttemptStatus.SKIPPED, pgettext_lazy("step status", "Skipped")
    WAITING = states.AttemptStatus.WAITING, pgettext_lazy("step status", "Waiting")


class HandlerType(models.TextChoices):
    """Which handler of a step ran: the forward one or its compensation."""

    INVOKE = states.HandlerType.INVOKE, pgettext_lazy("step handler", "Invoke")
    COMPENSATE = states.HandlerType.COMPENSATE, pgettext_lazy("step handler", "Compensate")


#: Transaction states after which nothing runs any more.
FINISHED_STATES: tuple[str, ...] = tuple(sorted(str(s) for s in states.FINISHED_STATES))

#: Transaction states of an execution that may still make progress.
UNFINISHED_STATES: tuple[str, ...] = tuple(
    str(s) for s in states.TransactionState if s not in states.FINISHED_STATES
)
