"""``create_workflow``: compose steps once, then run the flow as often as needed."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ulid import ULID

from ..orchestration import (
    CompositionError,
    FlowDefinition,
    HandlerType,
    InvalidTransactionIdError,
    Operation,
    StepError,
    StepNode,
    Transaction,
    TransactionAlreadyStarted,
    TransactionNotFound,
    TransactionState,
    WorkflowError,
    orchestrator,
    runtime,
)
from ..orchestration.definition import MAX_STEP_PATH
from ..orchestration.scheduler import ThreadScheduler
from .composer import Composition, Hook, WorkflowResponse, composing, current
from .configure import name_and_options
from .nesting import complete_parent_step, nested_compensate, nested_invoke
from .references import StepRef, compile_value
from .registry import get_workflow, registry

logger = logging.getLogger("workflows_app")

WORKFLOW_OPTIONS = frozenset(
    {"store", "retention_time", "idempotent", "timeout", "schedule", "input_example"}
)
RETENTION_STATES = frozenset({"done", "failed", "reverted"})
EVENT_NAMES = frozenset(
    {
        "on_begin",
        "on_resume",
        "on_step_begin",
        "on_step_success",
        "on_step_failure",
        "on_step_skipped",
        "on_step_awaiting",
        "on_compensate_begin",
        "on_compensate_step_success",
        "on_compensate_step_failure",
        "on_timeout",
        "on_finish",
    }
)
_FAILED = (TransactionState.FAILED, TransactionState.REVERTED)


@dataclass(slots=True)
class RunResult:
    """What ``run`` returns (the engine adds an ``acknowledgement``)."""

    result: Any
    errors: list[StepError]
    transaction: Transaction
    thrown_error: BaseException | None = None
    acknowledgement: dict | None = None


class _Hooks:
    """``workflow.hooks.<name>(invoke, compensate=None)`` registers a hook's handler."""

    def __init__(self, hooks: dict[str, Hook]):
        object.__setattr__(self, "_hooks", hooks)

    def __getattr__(self, name: str) -> Callable[..., None]:
        hooks = object.__getattribute__(self, "_hooks")
        hook = hooks.get(name)
        if hook is None:
            known = ", ".join(sorted(hooks)) or "none"
            raise AttributeError(f"No hook named {name!r} (hooks: {known})")
        return hook.register

    def __iter__(self):
        return iter(object.__getattribute__(self, "_hooks").values())

    def __dir__(self) -> list[str]:
        return sorted(object.__getattribute__(self, "_hooks"))


def _normalise_options(name: str, options: dict[str, Any]) -> dict:
    unknown = sorted(set(options) - WORKFLOW_OPTIONS)
    if unknown:
        raise TypeError(
            f"create_workflow({name!r}): unknown option(s) {', '.join(unknown)}; "
            f"valid options are {', '.join(sorted(WORKFLOW_OPTIONS))}"
        )
    retention = options.get("retention_time")
    if isinstance(retention, dict):
        bad = sorted(set(retention) - RETENTION_STATES)
        if bad:
            raise CompositionError(
                f"retention_time keys must be final states (done, failed, reverted), not {bad}"
            )
    if "input_example" in options:
        try:
            json.dumps(options["input_example"])
        except (TypeError, ValueError) as exc:
            raise CompositionError(f"input_example must be JSON-serialisable: {exc}") from None
    return {"name": name, **options}


def _forces_store(options: dict[str, Any], nodes: list[StepNode]) -> bool:
    if options.get("timeout") or options.get("idempotent") or options.get("retention_time"):
        return True
    for node in nodes:
        o = node.options
        if (
            o.async_
            or o.compensate_async
            or o.timeout
            or o.retry_interval
            or o.retry_interval_awaiting
            or not o.auto_retry
        ):
            return True
    return False


def _check_step_paths(name: str, nodes: list[StepNode]) -> None:
    """A stored run records each step's path: refuse a definition whose longest path
    does not fit, rather than a run that fails half-way."""
    longest = max(nodes, key=lambda node: len(node.id), default=None)
    if longest is not None and len(longest.id) > MAX_STEP_PATH:
        raise CompositionError(
            f"Workflow {name} is stored, but its step {longest.step_id} sits at a path of "
            f"{len(longest.id)} characters, longer than the {MAX_STEP_PATH} a stored run "
            "can record (a path names every step before it in the chain). Use shorter "
            "step names, or move part of the chain into a nested workflow (run_as_step)."
        )


def _check_transaction_id(transaction_id: str) -> str:
    if not isinstance(transaction_id, str) or not transaction_id:
        raise InvalidTransactionIdError("A transaction id must be a non-empty string.")
    if ":" in transaction_id:
        raise InvalidTransactionIdError(
            f"Transaction id {transaction_id!r} contains ':', which separates the parts of "
            "step idempotency keys; choose an id without it."
        )
    return transaction_id


