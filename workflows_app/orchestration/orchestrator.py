"""The execution loop: runs a transaction's steps, retries, times out and compensates.

Scheduling is driven by counters kept on the transaction: a step becomes ready when
the number of unsettled steps it depends on drops to zero, and compensates when every
step that followed it has finished compensating. Nothing here visits every step of the
flow per step, so a 20-step chain costs the same per step as a 5-step one.

All state changes, storage writes and events happen on the calling thread; only the
step handlers of a parallel batch run on pool threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Any

from . import serialization
from .clock import clock
from .context import StepContext
from .errors import (
    InvalidStepStateError,
    InvalidTransactionStateError,
    NonSerializableCheckpointError,
    PayloadTooLargeError,
    PermanentStepFailureError,
    StaleTransactionError,
    StepError,
    TransactionCanceledError,
    TransactionStepTimeoutError,
    TransactionTimeoutError,
    serialize_error,
)
from .responses import SKIP, StepResponse
from .runtime import runtime
from .states import StepState, StepStatus, TransactionState
from .storage import AttemptRecord
from .transaction import StepRun, Transaction, now_ms

logger = logging.getLogger("workflows_app")

INVOKE = "invoke"
COMPENSATE = "compensate"
LOOP = "builtin:loop"

_OK = "ok"
_ERROR = "error"
_SKIP = "skip"
_WAIT = "wait"

_local = threading.local()

# Error names that end a step at once, also when replayed from a stored record.
_PERMANENT_ERRORS = frozenset(
    {"PermanentStepFailure", "NonSerializableCheckpointError", "PayloadTooLargeError"}
)


def run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion on this thread's own event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = getattr(_local, "loop", None)
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            _local.loop = loop
        return loop.run_until_complete(coro)
    # Called from inside a running loop (run() used from async code): use a pool thread.
    return runtime.pool().submit(run_coroutine, coro).result()


class _Attempt:
    """One handler call being prepared, executed and then applied."""

    __slots__ = (
        "ctx",
        "ended",
        "fn",
        "handler_type",
        "input",
        "is_coroutine",
        "outcome",
        "replayed",
        "run",
        "started",
        "value",
    )

    def __init__(self, run: StepRun, handler_type: str):
        self.run = run
        self.handler_type = handler_type
        self.input: Any = None
        self.fn: Any = None
        self.ctx: StepContext | None = None
        self.is_coroutine = False
        self.outcome: str | None = None
        self.value: Any = None
        self.replayed = False
        self.started = 0.0
        self.ended = 0.0


def _call(job: _Attempt) -> None:
    job.started = clock.now()
    try:
        value = job.fn(job.input, job.ctx)
        if job.is_coroutine:
            value = run_coroutine(value)
        job.outcome, job.value = _OK, value
    except StaleTransactionError:
        # Another executor owns the run (seen by a handler that writes, e.g. a loop):
        # stop this branch instead of failing the step.
        raise
    except (Exception, SystemExit) as exc:
        job.outcome, job.value = _ERROR, exc
    job.ended = clock.now()


async def _acall(job: _Attempt) -> None:
    job.started = clock.now()
    try:
        job.outcome, job.value = _OK, await job.fn(job.input, job.ctx)
    except (Exception, SystemExit) as exc:
        job.outcome, job.value = _ERROR, exc
    job.ended = clock.now()


async def _gather(jobs: list[_Attempt]) -> None:
    await asyncio.gather(*(_acall(job) for job in jobs))


def _call_concurrently(jobs: list[_Attempt]) -> None:
    """Run a batch's handlers together: coroutines gathered, plain functions on the pool."""
    if runtime.parallel_threads <= 1:
        for job in jobs:
            _call(job)
        return
    coroutines = [job for job in jobs if job.is_coroutine]
    # Loops write their iteration rows as they go: they stay on the calling thread,
    # whose database connection holds the run (and any transaction around it).
    here = [job for job in jobs if not job.is_coroutine and job.run.node.operation == LOOP]
    plain = [job for job in jobs if not job.is_coroutine and job.run.node.operation != LOOP]
    if not here and not coroutines and plain:
        here.append(plain.pop(0))
    pool = runtime.pool()
    futures = [(job, pool.submit(_call, job)) for job in plain]
    if coroutines:
        run_coroutine(_gather(coroutines))
    for job in here:
        _call(job)
    for job, future in futures:
        # A job no pool thread has picked up yet runs here, so nested runs cannot deadlock.
        if future.cancel():
            _call(job)
        else:
            future.result()


