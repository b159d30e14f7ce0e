"""Choice enums shared by the models, the admin filters and the API.

The values are plain strings that match the orchestrator's own constants; this module
does not import the orchestrator.
"""

from django.db import models
from django.utils.translation import pgettext_lazy


class TransactionState(models.TextChoices):
    """State of a whole transaction (Medusa's ``TransactionState``)."""

    NOT_STARTED = "not_started", pgettext_lazy("workflow state", "Not started")
    INVOKING = "invoking", pgettext_lazy("workflow state", "Invoking")
    WAITING_TO_COMPENSATE = (
        "waiting_to_compensate",
        pgettext_lazy("workflow state", "Waiting to compensate"),
    )
    COMPENSATING = "compensating", pgettext_lazy("workflow state", "Compensating")
    DONE = "done", pgettext_lazy("workflow state", "Done")
    REVERTED = "reverted", pgettext_lazy("workflow state", "Reverted")
    FAILED = "failed", pgettext_lazy("workflow state", "Failed")


class ExecutionStatus(models.TextChoices):
    """Status of an execution as shown in the execution log."""

    RUNNING = "RUNNING", pgettext_lazy("execution status", "Running")
    COMPLETED = "COMPLETED", pgettext_lazy("execution status", "Completed")
    FAILED = "FAILED", pgettext_lazy("execution status", "Failed")
    TIMED_OUT = "TIMED_OUT", pgettext_lazy("execution status", "Timed out")
    CANCELED = "CANCELED", pgettext_lazy("execution status", "Canceled")


class StepLogStatus(models.TextChoices):
    """Status of one attempt of a step handler in the execution log."""

    RUNNING = "RUNNING", pgettext_lazy("step status", "Running")
    COMPLETED = "COMPLETED", pgettext_lazy("step status", "Completed")
    FAILED = "FAILED", pgettext_lazy("step status", "Failed")
    TIMED_OUT = "TIMED_OUT", pgettext_lazy("step status", "Timed out")
    CANCELED = "CANCELED", pgettext_lazy("step status", "Canceled")
    SKIPPED = "SKIPPED", pgettext_lazy("step status", "Skipped")
    WAITING = "WAITING", pgettext_lazy("step status", "Waiting")


class HandlerType(models.TextChoices):
    """Which handler of a step ran: the forward one or its compensation."""

    INVOKE = "invoke", pgettext_lazy("step handler", "Invoke")
    COMPENSATE = "compensate", pgettext_lazy("step handler", "Compensate")


#: Transaction states after which nothing runs any more.
FINISHED_STATES: tuple[str, ...] = ("done", "failed", "reverted")

#: Transaction states of an execution that may still make progress.
UNFINISHED_STATES: tuple[str, ...] = (
    "not_started",
    "invoking",
    "waiting_to_compensate",
    "compensating",
)