class Workflow:
    """A composed, registered workflow."""

    def __init__(self, name: str, composer: Callable[[Any], Any], options: dict[str, Any]):
        if not name or not isinstance(name, str):
            raise CompositionError("A workflow needs a name (a non-empty string).")
        if ":" in name:
            raise CompositionError(f"Workflow name {name!r} may not contain ':'.")
        self.name = name
        self.composer = composer
        composition = Composition(name)
        with composing(composition):
            returned = composer(composition.input)
        hooks = composition.hooks
        result_value = returned.result if isinstance(returned, WorkflowResponse) else returned
        options = _normalise_options(name, options)
        definition = FlowDefinition(name, composition.roots, options)
        options["store"] = bool(options.get("store")) or _forces_store(options, definition.nodes)
        if options["store"]:
            _check_step_paths(name, definition.nodes)
        definition.options = options
        self.options = options
        self.definition = definition
        if result_value is not None:
            definition.result_resolver = compile_value(result_value)
        self.hooks = _Hooks(hooks)
        self.signature = definition.signature()
        self.is_async = definition.has_async

    # Running

    def __call__(self, container: Any = None) -> _BoundWorkflow:
        return _BoundWorkflow(self, container)

    def run(
        self,
        input: Any = None,
        transaction_id: str | None = None,
        context: dict | None = None,
        throw_on_error: bool = True,
        log_on_error: bool = False,
        result_from: str | None = None,
        events: dict[str, Callable[..., Any]] | None = None,
        container: Any = None,
    ) -> RunResult:
        """Run the workflow in this process (stored workflows checkpoint as they go)."""
        tx = self.begin(input, transaction_id, context, events, container, result_from)
        if not tx.has_finished() or tx.state is TransactionState.NOT_STARTED:
            self.execute(tx)
        return self.result_of(tx, throw_on_error=throw_on_error, log_on_error=log_on_error)

    def begin(
        self,
        input: Any = None,
        transaction_id: str | None = None,
        context: dict | None = None,
        events: dict[str, Callable[..., Any]] | None = None,
        container: Any = None,
        result_from: str | None = None,
    ) -> Transaction:
        """Find the transaction to resume, or create (and store) a new one."""
        ctx = dict(context or {})
        transaction_id = (
            transaction_id or ctx.pop("transaction_id", None) or ctx.pop("transactionId", None)
        )
        generated = transaction_id is None
        if generated:
            transaction_id = f"auto-{ULID()}"
        _check_transaction_id(transaction_id)
        if events:
            unknown = sorted(set(events) - EVENT_NAMES)
            if unknown:
                raise TypeError(f"Unknown event name(s) {', '.join(unknown)}")
        stored = self.options["store"]
        if stored and self.options.get("idempotent") and not generated:
            tx = runtime.storage.load(self.definition, transaction_id, include_finished=True)
            if tx is not None:
                return self._reuse(tx, events, container)
        run_id = ctx.pop("run_id", None) or str(ULID())
        event_group_id = ctx.pop("event_group_id", None) or str(ULID())
        metadata = {"eventGroupId": event_group_id}
        parent_key = ctx.pop("parent_step_idempotency_key", None)
        if parent_key:
            metadata["parentStepIdempotencyKey"] = parent_key
        if ctx.pop("nested_async", False):
            metadata["nestedAsync"] = True
        tx = Transaction(
            self.definition,
            transaction_id=transaction_id,
            run_id=run_id,
            payload=input,
            context=ctx,
            metadata=metadata,
            container=container,
            stored=stored,
        )
        tx.events = events
        tx.result_from = result_from
        if stored:
            try:
                runtime.storage.start(tx)
            except TransactionAlreadyStarted:
                # An unfinished run holds this id: resume it unless a live worker has it.
                existing = (
                    None if generated else runtime.storage.load(self.definition, transaction_id)
                )
                if existing is None:
                    raise
                return self._reuse(existing, events, container)
        return tx

    @staticmethod
    def _reuse(tx: Transaction, events: dict | None, container: Any) -> Transaction:
        tx.events = events
        if container is not None:
            tx.container = container
        return tx

    def execute(self, tx: Transaction) -> Transaction:
        return orchestrator.execute(tx)

    def result_of(
        self, tx: Transaction, *, throw_on_error: bool = True, log_on_error: bool = False
    ) -> RunResult:
        if tx.stale:
            raise TransactionAlreadyStarted(tx.transaction_id)
        errors = tx.get_errors(HandlerType.INVOKE)
        if log_on_error:
            for error in tx.errors:
                logger.error(
                    "%s:%s:%s - %s\n%s",
                    tx.workflow_id,
                    error.step_id,
                    error.handler_type,
                    error.error.get("message"),
                    error.error.get("stack"),
                )
        thrown = None
        failed = tx.state in _FAILED
        result_error = any(e.step_id == "_result" for e in errors)
        if failed or result_error:
            message = errors[0].error.get("message") if errors else f"Workflow {self.name} failed"
            thrown = WorkflowError(message, errors, tx)
            if throw_on_error:
                raise thrown
        return RunResult(tx.result, errors, tx, thrown)

    # Long-running and in-flight transactions

    def get_running_transaction(self, transaction_id: str) -> Transaction | None:
        """The unfinished stored transaction with this id, or ``None`` (read only: it
        does not take the run over from whoever executes it)."""
        return runtime.storage.peek(self.definition, transaction_id)

    def _load(self, transaction_id: str, *, include_finished: bool = False) -> Transaction:
        tx = runtime.storage.load(
            self.definition, transaction_id, include_finished=include_finished
        )
        if tx is None:
            raise TransactionNotFound(f"Transaction {transaction_id} could not be found.")
        return tx

    def register_step_success(
        self,
        transaction_id: str,
        step_id: str,
        response: Any = None,
        action: str = HandlerType.INVOKE,
    ) -> RunResult:
        tx = self._load(transaction_id)
        orchestrator.set_step_success(tx, step_id, action, response)
        return self.result_of(tx, throw_on_error=False)

    def register_step_failure(
        self,
        transaction_id: str,
        step_id: str,
        error: Any = None,
        action: str = HandlerType.INVOKE,
        force_permanent_failure: bool = False,
    ) -> RunResult:
        tx = self._load(transaction_id)
        orchestrator.set_step_failure(tx, step_id, action, error, force_permanent_failure)
        return self.result_of(tx, throw_on_error=False)

    def retry_step(
        self, transaction_id: str, step_id: str, action: str = HandlerType.INVOKE
    ) -> RunResult:
        tx = self._load(transaction_id)
        orchestrator.retry_step(tx, step_id, action)
        return self.result_of(tx, throw_on_error=False)

    def cancel(
        self, transaction: Transaction | None = None, transaction_id: str | None = None
    ) -> RunResult:
        """Revert a running or finished ``done`` transaction through compensation."""
        if transaction is None:
            if transaction_id is None:
                raise TypeError("cancel() needs a transaction or a transaction_id.")
            transaction = self._load(transaction_id, include_finished=True)
        orchestrator.cancel(transaction)
        return self.result_of(transaction, throw_on_error=False)

    # Composition

    def run_as_step(self, input: Any = None) -> StepRef:
        """Use this workflow as one step of the workflow being composed."""
        composition = current(f"{self.name}.run_as_step()")
        node = StepNode(
            step_id=f"{self.name}-as-step",
            invoke_fn=None,
            operation=Operation.SUB_WORKFLOW,
            resolve_input=compile_value(input),
        )
        child = self
        node.set_handlers(nested_invoke(child, node), nested_compensate(child))
        node.extra["workflow"] = child.name
        if child.is_async:
            # The child may wait: the step waits with it and completes when it ends.
            node.options = node.options.replace(async_=True, nested=True)
        return composition.append(node)

    def get_name(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Workflow {self.name}>"


def resume_transaction(
    workflow_id: str,
    transaction_id: str,
    prepare: Callable[[Transaction], None] | None = None,
) -> Transaction | None:
    """Continue an unfinished stored run as a worker does: async handlers run inline.

    Returns ``None`` when there is nothing to resume (finished, unknown) or another
    executor holds the run. ``prepare(tx)`` runs before execution (e.g. to attach
    event handlers).
    """
    workflow = get_workflow(workflow_id)
    try:
        tx = runtime.storage.load(workflow.definition, transaction_id)
    except TransactionAlreadyStarted:
        return None
    if tx is None:
        return None
    tx.in_background = True
    if prepare is not None:
        prepare(tx)
    orchestrator.execute(tx)
    return tx


class _BoundWorkflow:
    """``workflow(container)``: the same workflow with a container for its steps."""

    def __init__(self, workflow: Workflow, container: Any):
        self.workflow = workflow
        self.container = container

    def run(self, input: Any = None, **kwargs: Any) -> RunResult:
        kwargs.setdefault("container", self.container)
        return self.workflow.run(input, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.workflow, name)


def create_workflow(
    name_or_config: str | dict[str, Any],
    composer: Callable[[Any], Any] | None = None,
    **options: Any,
) -> Any:
    """Define and register a workflow. Without ``composer`` it returns a decorator."""
    name, options = name_and_options(name_or_config, options)
    if composer is None:

        def decorate(function: Callable[[Any], Any]) -> Workflow:
            return registry.register(Workflow(name, function, options))

        return decorate
    return registry.register(Workflow(name, composer, options))


# Outside Django, background work runs on threads of this process.
if isinstance(runtime.scheduler, ThreadScheduler) and runtime.scheduler.resume is None:
    runtime.scheduler.resume = resume_transaction
if runtime.nested_finished is None:
    runtime.nested_finished = complete_parent_step
