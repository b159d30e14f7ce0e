"""The storage protocol the orchestrator checkpoints through, and its in-memory form.

Non-stored workflows never reach a storage. Stored ones call ``start`` once, then
``record_attempt`` for every finished step attempt (the checkpoint), ``save`` when a
run stops without finishing (async hand-over, paused or scheduled retry) and
``finish`` at the end; ``checkpoint`` writes the state without handing over (a
cancel starting). ``load`` returns a transaction to resume, or ``None``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .definition import FlowDefinition
from .errors import TransactionAlreadyStarted
from .transaction import Transaction


@dataclass(slots=True)
class AttemptRecord:
    """One finished attempt of a step's invoke or compensate handler."""

    step_index: int
    step_id: str
    step_path: str
    handler_type: str
    attempt: int
    status: str  # COMPLETED, FAILED, TIMED_OUT, SKIPPED, WAITING
    input: Any = None
    output: Any = None
    compensate_input: Any = None
    error: dict | None = None
    started_at: int | None = None
    ended_at: int | None = None
    operation: str = "step"
    iteration: int = 0
    total_items: int | None = None


class Storage(Protocol):
    def start(self, tx: Transaction) -> None: ...

    def load(
        self, definition: FlowDefinition, transaction_id: str, *, include_finished: bool = False
    ) -> Transaction | None: ...

    def record_attempt(self, tx: Transaction, record: AttemptRecord) -> None: ...

    def save(self, tx: Transaction, then: Callable[[], None] | None = None) -> None:
        """Hand the transaction over (it stops without finishing). With ``then``, the
        run goes to a worker: call ``then()`` (the enqueue) with the write, atomically
        where the storage can."""

    def checkpoint(self, tx: Transaction) -> None: ...

    def peek(self, definition: FlowDefinition, transaction_id: str) -> Transaction | None:
        """The unfinished transaction, read without taking it over."""

    def finish(self, tx: Transaction) -> None: ...


class InMemoryStorage:
    """Keeps stored transactions in this process (the default outside Django).

    Unfinished transactions stay until they finish; finished ones are kept only when
    the workflow has a retention time, as the database storage does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[tuple[str, str], Transaction] = {}
        self._finished: dict[tuple[str, str], Transaction] = {}
        self.attempts: dict[tuple[str, str, str], list[AttemptRecord]] = {}

    def start(self, tx: Transaction) -> None:
        key = (tx.workflow_id, tx.transaction_id)
        with self._lock:
            if key in self._live:
                raise TransactionAlreadyStarted(tx.transaction_id)
            self._live[key] = tx

    def load(
        self, definition: FlowDefinition, transaction_id: str, *, include_finished: bool = False
    ) -> Transaction | None:
        key = (definition.workflow_id, transaction_id)
        with self._lock:
            tx = self._live.get(key)
            if tx is None and include_finished:
                tx = self._finished.get(key)
            return tx

    def record_attempt(self, tx: Transaction, record: AttemptRecord) -> None:
        key = (tx.workflow_id, tx.transaction_id, tx.run_id)
        self.attempts.setdefault(key, []).append(record)

    def save(self, tx: Transaction, then: Callable[[], None] | None = None) -> None:
        if then is not None:
            then()

    def checkpoint(self, tx: Transaction) -> None:
        return None

    def peek(self, definition: FlowDefinition, transaction_id: str) -> Transaction | None:
        return self.load(definition, transaction_id)

    def finish(self, tx: Transaction) -> None:
        key = (tx.workflow_id, tx.transaction_id)
        with self._lock:
            self._live.pop(key, None)
            self.attempts.pop((tx.workflow_id, tx.transaction_id, tx.run_id), None)
            if tx.definition.options.get("retention_time"):
                self._finished[key] = tx
            else:
                self._finished.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._live.clear()
            self._finished.clear()
            self.attempts.clear()
