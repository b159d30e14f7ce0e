"""Replay: a rebuilt transaction catches up with its recorded attempts.

``fast_forward`` applies the stored attempt records in order without calling
handlers, writing or emitting anything, so a resumed run never repeats a step that
completed before the crash.
"""

from __future__ import annotations

from .calls import Attempt, Outcome
from .errors import TransactionTimeoutError
from .responses import StepResponse
from .states import AttemptStatus, HandlerType, TransactionState
from .storage import AttemptRecord
from .transaction import Transaction


class Replay:
    """The replay part of :class:`~.orchestrator.Orchestrator`."""

    def fast_forward(self, tx: Transaction) -> Transaction:
        """Apply a rebuilt transaction's recorded attempts, in order, without running
        handlers, writing or emitting anything; steps with no record stay queued."""
        events, tx.events = tx.events, None
        try:
            if tx.state is TransactionState.NOT_STARTED:
                tx.state = TransactionState.INVOKING
                tx.ready = list(tx.definition.root_indices)
            while tx.replay:
                state = tx.state
                if state is TransactionState.INVOKING:
                    if (tx.cancelled_at or tx.timed_out_at) and not any(
                        k[1] == HandlerType.INVOKE for k in tx.replay
                    ):
                        self._replay_interruption(tx)
                        continue
                    handler_type = HandlerType.INVOKE
                elif state is TransactionState.WAITING_TO_COMPENSATE:
                    if tx.waiting:
                        break
                    self._begin_compensation(tx)
                    continue
                elif state is TransactionState.COMPENSATING:
                    handler_type = HandlerType.COMPENSATE
                else:
                    break
                for index in list(tx.waiting):
                    # Invoked again (retry_step, retry_interval_awaiting) after it waited.
                    run = tx.steps[index]
                    if (index, run.handler_type, run.attempts + 1) in tx.replay:
                        tx.waiting.discard(index)
                        tx.ready.append(index)
                batch = [i for i in tx.ready if self._replayable(tx, i, handler_type)]
                if not batch:
                    break
                chosen = set(batch)
                tx.ready = [i for i in tx.ready if i not in chosen]
                self._run_batch(tx, batch, handler_type)
            if (tx.cancelled_at or tx.timed_out_at) and tx.state is TransactionState.INVOKING:
                self._replay_interruption(tx)
            for index in list(tx.waiting):
                # retry_step() asked for another attempt that no worker has made yet.
                if tx.steps[index].retry_pending:
                    tx.waiting.discard(index)
                    tx.ready.append(index)
        finally:
            tx.replay = {}
            tx.events = events
        return tx

    def _replay_interruption(self, tx: Transaction) -> None:
        """A rebuilt run that was cancelled or timed out heads for compensation."""
        if tx.timed_out_at:
            self._timeout_transaction(tx, at=tx.timed_out_at)
        else:
            tx.state = TransactionState.WAITING_TO_COMPENSATE

    @staticmethod
    def _replayable(tx: Transaction, index: int, handler_type: str) -> bool:
        run = tx.steps[index]
        if (index, handler_type, run.attempts + 1) in tx.replay:
            return True
        node = run.node
        return handler_type == HandlerType.COMPENSATE and (
            node.options.no_compensation or node.compensate_fn is None
        )

    @staticmethod
    def _load_record(job: Attempt, record: AttemptRecord) -> None:
        job.replayed = True
        job.input = record.input
        job.started = (record.started_at or 0) / 1000
        job.ended = (record.ended_at or 0) / 1000
        status = record.status
        if status == AttemptStatus.COMPLETED or status == AttemptStatus.TIMED_OUT:
            job.outcome = Outcome.OK
            job.value = StepResponse(record.output, record.compensate_input)
            error = record.error or {}
            job.timed_out_run = error.get("name") == TransactionTimeoutError.__name__
        elif status == AttemptStatus.SKIPPED:
            job.outcome = Outcome.SKIP
        elif status == AttemptStatus.WAITING:
            job.outcome = Outcome.WAIT
        else:
            job.outcome = Outcome.ERROR
            job.value = record.error or {"message": "Unknown error"}
