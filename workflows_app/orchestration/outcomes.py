"""Applying outcomes: what a finished, failed, skipped or waiting attempt changes.

Failures retry (at once, after ``retry_interval`` or when resumed), fail for good or
let the run carry on, as the step's options say; every attempt of a stored run is
recorded through :func:`.attempts.build_record`.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from .attempts import build_record, locate_error, storable
from .calls import Attempt, Outcome
from .clock import due_at
from .errors import (
    NonSerializableCheckpointError,
    PayloadTooLargeError,
    PermanentStepFailureError,
    StepError,
)
from .responses import SKIP, StepResponse
from .runtime import runtime
from .states import AttemptStatus, HandlerType, StepState, StepStatus, TransactionState
from .transaction import StepRun, Transaction, now_ms

logger = logging.getLogger("workflows_app")

# Error names that end a step at once, also when replayed from a stored record.
_PERMANENT_ERRORS = frozenset(
    {"PermanentStepFailure", "NonSerializableCheckpointError", "PayloadTooLargeError"}
)


class Outcomes:
    """The outcome-applying part of :class:`~.orchestrator.Orchestrator`."""

    def _apply(self, tx: Transaction, job: Attempt, from_outside: bool = False) -> None:
        if job.handler_type == HandlerType.COMPENSATE:
            self._apply_compensation(tx, job, from_outside)
            return
        run = job.run
        node = run.node
        outcome = job.outcome
        if outcome == Outcome.WAIT:
            self._await_response(tx, run, job)
            return
        if outcome == Outcome.SKIP or (outcome == Outcome.OK and job.value is SKIP):
            run.invoke_state = StepState.SKIPPED
            run.invoke_status = StepStatus.OK
            tx.has_skipped_steps = True
            self._record(tx, job, AttemptStatus.SKIPPED)
            self._settle(tx, run)
            self._emit(tx, "on_step_skipped", step=run)
            return
        if outcome == Outcome.OK:
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
                # What the next steps (and a rebuilt run) see is the stored form.
                try:
                    output, compensate_input = storable(
                        f"The output of step {node.step_id}", output, compensate_input
                    )
                except (NonSerializableCheckpointError, PayloadTooLargeError) as problem:
                    job.outcome, job.value = Outcome.ERROR, problem
                    self._apply_failure(tx, job, permanent=True)
                    return
            if node.options.save_response:
                tx.invoke[node.step_id] = {"output": output, "compensateInput": compensate_input}
            tx.waiting.discard(node.index)
            timeout = node.options.timeout
            if timeout is not None and job.ended - job.started > timeout and not from_outside:
                self._record(tx, job, AttemptStatus.TIMED_OUT, output, compensate_input)
                run.timed_out_at = now_ms()
                self._step_timed_out(tx, run)
                return
            run.invoke_state = StepState.DONE
            run.invoke_status = StepStatus.OK
            self._record(tx, job, AttemptStatus.COMPLETED, output, compensate_input)
            self._settle(tx, run)
            self._emit(tx, "on_step_success", step=run, result=output)
            if node.options.async_ and not from_outside and not job.replayed:
                # An async step that completed itself: as Medusa schedules a retry at
                # once, a worker continues the run (the caller gets it back).
                self._continue_in_background(tx)
            return
        self._apply_failure(tx, job)

    def _apply_failure(self, tx: Transaction, job: Attempt, permanent: bool = False) -> None:
        run = job.run
        node = run.node
        exc = job.value
        error = locate_error(exc, f"{tx.workflow_id} -> {node.step_id} ({job.handler_type})")
        tx.waiting.discard(node.index)
        run.failures += 1
        run.invoke_status = StepStatus.TEMPORARY_FAILURE
        self._record(tx, job, AttemptStatus.FAILED, error=error)
        step_error = StepError(node.step_id, HandlerType.INVOKE, error)
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
            tx.invoke[node.step_id] = {"output": None, "compensateInput": exc.compensate_input}
        run.invoke_state = StepState.FAILED
        run.invoke_status = StepStatus.PERMANENT_FAILURE
        tx.errors.append(step_error)
        self._after_permanent_failure(tx, run)

    def _after_temporary_failure(self, tx: Transaction, run: StepRun, job: Attempt) -> None:
        node = run.node
        index = node.index
        options = node.options
        if tx.replay and (index, HandlerType.INVOKE, run.attempts + 1) in tx.replay:
            tx.ready.append(index)
            return
        if not options.auto_retry and not job.replayed:
            run.temporary_failed_at = now_ms()
            tx.paused.append(index)
            return
        if options.retry_interval:
            due = due_at(run.last_attempt or 0, options.retry_interval)
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
                    f"retry:{tx.workflow_id}:{tx.transaction_id}:{node.step_id}",
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
            if isinstance(target, str) and run.node.step_id == target:
                break
            if run.invoke_state is StepState.NOT_STARTED:
                run.invoke_state = StepState.SKIPPED_FAILURE
                marked.append(run)
            queue.extend(run.node.dependents)
        self._settle(tx, failed)
        for run in marked:
            self._settle(tx, run)

    def _await_response(self, tx: Transaction, run: StepRun, job: Attempt) -> None:
        if job.handler_type == HandlerType.COMPENSATE:
            run.comp_status = StepStatus.WAITING
        else:
            run.invoke_status = StepStatus.WAITING
        tx.waiting.add(run.node.index)
        tx.has_waiting_steps = True
        self._record(tx, job, AttemptStatus.WAITING)
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

    def _record(
        self,
        tx: Transaction,
        job: Attempt,
        status: str,
        output: Any = None,
        compensate_input: Any = None,
        error: dict | None = None,
    ) -> None:
        if not tx.stored or job.replayed:
            return
        run = job.run
        runtime.storage.record_attempt(
            tx,
            build_record(
                run.node,
                job.handler_type,
                run.attempts,
                status,
                job.input,
                job.started,
                job.ended,
                output=output,
                compensate_input=compensate_input,
                error=error,
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
