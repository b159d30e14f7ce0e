"""The execution loop: runs a transaction's steps, retries, times out and compensates.

Scheduling is driven by counters kept on the transaction: a step becomes ready when
the number of unsettled steps it depends on drops to zero, and compensates when every
step that followed it has finished compensating. Nothing here visits every step of the
flow per step, so a 20-step chain costs the same per step as a 5-step one.

All state changes, storage writes and events happen on the calling thread; only the
step handlers of a parallel batch run on pool threads (``calls``). The class is
assembled from its parts: ``outcomes`` (applying what an attempt returned),
``compensation``, ``timers`` (timeouts, retry intervals, waking up) and ``replay``
(fast-forwarding a rebuilt run).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from . import codec
from .calls import Attempt, Outcome, call, call_concurrently, run_coroutine
from .clock import clock
from .compensation import Compensation
from .context import StepContext
from .errors import (
    InvalidStepStateError,
    InvalidTransactionStateError,
    PermanentStepFailureError,
    StaleTransactionError,
    StepError,
    TransactionCanceledError,
    serialize_error,
)
from .outcomes import Outcomes
from .replay import Replay
from .runtime import runtime
from .states import HandlerType, StepState, StepStatus, TransactionState
from .timers import Timers
from .transaction import StepRun, Transaction, now_ms

logger = logging.getLogger("workflows_app")

__all__ = ["Orchestrator", "orchestrator", "run_coroutine"]


class Orchestrator(Outcomes, Compensation, Timers, Replay):
    """Drives transactions of any flow; holds no per-transaction state itself."""

    def execute(self, tx: Transaction) -> Transaction:
        """Run the transaction until it finishes or cannot progress without outside help."""
        if tx.state is TransactionState.NOT_STARTED:
            tx.state = TransactionState.INVOKING
            tx.started_at = tx.started_at or now_ms()
            tx.ready = list(tx.definition.root_indices)
            self._emit(tx, "on_begin")
        else:
            self._wake(tx)
            self._emit(tx, "on_resume")
        self._drive(tx)
        return tx

    def cancel(self, tx: Transaction) -> Transaction:
        """Revert a running or finished ``done`` transaction through compensation."""
        state = tx.state
        if state is TransactionState.FAILED:
            raise InvalidTransactionStateError("Cannot revert a permanent failed transaction.")
        if state in (TransactionState.COMPENSATING, TransactionState.WAITING_TO_COMPENSATE):
            raise InvalidTransactionStateError(
                "Cannot revert a transaction that is already compensating."
            )
        if state is TransactionState.REVERTED:
            raise InvalidTransactionStateError("Cannot revert a transaction that was reverted.")
        tx.cancelled_at = now_ms()
        tx.result = None
        if state is TransactionState.NOT_STARTED:
            tx.started_at = tx.cancelled_at
        tx.state = TransactionState.WAITING_TO_COMPENSATE
        self._cancel_waiting(tx)
        if tx.stored:
            runtime.storage.checkpoint(tx)
        self._emit(tx, "on_resume")
        self._drive(tx)
        return tx

    def _cancel_waiting(self, tx: Transaction) -> None:
        """Fail the steps of a canceled run that wait for an answer, so that its
        compensation need not wait for them."""
        for index in list(tx.waiting):
            run = tx.steps[index]
            job = Attempt(run, run.handler_type)
            job.outcome = Outcome.ERROR
            job.value = TransactionCanceledError(
                f"Transaction {tx.transaction_id} was canceled while {run.step_id} waited."
            )
            job.started = job.ended = clock.now()
            if job.handler_type == HandlerType.COMPENSATE:
                self._apply_compensation(tx, job)
            else:
                self._apply_failure(tx, job, permanent=True)

    def set_step_success(
        self, tx: Transaction, step_id: str, handler_type: str, response: Any
    ) -> Transaction:
        """Complete a step that waits for an outside response, then continue the run."""
        run = self._waiting_step(tx, step_id, handler_type, "set step success")
        job = Attempt(run, handler_type)
        job.outcome, job.value = Outcome.OK, response
        return self._respond(tx, job)

    def set_step_failure(
        self,
        tx: Transaction,
        step_id: str,
        handler_type: str,
        error: Any,
        force_permanent_failure: bool = False,
    ) -> Transaction:
        """Fail a waiting step from outside (its retries apply unless forced)."""
        run = self._waiting_step(tx, step_id, handler_type, "set step failure")
        job = Attempt(run, handler_type)
        if force_permanent_failure and not isinstance(error, PermanentStepFailureError):
            message = serialize_error(error)["message"]
            error = PermanentStepFailureError(message)
        job.outcome, job.value = Outcome.ERROR, error
        return self._respond(tx, job)

    def _respond(self, tx: Transaction, job: Attempt) -> Transaction:
        """Apply an outcome that came from outside the run, then continue it.

        The attempt keeps its start (when it began to wait) and ends now, so its log
        row spans the wait. The steps that follow run here, in the caller, unless
        ``runtime.responses_in_background`` hands them to a worker.
        """
        job.ended = clock.now()
        started = job.run.last_attempt
        job.started = started / 1000 if started is not None else job.ended
        self._emit(tx, "on_resume")
        try:
            self._apply(tx, job, from_outside=True)
        except StaleTransactionError as exc:
            self._stop_stale(tx, exc)
            return tx
        if runtime.responses_in_background:
            self._continue_in_background(tx)
        self._drive(tx)
        return tx

    @staticmethod
    def _continue_in_background(tx: Transaction) -> None:
        """Ask for the rest of a stored run to go to a worker (not from inside one)."""
        if tx.stored and not tx.in_background and not tx.replay:
            tx.hand_off = True

    @staticmethod
    def _stop_stale(tx: Transaction, exc: StaleTransactionError) -> None:
        tx.stale = True
        logger.info("Stopping %s:%s: %s", tx.workflow_id, tx.transaction_id, exc)

    def check_waiting(
        self, tx: Transaction, step_id: str, handler_type: str, what: str = "set step response"
    ) -> None:
        """Raise ``InvalidStepStateError`` unless the step waits for a response."""
        self._waiting_step(tx, step_id, handler_type, what)

    def retry_compensation(self, tx: Transaction) -> Transaction:
        """Run the failed compensations of a ``failed`` transaction again."""
        if tx.state is not TransactionState.FAILED:
            raise InvalidTransactionStateError(
                f"Only a failed transaction's compensation can be retried (state is {tx.state})."
            )
        failed = [run for run in tx.steps if run.step_failed and run.comp_state is StepState.FAILED]
        if not failed:
            raise InvalidTransactionStateError("No compensation failed in this transaction.")
        tx.errors = [e for e in tx.errors if e.handler_type != HandlerType.COMPENSATE]
        tx.comp_failed = False
        tx.state = TransactionState.COMPENSATING
        tx.comp_unsettled = len(failed)
        tx.ready = []
        for run in failed:
            run.comp_state = StepState.NOT_STARTED
            run.comp_status = StepStatus.IDLE
            run.failures = 0
            tx.ready.append(run.node.index)
        if tx.stored:
            runtime.storage.checkpoint(tx)
        self._emit(tx, "on_resume")
        self._drive(tx)
        return tx

    def retry_step(
        self, tx: Transaction, step_id: str, handler_type: str = HandlerType.INVOKE
    ) -> Transaction:
        """Invoke a step that waits for a response once more."""
        run = self._waiting_step(tx, step_id, handler_type, "retry step")
        run.request_retry(now_ms())
        tx.waiting.discard(run.node.index)
        tx.ready.append(run.node.index)
        # As Medusa schedules a retry at once: a worker invokes the step again.
        self._continue_in_background(tx)
        self._emit(tx, "on_resume")
        self._drive(tx)
        return tx

    def _drive(self, tx: Transaction) -> None:
        try:
            self._loop(tx)
        except StaleTransactionError as exc:
            self._stop_stale(tx, exc)

    def _loop(self, tx: Transaction) -> None:
        self._advance(tx)
        while tx.stored and not tx.has_finished() and self._timeout_due(tx):
            # A timeout passed while the run was busy here (a waiting step's, while
            # other steps ran): act on it now rather than arm a timer for a moment
            # already gone.
            self._time_out_past(tx, now_ms())
            self._advance(tx)
        self._stop(tx)

    def _advance(self, tx: Transaction) -> None:
        """Run the state machine until the run finishes or has nothing to start."""
        while True:
            state = tx.state
            if state is TransactionState.INVOKING:
                if self._transaction_timed_out(tx):
                    self._timeout_transaction(tx)
                    continue
                if tx.cancelled_at:
                    # Canceled while running here (a cancel requested from elsewhere
                    # is noted by the storage at a step boundary): start nothing more.
                    tx.state = TransactionState.WAITING_TO_COMPENSATE
                    self._cancel_waiting(tx)
                    continue
                if tx.ready:
                    if not self._run_ready(tx, HandlerType.INVOKE):
                        break
                    continue
                if tx.unsettled == 0:
                    self._finish(tx, TransactionState.DONE)
                break
            if state is TransactionState.WAITING_TO_COMPENSATE:
                if tx.waiting:
                    break
                self._begin_compensation(tx)
                continue
            if state is TransactionState.COMPENSATING:
                if tx.ready:
                    if not self._run_ready(tx, HandlerType.COMPENSATE):
                        break
                    continue
                if tx.comp_unsettled == 0:
                    failed = tx.comp_failed
                    self._finish(
                        tx, TransactionState.FAILED if failed else TransactionState.REVERTED
                    )
                break
            break

    def _stop(self, tx: Transaction) -> None:
        """Arm the timers a stored run waits on and hand it back to the storage."""
        tx.has_waiting_steps = bool(tx.waiting)
        if tx.hand_off and not tx.ready:
            # Nothing left for a worker to start: the run waits, or it finished.
            tx.hand_off = False
        if tx.stored and not tx.has_finished():
            if tx.waiting or tx.scheduled or tx.hand_off:
                self._arm_timers(tx)
            if tx.hand_off:
                tx.hand_off = False
                workflow_id, transaction_id = tx.workflow_id, tx.transaction_id
                runtime.storage.save(
                    tx, then=lambda: runtime.scheduler.enqueue(workflow_id, transaction_id)
                )
            else:
                runtime.storage.save(tx)

    @staticmethod
    def _must_hand_off(tx: Transaction, batch: list[int], handler_type: str) -> bool:
        """Whether the batch holds a handler that a worker must run.

        Outside a worker, a run stops before a ``background_execution`` step, a nested
        async sub-workflow or an async compensation and is queued for a worker. Other
        ``async_`` steps run their handler here, where ``run()`` was called, as in
        Medusa: a handler that returns no ``StepResponse`` leaves the step waiting.
        """
        if needs_worker(tx, batch, handler_type):
            tx.hand_off = True
            return True
        return False

    def _run_ready(self, tx: Transaction, handler_type: str) -> bool:
        """Run the ready steps here; ``False`` when they go to a worker instead (the run
        is being handed over, or one of them is an async step that must be)."""
        if tx.hand_off or (
            tx.definition.has_async and self._must_hand_off(tx, tx.ready, handler_type)
        ):
            return False
        batch, tx.ready = tx.ready, []
        self._run_batch(tx, batch, handler_type)
        return True

    def _run_batch(self, tx: Transaction, batch: list[int], handler_type: str) -> None:
        now = now_ms()
        jobs: list[Attempt] = []
        compensating = handler_type == HandlerType.COMPENSATE
        for index in batch:
            run = tx.steps[index]
            node = run.node
            if compensating:
                if node.options.no_compensation or node.compensate_fn is None:
                    run.comp_state = StepState.REVERTED
                    run.comp_status = StepStatus.OK
                    tx.has_reverted_steps = True
                    self._settle_compensation(tx, run)
                    continue
                run.comp_state = StepState.COMPENSATING
                run.comp_status = StepStatus.WAITING
            else:
                run.invoke_state = StepState.INVOKING
                run.invoke_status = StepStatus.WAITING
                if run.started_at is None:
                    run.started_at = now
            run.attempts += 1
            run.last_attempt = now
            job = Attempt(run, handler_type)
            jobs.append(job)
            self._emit(tx, "on_step_begin", step=run)
            self._prepare(tx, job)
        live = [job for job in jobs if job.outcome is None]
        if len(live) == 1:
            call(live[0])
        elif live:
            call_concurrently(live)
        deadline = None if compensating or not live else self._deadline(tx)
        overran = []
        for job in jobs:
            if self._overran(job, deadline):
                overran.append(job)
                continue
            self._apply(tx, job)
        if overran:
            self._time_out_batch(tx, overran, tx.timed_out_at or deadline or now_ms())

    def _prepare(self, tx: Transaction, job: Attempt) -> None:
        run = job.run
        node = run.node
        if tx.replay:
            record = tx.replay.pop((node.index, job.handler_type, run.attempts), None)
            if record is not None:
                self._load_record(job, record)
                if record.started_at is not None:
                    run.last_attempt = record.started_at
                    if run.attempts == 1:
                        run.started_at = record.started_at
                return
        if job.handler_type == HandlerType.INVOKE:
            for condition in node.conditions:
                try:
                    if not condition(tx):
                        job.outcome = Outcome.SKIP
                        return
                except Exception as exc:
                    job.outcome, job.value = Outcome.ERROR, exc
                    return
            try:
                job.input = codec.roundtrip(node.resolve_input(tx))
            except Exception as exc:
                job.outcome, job.value = Outcome.ERROR, exc
                return
            job.fn = node.invoke_fn
            job.is_coroutine = node.invoke_is_async
        else:
            entry = tx.invoke.get(node.step_id)
            job.input = None if entry is None else entry.get("compensateInput")
            job.fn = node.compensate_fn
            job.is_coroutine = node.compensate_is_async
        job.ctx = StepContext(tx, node.step_id, job.handler_type, run.attempts)

    def _finish(self, tx: Transaction, state: TransactionState) -> None:
        tx.state = state
        tx.ended_at = now_ms()
        tx.hand_off = False
        # As in Medusa, the result is resolved whatever the final state, from what
        # completed; a result transform that raises adds its error next to the steps'.
        resolver = tx.definition.result_resolver
        if tx.result_from is not None:
            tx.result = tx.get_step_result(tx.result_from)
        elif resolver is not None:
            try:
                tx.result = resolver(tx)
                if tx.stored:
                    tx.result = codec.to_json(tx.result)
            except Exception as exc:
                tx.errors.append(StepError("_result", HandlerType.INVOKE, serialize_error(exc)))
                tx.result = None
        else:
            tx.result = None
        if tx.stored:
            runtime.storage.finish(tx)
        self._emit(tx, "on_finish", result=tx.result, errors=tx.get_errors(HandlerType.INVOKE))
        if tx.notify_parent and runtime.nested_finished is not None:
            # A nested child that outlived its parent's handler completes the parent step.
            runtime.nested_finished(tx)

    def _waiting_step(self, tx: Transaction, step_id: str, handler_type: str, what: str) -> StepRun:
        node = tx.definition.by_step_id.get(step_id)
        if node is None:
            raise InvalidStepStateError(f"Step {step_id!r} not found.")
        run = tx.steps[node.index]
        status = run.comp_status if handler_type == HandlerType.COMPENSATE else run.invoke_status
        if handler_type == HandlerType.COMPENSATE and not run.step_failed:
            raise InvalidStepStateError("Incorrect handler type.")
        if status is not StepStatus.WAITING or node.index not in tx.waiting:
            raise InvalidStepStateError(f"Cannot {what} when status is {status}")
        return run


orchestrator = Orchestrator()


def needs_worker(tx: Transaction, batch: Iterable[int], handler_type: str) -> bool:
    """Whether the run, here, must stop before ``batch`` and be queued for a worker
    (see :meth:`Orchestrator._must_hand_off`). The storage asks it for the root steps
    when a run starts: a run handed over at once needs no synchronous commit of its
    own start, the hand-over's covers it."""
    if tx.in_background or not tx.stored or tx.replay or not tx.definition.has_async:
        return False
    steps = tx.steps
    for index in batch:
        node = steps[index].node
        options = node.options
        if handler_type == HandlerType.INVOKE:
            if options.async_ and (options.background_execution or options.nested):
                return True
        elif (
            options.compensate_async
            and not options.no_compensation
            and node.compensate_fn is not None
        ):
            return True
    return False
