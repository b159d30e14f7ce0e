"""Timers and timeouts: step and transaction timeouts, retry intervals, waking up.

A stored run that stops with waiting, paused or scheduled steps arms the scheduler
for the moment it must resume; on resume ``_wake`` decides which of those steps run
again and which time out.
"""

from __future__ import annotations

from .calls import Attempt, Outcome
from .clock import due_at
from .errors import StepError, TransactionStepTimeoutError, TransactionTimeoutError, serialize_error
from .responses import StepResponse
from .runtime import runtime
from .states import AttemptStatus, HandlerType, StepState, StepStatus, TransactionState
from .transaction import StepRun, Transaction, now_ms


class Timers:
    """The timer and timeout part of :class:`~.orchestrator.Orchestrator`."""

    def _transaction_timed_out(self, tx: Transaction) -> bool:
        deadline = self._deadline(tx)
        return deadline is not None and now_ms() >= deadline

    def _deadline(self, tx: Transaction) -> int | None:
        """When the run's ``timeout`` passes (ms), unless it already timed out."""
        timeout = tx.definition.options.get("timeout")
        if not timeout or tx.started_at is None or tx.timed_out_at is not None or tx.replay:
            return None
        return due_at(tx.started_at, timeout)

    @staticmethod
    def _overran(job: Attempt, deadline: int | None) -> bool:
        """Whether a sync attempt was still running when the run's timeout passed."""
        if job.timed_out_run:
            return True
        return (
            deadline is not None
            and job.outcome in (Outcome.OK, Outcome.ERROR)
            and not job.replayed
            and not job.run.node.options.async_
            and job.ended * 1000 > deadline
        )

    def _time_out_batch(self, tx: Transaction, jobs: list[Attempt], deadline: int) -> None:
        """The run's timeout passed while these steps of the batch still ran: each is
        marked timed out with a ``TransactionTimeoutError`` (whatever its continue or
        skip flags say) and the run reverts. A late output is kept for compensation."""
        tx.timed_out_at = max(deadline, 1)
        for job in jobs:
            run = job.run
            node = run.node
            output = compensate_input = None
            if job.outcome == Outcome.OK:
                value = job.value
                if isinstance(value, StepResponse):
                    output, compensate_input = value.output, value.compensate_input
                else:
                    output = compensate_input = value
                if node.options.save_response:
                    tx.invoke[node.step_id] = {
                        "output": output,
                        "compensateInput": compensate_input,
                    }
            tx.waiting.discard(node.index)
            error = serialize_error(TransactionTimeoutError(self._timeout_message(tx, run)))
            self._record(tx, job, AttemptStatus.TIMED_OUT, output, compensate_input, error=error)
            run.invoke_state = StepState.TIMEOUT
            run.invoke_status = StepStatus.PERMANENT_FAILURE
            run.timed_out_at = tx.timed_out_at
            step_error = StepError(node.step_id, HandlerType.INVOKE, error)
            tx.errors.append(step_error)
            self._emit(tx, "on_step_failure", step=run, errors=[step_error])
        self._timeout_transaction(tx, at=tx.timed_out_at)

    @staticmethod
    def _timeout_message(tx: Transaction, run: StepRun | None = None) -> str:
        timeout = tx.definition.options.get("timeout")
        message = f"Transaction {tx.transaction_id} exceeded its timeout of {timeout} seconds"
        if run is None:
            return message
        return f"{message} while step {run.node.step_id} was running"

    def _timeout_transaction(self, tx: Transaction, at: int | None = None) -> None:
        tx.timed_out_at = at or now_ms()
        culprits = [tx.steps[i] for i in tx.waiting] + [tx.steps[i] for i in tx.paused]
        culprits += [tx.steps[i] for i in tx.scheduled]
        tx.waiting.clear()
        tx.paused = []
        tx.scheduled.clear()
        blamed = any(e.error.get("name") == "TransactionTimeoutError" for e in tx.errors)
        # With nothing running, the error goes to the step that settled last or, when
        # the timeout passed before any step settled, to the first step due to start:
        # a reverted run always says why.
        anchor = tx.last_settled or next((tx.steps[i] for i in tx.ready), None)
        if not culprits and not blamed and anchor is not None:
            error = serialize_error(TransactionTimeoutError(self._timeout_message(tx)))
            tx.errors.append(StepError(anchor.node.step_id, HandlerType.INVOKE, error))
        for run in culprits:
            run.invoke_state = StepState.TIMEOUT
            run.invoke_status = StepStatus.PERMANENT_FAILURE
            run.timed_out_at = tx.timed_out_at
            error = serialize_error(TransactionTimeoutError(self._timeout_message(tx, run)))
            tx.errors.append(StepError(run.node.step_id, HandlerType.INVOKE, error))
        tx.state = TransactionState.WAITING_TO_COMPENSATE
        self._emit(tx, "on_timeout")

    def _step_timed_out(self, tx: Transaction, run: StepRun) -> None:
        run.invoke_state = StepState.TIMEOUT
        run.invoke_status = StepStatus.PERMANENT_FAILURE
        exc = TransactionStepTimeoutError(
            f"Step {run.node.step_id} exceeded its timeout of {run.node.options.timeout} seconds"
        )
        error = serialize_error(exc)
        step_error = StepError(run.node.step_id, HandlerType.INVOKE, error)
        tx.errors.append(step_error)
        self._emit(tx, "on_step_failure", step=run, errors=[step_error])
        self._after_permanent_failure(tx, run)

    def _time_out_waiting(self, tx: Transaction, run: StepRun, now: int) -> None:
        """A waiting step passed its timeout: it fails for good (its late response will
        be refused), and its log row says so."""
        tx.waiting.discard(run.node.index)
        job = Attempt(run, HandlerType.INVOKE)
        job.started = (run.started_at or now) / 1000
        job.ended = now / 1000
        self._record(tx, job, AttemptStatus.TIMED_OUT)
        run.timed_out_at = now
        self._step_timed_out(tx, run)

    def _arm_timers(self, tx: Transaction) -> None:
        """Schedule the resumes that waiting steps, retries and the run's timeout need,
        and note the earliest in ``tx.wake_at`` (the storage's fallback for lost timers)."""
        now = now_ms()
        scheduler = runtime.scheduler
        workflow_id, transaction_id = tx.workflow_id, tx.transaction_id
        prefix = f"{workflow_id}:{transaction_id}"
        wake: list[int] = []

        def arm(due: int, key: str) -> None:
            # Never "at once": a resume queued now would find the run still held here.
            scheduler.schedule(workflow_id, transaction_id, max(due - now, 1) / 1000, key)
            wake.append(due)

        for index in tx.waiting:
            run = tx.steps[index]
            if run.step_failed:
                continue
            options = run.node.options
            step_due = self._step_deadline(run)
            if step_due is not None:
                arm(step_due, f"step_timeout:{prefix}:{run.step_id}")
            if options.retry_interval_awaiting and self._may_reawait(run):
                due = due_at(run.last_attempt or now, options.retry_interval_awaiting)
                arm(due, f"retry_awaiting:{prefix}:{run.step_id}")
        for index in tx.scheduled:
            run = tx.steps[index]
            interval = run.node.options.retry_interval or 0
            wake.append(due_at(run.last_attempt or now, interval))
        deadline = self._deadline(tx)
        if deadline is not None:
            arm(deadline, f"transaction_timeout:{prefix}")
        tx.wake_at = min(wake) if wake else None

    @staticmethod
    def _step_deadline(run: StepRun) -> int | None:
        """When a waiting step's ``timeout`` passes (ms), if it has one."""
        timeout = run.node.options.timeout
        if run.step_failed or not timeout or run.started_at is None:
            return None
        return due_at(run.started_at, timeout)

    def _past_timeout(self, tx: Transaction, now: int) -> list[int]:
        """The waiting steps whose ``timeout`` has passed."""
        past = []
        for index in tx.waiting:
            deadline = self._step_deadline(tx.steps[index])
            if deadline is not None and now >= deadline:
                past.append(index)
        return past

    def _timeout_due(self, tx: Transaction) -> bool:
        """Whether the run's timeout or a waiting step's timeout has passed."""
        if tx.state is TransactionState.INVOKING and self._transaction_timed_out(tx):
            return True
        return bool(self._past_timeout(tx, now_ms()))

    def _time_out_past(self, tx: Transaction, now: int) -> None:
        """Time out the waiting steps whose ``timeout`` has passed."""
        for index in self._past_timeout(tx, now):
            if index in tx.waiting:
                self._time_out_waiting(tx, tx.steps[index], now)

    @staticmethod
    def _may_reawait(run: StepRun) -> bool:
        limit = run.node.options.max_awaiting_retries
        return limit is None or run.attempts < limit

    def _wake(self, tx: Transaction) -> None:
        """On resume: re-invoke paused steps and those whose retry interval is over;
        time out waiting steps past their timeout; re-invoke waiting steps whose
        ``retry_interval_awaiting`` is over."""
        now = now_ms()
        self._time_out_past(tx, now)
        if tx.waiting:
            for index in list(tx.waiting):
                run = tx.steps[index]
                if run.step_failed:
                    continue
                options = run.node.options
                interval = options.retry_interval_awaiting
                if (
                    interval
                    and self._may_reawait(run)
                    and now >= due_at(run.last_attempt or 0, interval)
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
                if run.last_attempt is None or now >= due_at(run.last_attempt, interval):
                    tx.scheduled.discard(index)
                    run.has_scheduled_retry = False
                    tx.ready.append(index)
