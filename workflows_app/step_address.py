"""Which step of which transaction a step command is about.

Completing a waiting step (``set_step_success``/``set_step_failure``) and invoking it
again (``retry_step``) address the step the same way, whether the command comes from
Python code, the admin or the API: a :class:`StepAddress`. Its ``action`` says which
handler of the step the command is for, ``"invoke"`` or ``"compensate"``, as the
fourth part of a Medusa idempotency key does; the step itself is ``step_id``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .orchestration import (
    InvalidStepStateError,
    InvalidTransactionStateError,
    TransactionNotFound,
    WorkflowsError,
)
from .status import HandlerType

HANDLERS = tuple(HandlerType.values)


class UnknownStepError(WorkflowsError, LookupError):
    """The workflow has no step with the addressed ``step_id``."""


class TransactionFinishedError(InvalidTransactionStateError, TransactionNotFound):
    """The addressed transaction is stored but has finished: no step of it waits any
    more. A conflict rather than a miss, and still a ``TransactionNotFound`` for code
    that catches that."""


@dataclass(frozen=True)
class StepAddress:
    """``workflow_id:transaction_id:step_id:action`` of a step handler."""

    workflow_id: str
    transaction_id: str
    step_id: str
    action: str = HandlerType.INVOKE

    def __post_init__(self) -> None:
        if not (self.workflow_id and self.transaction_id and self.step_id):
            raise ValueError("Give an idempotency key, or workflow_id, transaction_id and step_id.")
        if self.action not in HANDLERS:
            raise InvalidStepStateError("Incorrect action type.")

    @classmethod
    def parse(cls, idempotency_key: str) -> StepAddress:
        """From ``"<workflow>:<transaction>:<step>:<invoke|compensate>"``."""
        parts = idempotency_key.split(":") if isinstance(idempotency_key, str) else []
        if len(parts) != 4 or not all(parts):
            raise ValueError(
                f"Invalid idempotency key {idempotency_key!r}: expected "
                "'<workflow_id>:<transaction_id>:<step_id>:<invoke|compensate>'."
            )
        return cls(*parts)

    @classmethod
    def of(
        cls,
        address: StepAddress | str | None = None,
        *,
        workflow_id: str | None = None,
        transaction_id: str | None = None,
        step_id: str | None = None,
        action: str = HandlerType.INVOKE,
    ) -> StepAddress:
        """An address given as itself, as an idempotency key or as its parts."""
        if isinstance(address, StepAddress):
            return address
        if address:
            return cls.parse(address)
        return cls(workflow_id or "", transaction_id or "", step_id or "", action)

    @property
    def idempotency_key(self) -> str:
        return f"{self.workflow_id}:{self.transaction_id}:{self.step_id}:{self.action}"
