"""Nested workflows: a child run as one step of its parent (``run_as_step``, loops).

A synchronous child runs to its end inside the parent step. An asynchronous child may
wait; the parent step then waits with it and the child completes it when it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..orchestration import (
    HandlerType,
    StepNode,
    StepResponse,
    Transaction,
    TransactionAlreadyStarted,
    TransactionState,
    WorkflowError,
    orchestrator,
    runtime,
)
from .registry import get_workflow

if TYPE_CHECKING:
    from .workflows import Workflow

logger = logging.getLogger("workflows_app")

_FAILED = (TransactionState.FAILED, TransactionState.REVERTED)


def child_context(parent: Transaction, ctx: Any) -> dict:
    """The context a nested child runs with: the parent's, plus the key of the step
    that started it and the parent's event group."""
    context = dict(parent.context)
    context.update(
        parent_step_idempotency_key=ctx.idempotency_key,
        event_group_id=parent.metadata.get("eventGroupId"),
    )
    return context


def run_child_inline(child: Workflow, value: Any, ctx: Any, child_id: str) -> StepResponse:
    """Run a child workflow to its end inside a parent step; its failure fails the step."""
    parent: Transaction = ctx._transaction
    res = child.run(
        input=value,
        transaction_id=child_id,
        context=child_context(parent, ctx),
        throw_on_error=True,
        container=parent.container,
    )
    parent.nested[child_id] = res.transaction
    return StepResponse(res.result, {"workflow_id": child.name, "transaction_id": child_id})


def nested_invoke(child: Workflow, node: StepNode) -> Callable[[Any, Any], Any]:
    def run_child(value: Any, ctx: Any) -> StepResponse | None:
        parent: Transaction = ctx._transaction
        child_id = f"{node.step_id}-{parent.transaction_id}"
        if node.options.nested:
            return _run_nested_async(child, value, child_id, child_context(parent, ctx), parent)
        return run_child_inline(child, value, ctx, child_id)

    return run_child


def _run_nested_async(
    child: Workflow, value: Any, child_id: str, context: dict, parent: Transaction
) -> StepResponse | None:
    """Start (or resume) the child; if it cannot finish now the parent step waits, and
    the child completes it when it ends (``complete_parent_step``)."""
    context["nested_async"] = True
    tx = _finished_child(child, child_id, context, parent)
    if tx is None:
        tx = child.begin(value, child_id, context, container=parent.container)
    if not tx.has_finished():
        tx.in_background = parent.in_background
        tx.notify_parent = False
        orchestrator.execute(tx)
    parent.nested[child_id] = tx
    if not tx.has_finished():
        return None
    outcome = _child_outcome(child, tx)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _finished_child(
    child: Workflow, child_id: str, context: dict, parent: Transaction
) -> Transaction | None:
    """The child this parent step already started and that has ended (it finished
    while the parent was busy, and the step is invoked again by ``retry_step``): its
    outcome is the step's, and no second child starts."""
    if not (parent.stored and child.options["store"]):
        return None
    earlier = runtime.storage.load(child.definition, child_id, include_finished=True, claim=False)
    if (
        earlier is None
        or not earlier.has_finished()
        or earlier.metadata.get("parentStepIdempotencyKey")
        != context.get("parent_step_idempotency_key")
        or (earlier.started_at or 0) < (parent.started_at or 0)
    ):
        return None
    return earlier


def _child_outcome(child: Workflow, tx: Transaction) -> StepResponse | WorkflowError:
    if tx.state in _FAILED:
        errors = tx.get_errors(HandlerType.INVOKE)
        message = errors[0].error.get("message") if errors else f"Workflow {child.name} failed"
        return WorkflowError(message, errors, tx)
    return StepResponse(tx.result, {"workflow_id": child.name, "transaction_id": tx.transaction_id})


def complete_parent_step(tx: Transaction) -> None:
    """Report a finished nested child to the parent step that waits for it."""
    key = tx.metadata.get("parentStepIdempotencyKey") or ""
    parts = key.split(":")
    if len(parts) != 4:
        return
    parent_id, parent_tx, step_id, action = parts
    child = get_workflow(tx.workflow_id)
    parent = get_workflow(parent_id)
    outcome = _child_outcome(child, tx)
    try:
        if isinstance(outcome, WorkflowError):
            error = outcome.errors[0].error if outcome.errors else {"message": str(outcome)}
            parent.register_step_failure(parent_tx, step_id, error, action)
        else:
            parent.register_step_success(parent_tx, step_id, outcome, action)
    except TransactionAlreadyStarted:
        logger.warning(
            "Nested %s:%s finished while its parent %s:%s was busy; the parent step keeps "
            "waiting until recovery or a retry_step.",
            tx.workflow_id,
            tx.transaction_id,
            parent_id,
            parent_tx,
        )


def nested_compensate(child: Workflow) -> Callable[[Any, Any], Any]:
    def cancel_child(data: Any, ctx: Any) -> None:
        if not isinstance(data, dict) or "transaction_id" not in data:
            return None
        parent: Transaction = ctx._transaction
        tx = parent.nested.get(data["transaction_id"])
        if tx is None:
            tx = runtime.storage.load(
                child.definition, data["transaction_id"], include_finished=True
            )
        if tx is None or tx.state is not TransactionState.DONE:
            return None
        orchestrator.cancel(tx)
        return None

    return cancel_child