class Orchestrator:
    """Drives transactions of any flow; holds no per-transaction state itself."""

    # Entry points

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
        for index in list(tx.waiting):
            run = tx.steps[index]
            job = _Attempt(run, run.handler_type)
            job.outcome = _ERROR
            job.value = TransactionCanceledError(
                f"Transaction {tx.transaction_id} was canceled while {run.action} waited."
            )
            job.started = job.ended = clock.now()
            if job.handler_type == COMPENSATE:
                self._apply_compensation(tx, job)
            else:
                self._apply_failure(tx, job, permanent=True)
        if tx.stored:
            runtime.storage.checkpoint(tx)
        self._emit(tx, "on_resume")
        self._drive(tx)
        return tx

    def set_step_success(
        self, tx: Transaction, action: str, handler_type: str, response: Any
    ) -> Transaction:
        """Complete a step that waits for an outside response, then continue the run."""
        run = self._waiting_step(tx, action, handler_type, "set step success")
        job = _Attempt(run, handler_type)
        job.outcome, job.value = _OK, response
        return self._respond(tx, job)

    def set_step_failure(
        self,
        tx: Transaction,
        action: str,
        handler_type: str,
        error: Any,
        force_permanent_failure: bool = False,
    ) -> Transaction:
        """Fail a waiting step from outside (its retries apply unless forced)."""
        run = self._waiting_step(tx, action, handler_type, "set step failure")
        job = _Attempt(run, handler_type)
        if force_permanent_failure and not isinstance(error, PermanentStepFailureError):
            message = serialize_error(error)["message"]
            error = PermanentStepFailureError(message)
        job.outcome, job.value = _ERROR, error
        return self._respond(tx, job)

    def _respond(self, tx: Transaction, job: _Attempt) -> Transaction:
        """Apply an outcome that came from outside the run, then continue it."""
        job.started = job.ended = clock.now()
        self._emit(tx, "on_resume")
        try:
            self._apply(tx, job, from_outside=True)
        except StaleTransactionError as exc:
            self._stop_stale(tx, exc)
            return tx
        self._drive(tx)
        return tx

    @staticmethod
    def _stop_stale(tx: Transaction, exc: StaleTransactionError) -> None:
        tx.stale = True
        logger.info("Stopping %s:%s: %s", tx.workflow_id, tx.transaction_id, exc)

    def check_waiting(
        self, tx: Transaction, action: str, handler_type: str, what: str = "set step response"
    ) -> None:
        """Raise ``InvalidStepStateError`` unless the step waits for a response."""
        self._waiting_step(tx, action, handler_type, what)

    def retry_compensation(self, tx: Transaction) -> Transaction:
        """Run the failed compensations of a ``failed`` transaction again."""
        if tx.state is not TransactionState.FAILED:
            raise InvalidTransactionStateError(
                f"Only a failed transaction's compensation can be retried (state is {tx.state})."
            )
        failed = [run for run in tx.steps if run.step_failed and run.comp_state is StepState.FAILED]
        if not failed:
            raise InvalidTransactionStateError("No compensation failed in this transaction.")
        tx.errors = [e for e in tx.errors if e.handler_type != COMPENSATE]
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

    def retry_step(self, tx: Transaction, action: str, handler_type: str = INVOKE) -> Transaction:
        """Invoke a step that waits for a response once more."""
        run = self._waiting_step(tx, action, handler_type, "retry step")
        run.retry_rescheduled_at = now_ms()
        tx.waiting.discard(run.node.index)
        tx.ready.append(run.node.index)
        self._emit(tx, "on_resume")
        self._drive(tx)
        return tx

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
                        k[1] == INVOKE for k in tx.replay
                    ):
                        self._replay_interruption(tx)
                        continue
                    handler_type = INVOKE
                elif state is TransactionState.WAITING_TO_COMPENSATE:
                    if tx.waiting:
                        break
                    self._begin_compensation(tx)
                    continue
                elif state is TransactionState.COMPENSATING:
                    handler_type = COMPENSATE
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
                run = tx.steps[index]
                requested = run.retry_rescheduled_at
                if requested and requested >= (run.last_attempt or 0):
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
        return handler_type == COMPENSATE and (
            node.options.no_compensation or node.compensate_fn is None
        )

    # The loop

    def _drive(self, tx: Transaction) -> None:
        try:
            self._loop(tx)
        except StaleTransactionError as exc:
            self._stop_stale(tx, exc)

    def _loop(self, tx: Transaction) -> None:
        while True:
            state = tx.state
            if state is TransactionState.INVOKING:
                if self._transaction_timed_out(tx):
                    self._timeout_transaction(tx)
                    continue
                if tx.cancelled_at:
                    tx.state = TransactionState.WAITING_TO_COMPENSATE
                    continue
                if tx.ready:
                    batch, tx.ready = tx.ready, []
                    if tx.definition.has_async and self._must_hand_off(tx, batch, INVOKE):
                        tx.ready = batch
                        break
                    self._run_batch(tx, batch, INVOKE)
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
                    batch, tx.ready = tx.ready, []
                    if tx.definition.has_async and self._must_hand_off(tx, batch, COMPENSATE):
                        tx.ready = batch
                        break
                    self._run_batch(tx, batch, COMPENSATE)
                    continue
                if tx.comp_unsettled == 0:
                    failed = tx.comp_failed
                    self._finish(
                        tx, TransactionState.FAILED if failed else TransactionState.REVERTED
                    )
                break
            break
        tx.has_waiting_steps = bool(tx.waiting)
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
        """Whether the batch holds an async handler that a worker must run.

        Outside a worker, a run stops before its first async step and is queued for
        one (SPEC 2.3: the caller gets the run back at once, state ``invoking``).
        """
        if tx.in_background or not tx.stored or tx.replay:
            return False
        steps = tx.steps
        for index in batch:
            options = steps[index].node.options
            if handler_type == INVOKE:
                if options.async_:
                    tx.hand_off = True
                    return True
            elif (
                options.compensate_async
                and not options.no_compensation
                and steps[index].node.compensate_fn is not None
            ):
                tx.hand_off = True
                return True
        return False

    def _arm_timers(self, tx: Transaction) -> None:
        """Schedule the resumes that waiting steps, retries and the run's timeout need,
        and note the earliest in ``tx.wake_at`` (the storage's fallback for lost timers)."""
        now = now_ms()
        scheduler = runtime.scheduler
        workflow_id, transaction_id = tx.workflow_id, tx.transaction_id
        prefix = f"{workflow_id}:{transaction_id}"
        wake: list[int] = []

        def arm(due: int, key: str) -> None:
            scheduler.schedule(workflow_id, transaction_id, max(due - now, 0) / 1000, key)
            wake.append(due)

        for index in tx.waiting:
            run = tx.steps[index]
            if run.step_failed:
                continue
            options = run.node.options
            if options.timeout and run.started_at is not None:
                due = run.started_at + int(options.timeout * 1000)
                arm(due, f"step_timeout:{prefix}:{run.action}")
            if options.retry_interval_awaiting and self._may_reawait(run):
                due = (run.last_attempt or now) + int(options.retry_interval_awaiting * 1000)
                arm(due, f"retry_awaiting:{prefix}:{run.action}")
        for index in tx.scheduled:
            run = tx.steps[index]
            interval = run.node.options.retry_interval or 0
            wake.append((run.last_attempt or now) + int(interval * 1000))
        timeout = tx.definition.options.get("timeout")
        if timeout and tx.timed_out_at is None and tx.started_at is not None:
            arm(tx.started_at + int(timeout * 1000), f"transaction_timeout:{prefix}")
        tx.wake_at = min(wake) if wake else None

    @staticmethod
    def _may_reawait(run: StepRun) -> bool:
        limit = run.node.options.max_awaiting_retries
        return limit is None or run.attempts < limit

    def _wake(self, tx: Transaction) -> None:
        """On resume: re-invoke paused steps and those whose retry interval is over;
        time out waiting steps past their timeout; re-invoke waiting steps whose
        ``retry_interval_awaiting`` is over."""
        now = now_ms()
        if tx.waiting:
            for index in list(tx.waiting):
                run = tx.steps[index]
                if run.step_failed:
                    continue
                options = run.node.options
                timeout = options.timeout
                if timeout and run.started_at is not None and now > run.started_at + timeout * 1000:
                    self._time_out_waiting(tx, run, now)
                    continue
                interval = options.retry_interval_awaiting
                if (
                    interval
                    and self._may_reawait(run)
                    and now >= (run.last_attempt or 0) + interval * 1000
                ):
                    tx.waiting.discard(index)
                    tx.ready.append(index)
        if tx.paused:
            for index in tx.paused:
                run = tx.steps[index]
                run.temporary_failed_at = None
                tx.ready.append(index)
            tx.paused = []
        if tx.scheduled:
            for index in list(tx.scheduled):
                run = tx.steps[index]
                interval = run.node.options.retry_interval or 0
                if run.last_attempt is None or now >= run.last_attempt + interval * 1000:
                    tx.scheduled.discard(index)
                    run.has_scheduled_retry = False
                    tx.ready.append(index)

    def _run_batch(self, tx: Transaction, batch: list[int], handler_type: str) -> None:
        now = now_ms()
        jobs: list[_Attempt] = []
        compensating = handler_type == COMPENSATE
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
            job = _Attempt(run, handler_type)
            jobs.append(job)
            self._emit(tx, "on_step_begin", step=run)
            self._prepare(tx, job)
        live = [job for job in jobs if job.outcome is None]
        if len(live) == 1:
            _call(live[0])
        elif live:
            _call_concurrently(live)
        for job in jobs:
            self._apply(tx, job)

    def _prepare(self, tx: Transaction, job: _Attempt) -> None:
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
        if job.handler_type == INVOKE:
            for condition in node.conditions:
                try:
                    if not condition(tx):
                        job.outcome = _SKIP
                        return
                except Exception as exc:
                    job.outcome, job.value = _ERROR, exc
                    return
            try:
                job.input = serialization.roundtrip(node.resolve_input(tx))
            except Exception as exc:
                job.outcome, job.value = _ERROR, exc
                return
            job.fn = node.invoke_fn
            job.is_coroutine = node.invoke_is_async
        else:
            entry = tx.invoke.get(node.action)
            job.input = None if entry is None else entry.get("compensateInput")
            job.fn = node.compensate_fn
            job.is_coroutine = node.compensate_is_async
        job.ctx = StepContext(tx, node.action, job.handler_type, run.attempts)

    @staticmethod
    def _load_record(job: _Attempt, record: AttemptRecord) -> None:
        job.replayed = True
        job.input = record.input
        job.started = (record.started_at or 0) / 1000
        job.ended = (record.ended_at or 0) / 1000
        status = record.status
        if status == "COMPLETED" or status == "TIMED_OUT":
            job.outcome = _OK
            job.value = StepResponse(record.output, record.compensate_input)
        elif status == "SKIPPED":
            job.outcome = _SKIP
        elif status == "WAITING":
            job.outcome = _WAIT
        else:
            job.outcome = _ERROR
            job.value = record.error or {"message": "Unknown error"}

    # Applying outcomes

    def _apply(self, tx: Transaction, job: _Attempt, from_outside: bool = False) -> None:
        if job.handler_type == COMPENSATE:
            self._apply_compensation(tx, job, from_outside)
            return
        run = job.run
        node = run.node
        outcome = job.outcome
        if outcome == _WAIT:
            self._await_response(tx, run, job)
            return
        if outcome == _SKIP or (outcome == _OK and job.value is SKIP):
            run.invoke_state = StepState.SKIPPED
            run.invoke_status = StepStatus.OK
            tx.has_skipped_steps = True
            self._record(tx, job, "SKIPPED")
            self._settle(tx, run)
            self._emit(tx, "on_step_skipped", step=run)
            return
        if outcome == _OK:
            value = job.value
            if isinstance(value, StepResponse):
                output, compensate_input = value.output, value.compensate_input
            elif node.options.async_ and not from_outside and not job.replayed:
                if not node.options.background_execution or node.options.nested:
                    self._await_response(tx, run, job)
                    return
                output = compensate_input = value
            else:
                output = compensate_input = value
            if tx.stored and not job.replayed:
                problem = self._check_storable(node.action, output, compensate_input)
                if problem is not None:
                    job.outcome, job.value = _ERROR, problem
                    self._apply_failure(tx, job, permanent=True)
                    return
            if node.options.save_response:
                tx.invoke[node.action] = {"output": output, "compensateInput": compensate_input}
            tx.waiting.discard(node.index)
            timeout = node.options.timeout
            if timeout is not None and job.ended - job.started > timeout and not from_outside:
                self._record(tx, job, "TIMED_OUT", output, compensate_input)
                run.timed_out_at = now_ms()
                self._step_timed_out(tx, run)
                return
            run.invoke_state = StepState.DONE
            run.invoke_status = StepStatus.OK
            self._record(tx, job, "COMPLETED", output, compensate_input)
            self._settle(tx, run)
            self._emit(tx, "on_step_success", step=run, result=output)
            return
        self._apply_failure(tx, job)

    def _apply_failure(self, tx: Transaction, job: _Attempt, permanent: bool = False) -> None:
        run = job.run
        node = run.node
        exc = job.value
        error = serialize_error(exc)
        error["stack"] = (error.get("stack") or "") + (
            f"\n    at [{tx.workflow_id} -> {node.action} ({job.handler_type})]"
        )
        tx.waiting.discard(node.index)
        run.failures += 1
        run.invoke_status = StepStatus.TEMPORARY_FAILURE
        self._record(tx, job, "FAILED", error=error)
        step_error = StepError(node.action, INVOKE, error)
        self._emit(tx, "on_step_failure", step=run, errors=[step_error])
        permanent = (
            permanent
            or isinstance(exc, PermanentStepFailureError)
            or (isinstance(exc, dict) and exc.get("name") in _PERMANENT_ERRORS)
            or run.failures > node.options.max_retries
        )
        if not permanent:
            self._after_temporary_failure(tx, run, job)
            return
        if isinstance(exc, PermanentStepFailureError) and exc.compensate_input is not None:
            tx.invoke[node.action] = {"output": None, "compensateInput": exc.compensate_input}
        run.invoke_state = StepState.FAILED
        run.invoke_status = StepStatus.PERMANENT_FAILURE
        tx.errors.append(step_error)
        self._after_permanent_failure(tx, run)

    def _after_temporary_failure(self, tx: Transaction, run: StepRun, job: _Attempt) -> None:
        node = run.node
        index = node.index
        options = node.options
        if tx.replay and (index, INVOKE, run.attempts + 1) in tx.replay:
            tx.ready.append(index)
            return
        if not options.auto_retry and not job.replayed:
            run.temporary_failed_at = now_ms()
            tx.paused.append(index)
            return
        if options.retry_interval:
            due = (run.last_attempt or 0) + options.retry_interval * 1000
            delay = (due - now_ms()) / 1000
            if delay > 0:
                run.has_scheduled_retry = True
                tx.scheduled.add(index)
                if job.replayed:
                    return
                runtime.scheduler.schedule(
                    tx.workflow_id,
                    tx.transaction_id,
                    delay,
                    f"retry:{tx.workflow_id}:{tx.transaction_id}:{node.action}",
                )
                return
        tx.ready.append(index)

    def _after_permanent_failure(self, tx: Transaction, run: StepRun) -> None:
        options = run.node.options
        if options.continue_on_permanent_failure:
            tx.has_failed_steps = True
            self._settle(tx, run)
        elif options.skip_on_permanent_failure:
            tx.has_failed_steps = True
            tx.has_skipped_on_failure_steps = True
            self._skip_followers(tx, run, options.skip_on_permanent_failure)
        elif tx.state is TransactionState.INVOKING:
            tx.state = TransactionState.WAITING_TO_COMPENSATE

    def _skip_followers(self, tx: Transaction, failed: StepRun, target: bool | str) -> None:
        """Mark the steps after ``failed`` ``skipped_failure``, up to the ``target`` step."""
        steps = tx.steps
        marked: list[StepRun] = []
        seen = {failed.node.index}
        queue = deque(failed.node.dependents)
        while queue:
            index = queue.popleft()
            if index in seen:
                continue
            seen.add(index)
            run = steps[index]
            if isinstance(target, str) and run.node.action == target:
                break
            if run.invoke_state is StepState.NOT_STARTED:
                run.invoke_state = StepState.SKIPPED_FAILURE
                marked.append(run)
            queue.extend(run.node.dependents)
        self._settle(tx, failed)
        for run in marked:
            self._settle(tx, run)

    def _step_timed_out(self, tx: Transaction, run: StepRun) -> None:
        run.invoke_state = StepState.TIMEOUT
        run.invoke_status = StepStatus.PERMANENT_FAILURE
        exc = TransactionStepTimeoutError(
            f"Step {run.node.action} exceeded its timeout of {run.node.options.timeout} seconds"
        )
        error = serialize_error(exc)
        step_error = StepError(run.node.action, INVOKE, error)
        tx.errors.append(step_error)
        self._emit(tx, "on_step_failure", step=run, errors=[step_error])
        self._after_permanent_failure(tx, run)

    def _time_out_waiting(self, tx: Transaction, run: StepRun, now: int) -> None:
        """A waiting step passed its timeout: it fails for good (its late response will
        be refused), and its log row says so."""
        tx.waiting.discard(run.node.index)
        job = _Attempt(run, INVOKE)
        job.started = (run.started_at or now) / 1000
        job.ended = now / 1000
        self._record(tx, job, "TIMED_OUT")
        run.timed_out_at = now
        self._step_timed_out(tx, run)

    def _await_response(self, tx: Transaction, run: StepRun, job: _Attempt) -> None:
        if job.handler_type == COMPENSATE:
            run.comp_status = StepStatus.WAITING
        else:
            run.invoke_status = StepStatus.WAITING
        tx.waiting.add(run.node.index)
        tx.has_waiting_steps = True
        self._record(tx, job, "WAITING")
        self._emit(tx, "on_step_awaiting", step=run)

    def _settle(self, tx: Transaction, run: StepRun) -> None:
        """The step's invoke is over: release the steps that waited for it."""
        tx.unsettled -= 1
        tx.last_settled = run
        pending = tx.pending
        steps = tx.steps
        invoking = tx.state is TransactionState.INVOKING
        for index in run.node.dependents:
            pending[index] -= 1
            if (
                pending[index] == 0
                and invoking
                and steps[index].invoke_state is StepState.NOT_STARTED
            ):
                tx.ready.append(index)

    # Timeouts

    def _transaction_timed_out(self, tx: Transaction) -> bool:
        timeout = tx.definition.options.get("timeout")
        if not timeout or tx.started_at is None or tx.timed_out_at is not None:
            return False
        if tx.replay:
            return False
        return now_ms() > tx.started_at + timeout * 1000

    def _timeout_transaction(self, tx: Transaction, at: int | None = None) -> None:
        tx.timed_out_at = at or now_ms()
        culprits = [tx.steps[i] for i in tx.waiting] + [tx.steps[i] for i in tx.paused]
        culprits += [tx.steps[i] for i in tx.scheduled]
        tx.waiting.clear()
        tx.paused = []
        tx.scheduled.clear()
        timeout = tx.definition.options.get("timeout")
        message = f"Transaction {tx.transaction_id} exceeded its timeout of {timeout} seconds"
        if not culprits and tx.last_settled is not None:
            error = serialize_error(TransactionTimeoutError(message))
            tx.errors.append(StepError(tx.last_settled.node.action, INVOKE, error))
        for run in culprits:
            run.invoke_state = StepState.TIMEOUT
            run.invoke_status = StepStatus.PERMANENT_FAILURE
            run.timed_out_at = tx.timed_out_at
            error = serialize_error(TransactionTimeoutError(message))
            tx.errors.append(StepError(run.node.action, INVOKE, error))
        tx.state = TransactionState.WAITING_TO_COMPENSATE
        self._emit(tx, "on_timeout")

    # Compensation

    def _begin_compensation(self, tx: Transaction) -> None:
        """Flag the steps to compensate and release those nothing ran after.

        Every step takes part in the countdown, flagged or not, so the order holds
        through steps that were skipped or never started.
        """
        tx.state = TransactionState.COMPENSATING
        steps = tx.steps
        for run in steps:
            if (
                run.invoke_state is StepState.DONE
                or run.invoke_state is StepState.TIMEOUT
                or run.invoke_status is StepStatus.PERMANENT_FAILURE
            ):
                run.step_failed = True
                run.attempts = 0
                run.failures = 0
                run.last_attempt = None
                run.comp_state = StepState.NOT_STARTED
        tx.comp_pending = [len(run.node.comp_after) for run in steps]
        tx.comp_unsettled = len(steps)
        tx.ready = []
        self._emit(tx, "on_compensate_begin")
        for run in steps:
            if not run.node.comp_after:
                self._release_compensation(tx, run)

    def _release_compensation(self, tx: Transaction, run: StepRun) -> None:
        """Everything after ``run`` is compensated: queue it, or pass through if unflagged."""
        if run.step_failed:
            tx.ready.append(run.node.index)
        else:
            self._settle_compensation(tx, run)

    def _apply_compensation(
        self, tx: Transaction, job: _Attempt, from_outside: bool = False
    ) -> None:
        run = job.run
        node = run.node
        if job.outcome == _OK:
            value = job.value
            if (
                node.options.compensate_async
                and not isinstance(value, StepResponse)
                and not from_outside
                and not job.replayed
            ):
                self._await_response(tx, run, job)
                return
            tx.waiting.discard(node.index)
            output = value.output if isinstance(value, StepResponse) else value
            if node.options.save_response:
                tx.compensate[node.action] = {"output": output}
            run.comp_state = StepState.REVERTED
            run.comp_status = StepStatus.OK
            tx.has_reverted_steps = True
            self._record(tx, job, "COMPLETED", output)
            self._settle_compensation(tx, run)
            self._emit(tx, "on_compensate_step_success", step=run, result=output)
            return
        if job.outcome == _WAIT:
            self._await_response(tx, run, job)
            return
        tx.waiting.discard(node.index)
        error = serialize_error(job.value)
        error["stack"] = (error.get("stack") or "") + (
            f"\n    at [{tx.workflow_id} -> {node.action} (compensate)]"
        )
        run.failures += 1
        run.comp_status = StepStatus.TEMPORARY_FAILURE
        self._record(tx, job, "FAILED", error=error)
        step_error = StepError(node.action, COMPENSATE, error)
        self._emit(tx, "on_compensate_step_failure", step=run, errors=[step_error])
        if run.failures <= node.options.max_retries and not isinstance(
            job.value, PermanentStepFailureError
        ):
            tx.ready.append(node.index)
            return
        run.comp_state = StepState.FAILED
        run.comp_status = StepStatus.PERMANENT_FAILURE
        tx.errors.append(step_error)
        tx.comp_failed = True
        self._settle_compensation(tx, run)

    def _settle_compensation(self, tx: Transaction, run: StepRun) -> None:
        stack = [run]
        pending = tx.comp_pending
        steps = tx.steps
        while stack:
            current = stack.pop()
            tx.comp_unsettled -= 1
            for index in current.node.comp_before:
                pending[index] -= 1
                if pending[index] == 0:
                    before = steps[index]
                    if before.step_failed:
                        tx.ready.append(index)
                    else:
                        stack.append(before)

    # Finishing

    def _finish(self, tx: Transaction, state: TransactionState) -> None:
        tx.state = state
        tx.ended_at = now_ms()
        if state is TransactionState.DONE:
            resolver = tx.definition.result_resolver
            if resolver is not None and tx.result_from is None:
                try:
                    tx.result = resolver(tx)
                except Exception as exc:
                    tx.errors.append(StepError("_result", INVOKE, serialize_error(exc)))
                    tx.result = None
            elif tx.result_from is not None:
                tx.result = tx.get_step_result(tx.result_from)
        else:
            tx.result = None
        if tx.stored:
            runtime.storage.finish(tx)
        self._emit(tx, "on_finish", result=tx.result, errors=tx.get_errors(INVOKE))
        if tx.notify_parent and runtime.nested_finished is not None:
            # A nested child that outlived its parent's handler completes the parent step.
            runtime.nested_finished(tx)

    # Helpers

    def _waiting_step(self, tx: Transaction, action: str, handler_type: str, what: str) -> StepRun:
        node = tx.definition.by_action.get(action)
        if node is None:
            raise InvalidStepStateError("Action not found.")
        run = tx.steps[node.index]
        status = run.comp_status if handler_type == COMPENSATE else run.invoke_status
        if handler_type == COMPENSATE and not run.step_failed:
            raise InvalidStepStateError("Incorrect action type.")
        if status is not StepStatus.WAITING or node.index not in tx.waiting:
            raise InvalidStepStateError(f"Cannot {what} when status is {status}")
        return run

    @staticmethod
    def _check_storable(action: str, output: Any, compensate_input: Any) -> Exception | None:
        try:
            size = len(serialization.dumps(output).encode())
            if compensate_input is not output:
                size += len(serialization.dumps(compensate_input).encode())
        except (TypeError, ValueError) as exc:
            return NonSerializableCheckpointError(
                f"Step {action} returned a value that cannot be stored as JSON: {exc}"
            )
        limit = runtime.max_payload_bytes
        if limit and size > limit:
            return PayloadTooLargeError(
                f"Step {action} returned {size} bytes, more than MAX_PAYLOAD_BYTES ({limit})"
            )
        return None

    def _record(
        self,
        tx: Transaction,
        job: _Attempt,
        status: str,
        output: Any = None,
        compensate_input: Any = None,
        error: dict | None = None,
    ) -> None:
        if not tx.stored or job.replayed:
            return
        run = job.run
        node = run.node
        runtime.storage.record_attempt(
            tx,
            AttemptRecord(
                step_index=node.index,
                step_id=node.action,
                step_path=node.id,
                handler_type=job.handler_type,
                attempt=run.attempts,
                status=status,
                input=job.input,
                output=output,
                compensate_input=compensate_input,
                error=error,
                started_at=int(job.started * 1000) if job.started else None,
                ended_at=int(job.ended * 1000) if job.ended else None,
                operation=node.operation,
            ),
        )

    @staticmethod
    def _emit(tx: Transaction, name: str, **kwargs: Any) -> None:
        events = tx.events
        if not events:
            return
        handler = events.get(name)
        if handler is None:
            return
        try:
            handler(transaction=tx, **kwargs)
        except Exception:
            logger.exception("Event handler %s of %s failed", name, tx.workflow_id)


orchestrator = Orchestrator()
