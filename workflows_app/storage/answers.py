"""Answers to waiting steps that arrive while another process holds the run.

``set_step_success``/``set_step_failure`` on a run that another worker or thread
executes record the answer on the waiting attempt's row (``answer_kind``, ``answer``
in the codec's stored form, ``answered_at``) and return at once. The first answer
recorded wins: a second one is refused as an answer to a step that no longer waits.
Whoever frees the run next applies a recorded answer:

- its holder, right after releasing the run (``OrmStorage.save``);
- the process that recorded it, if the run was released meanwhile;
- the recovery sweep, for a released run that still has one (its holder died).

Applying means claiming the run and calling the orchestrator's ``set_step_success``
or ``set_step_failure`` with the recorded answer, as if it had just arrived. The row
keeps ``answer_kind`` and ``answered_at``; ``answer`` is cleared once applied (the
attempt's output or error then holds it, masked as usual).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from ..models import StepExecution
from ..orchestration import (
    FlowDefinition,
    InvalidStepStateError,
    PermanentStepFailureError,
    StepResponse,
    Transaction,
    TransactionAlreadyStarted,
    orchestrator,
    runtime,
    serialize_error,
    storable,
)
from ..status import UNFINISHED_STATES, StepLogStatus

logger = logging.getLogger("workflows_app")

SUCCESS = "success"
FAILURE = "failure"


@dataclass(frozen=True)
class Answer:
    """A response (or failure) given from outside to a waiting step handler."""

    step_id: str
    action: str
    kind: str
    response: Any = None
    compensate_input: Any = None
    error: Any = None
    force_permanent_failure: bool = False
    #: The attempt row it is recorded on and when it arrived (an answer read back).
    row: int | None = None
    at: datetime.datetime | None = None

    @classmethod
    def failure(cls, step_id: str, action: str, error: Any, permanent: bool = False) -> Answer:
        return cls(step_id, action, FAILURE, error=error, force_permanent_failure=permanent)

    def apply(self, tx: Transaction) -> Transaction:
        """Give the answer to the run ``tx`` held by this process, and continue it."""
        if self.kind == SUCCESS:
            value = self.response
            if self.compensate_input is not None:
                value = StepResponse(self.response, self.compensate_input)
            return orchestrator.set_step_success(tx, self.step_id, self.action, value)
        return orchestrator.set_step_failure(
            tx,
            self.step_id,
            self.action,
            self.error or {"message": "Step failed"},
            self.force_permanent_failure,
        )

    def stored(self) -> dict:
        """The JSON kept on the row; refused values raise before anything is written."""
        if self.kind == SUCCESS:
            data: dict[str, Any] = {"response": self.response}
            if self.compensate_input is not None:
                data["compensate_input"] = self.compensate_input
        else:
            error = self.error
            permanent = self.force_permanent_failure or isinstance(error, PermanentStepFailureError)
            if isinstance(error, BaseException):
                error = dict(serialize_error(error))
            data = {"error": error, "force_permanent_failure": permanent}
        [data] = storable(f"The answer to step {self.step_id}", data)
        return data

    @classmethod
    def from_row(cls, step: dict[str, Any]) -> Answer:
        """From a step row's values (``id``, ``step_id``, ``handler_type`` and the answer)."""
        data = step["answer"] if isinstance(step["answer"], dict) else {}
        return cls(
            step["step_id"],
            step["handler_type"],
            step["answer_kind"],
            response=data.get("response"),
            compensate_input=data.get("compensate_input"),
            error=data.get("error"),
            force_permanent_failure=bool(data.get("force_permanent_failure")),
            row=step["id"],
            at=step["answered_at"],
        )


def pending(execution_id: str) -> QuerySet:
    """Attempts of execution ``execution_id`` with an answer recorded, not yet applied."""
    return StepExecution.objects.filter(
        execution_id=execution_id, status=StepLogStatus.WAITING, answered_at__isnull=False
    )


def _waiting(workflow_id: str, transaction_id: str, step_id: str, action: str) -> QuerySet:
    """The waiting attempts of one step handler of the unfinished run."""
    return StepExecution.objects.filter(
        execution__workflow_id=workflow_id,
        execution__transaction_id=transaction_id,
        execution__state__in=UNFINISHED_STATES,
        step_id=step_id,
        handler_type=action,
        iteration=0,
        status=StepLogStatus.WAITING,
    )


