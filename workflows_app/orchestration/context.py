"""The context object every step handler receives as its second argument."""

from __future__ import annotations

from typing import Any

from .states import HandlerType


class StepContext:
    """What a step knows about the run it belongs to (Medusa's ``StepExecutionContext``)."""

    __slots__ = (
        "_transaction",
        "action",
        "attempt",
        "container",
        "context",
        "event_group_id",
        "idempotency_key",
        "metadata",
        "parent_step_idempotency_key",
        "run_id",
        "step_name",
        "transaction_id",
        "workflow_id",
    )

    def __init__(self, transaction: Any, step_name: str, action: str, attempt: int):
        self._transaction = transaction
        self.workflow_id = transaction.workflow_id
        self.transaction_id = transaction.transaction_id
        self.run_id = transaction.run_id
        self.step_name = step_name
        self.action = action
        self.attempt = attempt
        self.idempotency_key = (
            f"{transaction.workflow_id}:{transaction.transaction_id}:{step_name}:{action}"
        )
        self.event_group_id = transaction.metadata.get("eventGroupId")
        self.parent_step_idempotency_key = transaction.metadata.get("parentStepIdempotencyKey")
        self.container = transaction.container
        self.context = transaction.context
        self.metadata = {
            "model_id": transaction.workflow_id,
            "idempotency_key": self.idempotency_key,
            "step_id": step_name,
            "action_type": action,
            "attempt": attempt,
        }

    def get_step_result(self, step_id: str, action: str = HandlerType.INVOKE) -> Any:
        """The stored output of another step of this run (``None`` when it has none)."""
        return self._transaction.get_step_result(step_id, action)

    def __repr__(self) -> str:
        return f"<StepContext {self.idempotency_key} attempt={self.attempt}>"
