"""What one ``for_each`` iteration runs: a step's handlers or a sub-workflow, inline.

The loop in ``loops`` calls ``call`` and ``undo`` on a body once per item.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..orchestration import (
    CompositionError,
    HandlerType,
    Operation,
    StepContext,
    StepOptions,
    StepResponse,
    Transaction,
    TransactionState,
    WorkflowError,
    orchestrator,
    run_coroutine,
    runtime,
)
from .nesting import run_child_inline
from .steps import Step
from .workflows import Workflow

# Step options that describe how the orchestrator schedules one step (waiting for an
# outside response, timers, handing over to a worker, carrying on after a failure):
# an iteration runs inside the loop's handler and cannot honour them. Set them on the
# loop itself with ``for_each(...).config(...)`` where they make sense.
_UNSUPPORTED_OPTIONS = (
    "async_",
    "background_execution",
    "compensate_async",
    "retry_interval",
    "retry_interval_awaiting",
    "max_awaiting_retries",
    "timeout",
    "no_wait",
    "continue_on_permanent_failure",
    "skip_on_permanent_failure",
)


def body_for(target: Any) -> StepBody | WorkflowBody:
    if isinstance(target, Step):
        return StepBody(target)
    if isinstance(target, Workflow):
        return WorkflowBody(target)
    inner = getattr(target, "workflow", None)
    if isinstance(inner, Workflow):  # ``workflow(container)``
        return WorkflowBody(inner)
    raise CompositionError(
        "for_each() runs a step made with create_step() or a workflow made with "
        f"create_workflow(), not {type(target).__name__}."
    )


def _qualname(fn: Any) -> str:
    return getattr(fn, "__qualname__", type(fn).__name__) if fn is not None else ""


def _await_if_needed(value: Any) -> Any:
    if inspect.iscoroutine(value):
        return run_coroutine(value)
    return value


# What one iteration runs


class StepBody:
    """An iteration that calls a step's handlers with one item."""

    operation = Operation.STEP

    def __init__(self, step: Step):
        if step.invoke_fn is None:
            raise CompositionError(f"Step {step.name!r} has no invoke function.")
        options = step.options
        defaults = StepOptions()
        used = [
            name
            for name in _UNSUPPORTED_OPTIONS
            if getattr(options, name) != getattr(defaults, name)
        ]
        if not options.auto_retry:
            used.append("auto_retry")
        if used:
            raise CompositionError(
                f"for_each(): step {step.name!r} sets {', '.join(used)}, which a loop "
                "iteration cannot honour (iterations run inside the loop step). "
                "Set them on the loop with for_each(...).config(...) instead."
            )
        self.name = step.name
        self.invoke_fn = step.invoke_fn
        self.compensate_fn = step.compensate_fn
        self.max_retries = options.max_retries
        self.sensitive = options.sensitive
        self.can_compensate = step.compensate_fn is not None and not options.no_compensation
        self.signature = f"{_qualname(step.invoke_fn)}/{_qualname(step.compensate_fn)}"

    def call(self, item: Any, ctx: StepContext) -> Any:
        return _await_if_needed(self.invoke_fn(item, ctx))

    def undo(self, data: Any, ctx: StepContext) -> Any:
        return _await_if_needed(self.compensate_fn(data, ctx))


class WorkflowBody:
    """An iteration that runs a sub-workflow inline, as ``run_as_step`` does."""

    operation = Operation.SUB_WORKFLOW
    max_retries = 0
    sensitive: tuple[str, ...] = ()
    can_compensate = True

    def __init__(self, workflow: Workflow):
        if workflow.is_async:
            raise CompositionError(
                f"for_each(): workflow {workflow.name!r} has async steps; a loop iteration "
                "runs its sub-workflow inline and cannot wait for it."
            )
        self.workflow = workflow
        self.name = workflow.name
        self.signature = f"workflow:{workflow.name}"

    def call(self, item: Any, ctx: StepContext) -> StepResponse:
        parent: Transaction = ctx._transaction
        # ctx.step_name is "<loop step id>-<iteration>": one child per iteration.
        child_id = f"{ctx.step_name}-{parent.transaction_id}"
        return run_child_inline(self.workflow, item, ctx, child_id)

    def undo(self, data: Any, ctx: StepContext) -> None:
        """Cancel the child run (its steps compensate in reverse)."""
        if not isinstance(data, dict) or "transaction_id" not in data:
            return None
        parent: Transaction = ctx._transaction
        child_id = data["transaction_id"]
        tx = parent.nested.get(child_id)
        if tx is None:
            tx = runtime.storage.load(self.workflow.definition, child_id, include_finished=True)
        if tx is None:
            return None
        if tx.state is TransactionState.DONE:
            orchestrator.cancel(tx)
        elif tx.state is TransactionState.FAILED and tx.cancelled_at:
            # An earlier cancel of this child failed to compensate: try again.
            orchestrator.retry_compensation(tx)
        if tx.state is TransactionState.FAILED:
            errors = tx.get_errors(HandlerType.COMPENSATE)
            message = errors[0].error.get("message") if errors else "compensation failed"
            raise WorkflowError(
                f"Compensation of sub-workflow {self.name} ({child_id}) failed: {message}",
                errors,
                tx,
            )
        return None