def record(workflow_id: str, transaction_id: str, answer: Answer) -> bool:
    """Record ``answer`` on the waiting attempt of the unfinished run; ``False`` when
    the step no longer waits or already has an answer (the first one wins)."""
    data = answer.stored()
    waiting = _waiting(workflow_id, transaction_id, answer.step_id, answer.action)
    attempt = waiting.order_by("-attempt").values_list("pk", flat=True).first()
    if attempt is None:
        return False
    return bool(
        StepExecution.objects.filter(
            pk=attempt, status=StepLogStatus.WAITING, answered_at__isnull=True
        ).update(answer_kind=answer.kind, answer=data, answered_at=timezone.now())
    )


def is_recorded(workflow_id: str, transaction_id: str, step_id: str, action: str) -> bool:
    """Whether the step has an answer recorded and not applied yet."""
    waiting = _waiting(workflow_id, transaction_id, step_id, action)
    return waiting.filter(answered_at__isnull=False).exists()


def apply_first(tx: Transaction) -> bool:
    """Apply the earliest answer recorded for the run ``tx``, which this process has
    just claimed; ``False`` when there is none to apply (``tx`` is still held then).

    An answer to a step the run no longer waits for (it was cancelled, or retried
    meanwhile) is dropped with a warning."""
    answers = getattr(tx.storage_handle, "answers", None)
    while answers:
        answer = answers.pop(0)
        try:
            orchestrator.check_waiting(tx, answer.step_id, answer.action)
        except InvalidStepStateError as exc:
            logger.warning(
                "Dropping the answer recorded for step %s of %s:%s: %s",
                answer.step_id,
                tx.workflow_id,
                tx.transaction_id,
                exc,
            )
            StepExecution.objects.filter(pk=answer.row).update(
                answer_kind="", answer=None, answered_at=None
            )
            continue
        answer.apply(tx)
        return True
    return False


def apply_recorded(
    definition: FlowDefinition, transaction_id: str, prepare: Callable[[Transaction], None]
) -> Transaction | None:
    """Claim the run and apply its earliest recorded answer (the rest follow as it is
    released again). ``None`` when another process holds the run: that one applies
    the answer when it releases it."""
    try:
        tx = runtime.storage.load(definition, transaction_id)
    except TransactionAlreadyStarted:
        return None
    if tx is None:
        return None
    prepare(tx)
    try:
        if not apply_first(tx):
            # Applied by someone else meanwhile: continue the run as recovery does.
            orchestrator.execute(tx)
    except runtime.releasing():
        runtime.storage.abandon(tx)
        raise
    return tx


def submit(
    definition: FlowDefinition,
    transaction_id: str,
    answer: Answer,
    what: str,
    prepare: Callable[[Transaction], None],
) -> tuple[Transaction | None, bool]:
    """Record ``answer`` for a run held elsewhere, and apply it at once if the holder
    released the run before it was written. Returns the run (``None`` if it ended and
    was not kept) and whether the answer still waits to be applied. Raises
    ``InvalidStepStateError`` when the step no longer waits or another answer came
    first, as for an answer to a step that does not wait."""
    workflow_id = definition.workflow_id
    if not record(workflow_id, transaction_id, answer):
        raise InvalidStepStateError(f"Cannot {what}: the step was already answered.")
    applied = apply_recorded(definition, transaction_id, prepare)
    recorded = is_recorded(workflow_id, transaction_id, answer.step_id, answer.action)
    tx = (
        runtime.storage.peek(definition, transaction_id)
        or applied
        or runtime.storage.load(definition, transaction_id, include_finished=True, claim=False)
    )
    return tx, recorded


def after_release(tx: Transaction) -> None:
    """The holder of ``tx`` has just released it: apply an answer recorded while it
    held the run. Errors are logged, not raised (the holder's own work is stored);
    recovery applies the answer then."""
    if not pending(tx.storage_handle.pk).exists():
        return

    def prepare(claimed: Transaction) -> None:
        claimed.events = tx.events
        claimed.in_background = tx.in_background

    try:
        apply_recorded(tx.definition, tx.transaction_id, prepare)
    except Exception:
        logger.exception(
            "Applying the answer recorded for %s:%s failed; recovery applies it",
            tx.workflow_id,
            tx.transaction_id,
        )
