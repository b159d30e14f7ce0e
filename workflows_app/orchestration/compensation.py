"""Compensation: undoing the finished steps in reverse order.

Every step takes part in a countdown (``tx.comp_pending``): a step compensates once
every step that ran after it has compensated, so the order holds through steps that
were skipped or never started.
"""

from __future__ import annotations

from .attempts import locate_error
from .calls import Attempt, Outcome
from .errors import PermanentStepFailureError, StepError
from .responses import StepResponse
from .states import AttemptStatus, HandlerType, StepState, StepStatus, TransactionState
from .transaction import StepRun, Transaction


class Compensation:
    """The compensating part of :class:`~.orchestrator.Orchestrator`."""

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
        self, tx: Transaction, job: Attempt, from_outside: bool = False
    ) -> None:
        run = job.run
        node = run.node
        if job.outcome == Outcome.OK:
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
                tx.compensate[node.step_id] = {"output": output}
            run.comp_state = StepState.REVERTED
            run.comp_status = StepStatus.OK
            tx.has_reverted_steps = True
            self._record(tx, job, AttemptStatus.COMPLETED, output)
            self._settle_compensation(tx, run)
            self._emit(tx, "on_compensate_step_success", step=run, result=output)
            return
        if job.outcome == Outcome.WAIT:
            self._await_response(tx, run, job)
            return
        tx.waiting.discard(node.index)
        error = locate_error(job.value, f"{tx.workflow_id} -> {node.step_id} (compensate)")
        run.failures += 1
        run.comp_status = StepStatus.TEMPORARY_FAILURE
        self._record(tx, job, AttemptStatus.FAILED, error=error)
        step_error = StepError(node.step_id, HandlerType.COMPENSATE, error)
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
