"""One execution of a flow: per-step runtime state, the shared context and the errors."""

from __future__ import annotations

from typing import Any

from .clock import now_ms
from .definition import ROOT_ID, FlowDefinition, StepNode
from .errors import StepError
from .states import FINISHED_STATES, HandlerType, StepState, StepStatus, TransactionState

__all__ = ["StepRun", "Transaction", "now_ms"]


class StepRun:
    """Runtime state of one step in one transaction (Medusa's ``TransactionStep``)."""

    __slots__ = (
        "attempts",
        "comp_state",
        "comp_status",
        "failures",
        "has_scheduled_retry",
        "invoke_state",
        "invoke_status",
        "last_attempt",
        "node",
        "retry_request",
        "retry_rescheduled_at",
        "started_at",
        "step_failed",
        "temporary_failed_at",
        "timed_out_at",
    )

    def __init__(self, node: StepNode):
        self.node = node
        self.invoke_state = StepState.NOT_STARTED
        self.invoke_status = StepStatus.IDLE
        self.comp_state = StepState.DORMANT
        self.comp_status = StepStatus.IDLE
        self.attempts = 0
        self.failures = 0
        self.last_attempt: int | None = None
        self.started_at: int | None = None
        self.step_failed = False
        self.temporary_failed_at: int | None = None
        self.timed_out_at: int | None = None
        self.retry_rescheduled_at: int | None = None
        # retry_step()'s request: the handler it asked to run again and its attempt
        # count then. It stands until an attempt beyond that count exists (a time
        # cannot tell a request from an attempt made in the same millisecond).
        self.retry_request: tuple[str, int] | None = None
        self.has_scheduled_retry = False

    @property
    def id(self) -> str:
        return self.node.id

    @property
    def retry_pending(self) -> bool:
        """Whether retry_step() asked for an attempt that has not been made yet."""
        if self.retry_request is not None:
            handler_type, after = self.retry_request
            return handler_type == self.handler_type and self.attempts <= after
        # Runs stored before the attempt count was kept.
        requested = self.retry_rescheduled_at
        return bool(requested) and requested > (self.last_attempt or 0)

    def request_retry(self, at: int) -> None:
        """Note retry_step()'s request for another attempt of the current handler."""
        self.retry_rescheduled_at = at
        self.retry_request = (self.handler_type, self.attempts)

    def restore_retry_request(self, flow: dict) -> None:
        """Take a retry_step() request back from the step's stored flow data."""
        self.retry_rescheduled_at = flow.get("retryRescheduledAt") or None
        request = flow.get("retryRequest")
        if request:
            self.retry_request = (request["handlerType"], request["afterAttempt"])

    @property
    def step_id(self) -> str:
        return self.node.step_id

    @property
    def handler_type(self) -> str:
        return HandlerType.COMPENSATE if self.step_failed else HandlerType.INVOKE

    @property
    def state(self) -> StepState:
        return self.comp_state if self.step_failed else self.invoke_state

    @property
    def status(self) -> StepStatus:
        return self.comp_status if self.step_failed else self.invoke_status

    def to_flow(self) -> dict:
        node = self.node
        data = {
            "id": node.id,
            "depth": node.depth,
            "definition": node.definition(),
            "invoke": {"state": str(self.invoke_state), "status": str(self.invoke_status)},
            "compensate": {"state": str(self.comp_state), "status": str(self.comp_status)},
            "attempts": self.attempts,
            "failures": self.failures,
            "lastAttempt": self.last_attempt,
            "startedAt": self.started_at,
            "saveResponse": node.options.save_response,
            "stepFailed": self.step_failed,
            "next": [child.id for child in node.tree_children],
        }
        for key, value in (
            ("temporaryFailedAt", self.temporary_failed_at),
            ("timedOutAt", self.timed_out_at),
            ("retryRescheduledAt", self.retry_rescheduled_at),
        ):
            if value is not None:
                data[key] = value
        if self.retry_request is not None:
            handler_type, after = self.retry_request
            data["retryRequest"] = {"handlerType": str(handler_type), "afterAttempt": after}
        if self.has_scheduled_retry:
            data["hasScheduledRetry"] = True
        return data

    def __repr__(self) -> str:
        return f"<StepRun {self.node.id} {self.state}/{self.status}>"


class Transaction:
    """A running or finished execution (Medusa's ``DistributedTransaction``)."""

    def __init__(
        self,
        definition: FlowDefinition,
        *,
        transaction_id: str,
        run_id: str,
        payload: Any,
        context: dict | None = None,
        metadata: dict | None = None,
        container: Any = None,
        stored: bool = False,
    ):
        self.definition = definition
        self.workflow_id = definition.workflow_id
        self.transaction_id = transaction_id
        self.run_id = run_id
        self.payload = payload
        self.context = context if context is not None else {}
        self.metadata = metadata if metadata is not None else {}
        self.container = container
        self.stored = stored
        self.state = TransactionState.NOT_STARTED
        self.steps = [StepRun(node) for node in definition.nodes]
        self.invoke: dict[str, Any] = {}
        self.compensate: dict[str, Any] = {}
        self.errors: list[StepError] = []
        self.started_at: int | None = None
        self.ended_at: int | None = None
        self.timed_out_at: int | None = None
        self.cancelled_at: int | None = None
        self.has_failed_steps = False
        self.has_skipped_steps = False
        self.has_skipped_on_failure_steps = False
        self.has_reverted_steps = False
        self.has_waiting_steps = False
        # Scheduling bookkeeping (never persisted; rebuilt on load).
        self.pending = list(definition.deps_counts)
        self.unsettled = len(self.steps)
        self.ready: list[int] = []
        self.waiting: set[int] = set()
        self.paused: list[int] = []
        self.scheduled: set[int] = set()
        self.comp_pending: list[int] = []
        self.comp_unsettled = 0
        self.comp_failed = False
        self.last_settled: StepRun | None = None
        self.result: Any = None
        self.result_from: str | None = None
        self.transform_cache: dict[int, Any] = {}
        self.events: dict[str, Any] | None = None
        self.replay: dict[tuple[int, str, int], Any] = {}
        self.nested: dict[str, Any] = {}
        self.storage_handle: Any = None
        self.stale = False
        # Background execution: ``in_background`` is set by the worker that resumed the
        # run (async handlers then run inline); ``hand_off`` asks the storage to queue
        # the run for a worker when it saves; ``wake_at`` (ms) is the earliest timer.
        self.in_background = False
        self.hand_off = False
        self.wake_at: int | None = None
        self.notify_parent = bool(self.metadata.get("nestedAsync"))
        # for_each: iteration rows of a rebuilt run, and the loops' own bookkeeping.
        self.iteration_records: list = []
        self._for_each_state: dict = {}

    # Public API (Medusa's getters, in snake_case)

    def get_state(self) -> TransactionState:
        return self.state

    def has_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def is_partially_completed(self) -> bool:
        """Medusa's rule: some step failed (and was let through) or was skipped."""
        return self.has_failed_steps or self.has_skipped_steps

    @property
    def model_id(self) -> str:
        return self.workflow_id

    def get_context(self) -> dict:
        return {"payload": self.payload, "invoke": self.invoke, "compensate": self.compensate}

    def get_errors(self, handler_type: str | None = None) -> list[StepError]:
        if handler_type is None:
            return list(self.errors)
        return [e for e in self.errors if e.handler_type == handler_type]

    def get_step(self, step_id: str) -> StepRun:
        return self.steps[self.definition.by_step_id[step_id].index]

    def get_step_result(self, step_id: str, handler_type: str = HandlerType.INVOKE) -> Any:
        store = self.invoke if handler_type == HandlerType.INVOKE else self.compensate
        entry = store.get(step_id)
        return None if entry is None else entry.get("output")

    def get_flow(self) -> dict:
        """The flow as a dict with Medusa's camelCase keys (the ``execution`` column)."""
        steps: dict[str, Any] = {
            ROOT_ID: {"id": ROOT_ID, "next": [n.id for n in self.definition.roots]}
        }
        for run in self.steps:
            steps[run.node.id] = run.to_flow()
        return {
            "modelId": self.workflow_id,
            "options": self.definition.options,
            "metadata": self.metadata,
            "transactionId": self.transaction_id,
            "runId": self.run_id,
            "state": str(self.state),
            "startedAt": self.started_at,
            "timedOutAt": self.timed_out_at,
            "cancelledAt": self.cancelled_at,
            "hasAsyncSteps": self.definition.has_async,
            "hasFailedSteps": self.has_failed_steps,
            "hasSkippedSteps": self.has_skipped_steps,
            "hasSkippedOnFailureSteps": self.has_skipped_on_failure_steps,
            "hasWaitingSteps": self.has_waiting_steps,
            "hasRevertedSteps": self.has_reverted_steps,
            "definition": self.definition.describe(),
            "steps": steps,
        }

    def __repr__(self) -> str:
        return f"<Transaction {self.workflow_id}:{self.transaction_id} {self.state}>"
