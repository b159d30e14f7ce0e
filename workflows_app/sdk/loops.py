"""``for_each``: run a step or a sub-workflow once per item, as one step of the flow.

The composer runs once, at definition time, when the number of items is unknown, so a
Python ``for`` cannot build the loop. ``for_each`` adds a single node
(``operation="builtin:loop"``) whose handlers run the iterations at run time. Each
iteration is recorded as its own step-log row (``iteration`` 1-based, ``total_items``)
under the loop's step path, so the orchestrator and the crash replay keep seeing one
step, while the log shows every item.

A failing iteration (after the inner step's retries) undoes the iterations that
finished, in reverse item order, and then fails the loop step, so the workflow
compensates the steps before it as usual. When the workflow compensates after the
loop succeeded, the loop's compensation undoes every iteration in reverse.
"""

from __future__ import annotations

import inspect
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..orchestration import (
    AttemptRecord,
    CompositionError,
    NonSerializableCheckpointError,
    PayloadTooLargeError,
    PermanentStepFailureError,
    StepContext,
    StepNode,
    StepOptions,
    StepResponse,
    StepState,
    Transaction,
    TransactionState,
    WorkflowError,
    orchestrator,
    runtime,
    serialization,
    serialize_error,
)
from ..orchestration.clock import clock
from ..orchestration.orchestrator import run_coroutine
from ..orchestration.responses import SkipStepResponse
from .composer import Composition, current
from .references import Reference, StepRef, compile_value
from .steps import Step
from .workflows import Workflow, run_child_inline

LOOP_OPERATION = "builtin:loop"
INVOKE = "invoke"
COMPENSATE = "compensate"

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

_STATE_ATTRIBUTE = "_for_each_state"
_DONE = object()


def for_each(items: Any, step_or_subworkflow: Step | Workflow, concurrency: int = 1) -> StepRef:
    """Run ``step_or_subworkflow`` once per item of ``items``; a reference to the outputs.

    ``items`` is a reference (a step output, the workflow input, a ``transform``) or a
    plain list. The outputs keep the item order whatever ``concurrency`` is. The
    returned reference is one step of the flow, named ``for-each-<step name>`` (a
    second loop over the same step gets ``-2``, ...); ``.config(name=...)`` renames it.
    """
    composition = current("for_each()")
    if not isinstance(items, Reference | list | tuple):
        raise CompositionError(
            f"for_each() takes a reference or a list of items, not {type(items).__name__}."
        )
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise CompositionError(
            f"for_each(concurrency=...) must be a positive integer, not {concurrency!r}."
        )
    body = _body_for(step_or_subworkflow)
    node = StepNode(
        action=_free_action(composition, f"for-each-{body.name}"),
        invoke_fn=None,
        operation=LOOP_OPERATION,
        options=StepOptions(sensitive=_loop_sensitive(body.sensitive)),
        resolve_input=compile_value(items),
    )
    loop = _Loop(node, body, concurrency)
    node.set_handlers(loop.invoke_handler(), loop.compensate_handler())
    if node.compensate_fn is None:
        node.options = node.options.replace(no_compensation=True)
    node.extra["for_each"] = {
        "body": body.name,
        "operation": body.operation,
        "concurrency": concurrency,
    }
    return composition.append(node)


# Composition helpers


def _body_for(target: Any) -> _StepBody | _WorkflowBody:
    if isinstance(target, Step):
        return _StepBody(target)
    if isinstance(target, Workflow):
        return _WorkflowBody(target)
    inner = getattr(target, "workflow", None)
    if isinstance(inner, Workflow):  # ``workflow(container)``
        return _WorkflowBody(inner)
    raise CompositionError(
        "for_each() runs a step made with create_step() or a workflow made with "
        f"create_workflow(), not {type(target).__name__}."
    )


def _free_action(composition: Composition, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... when an earlier step of the flow has it.

    Names are counted in composer order, so every process derives the same names
    (resumed runs find their steps by name).
    """
    taken: set[str] = set()
    stack = list(composition.roots)
    while stack:
        node = stack.pop()
        taken.add(node.action)
        stack.extend(node.tree_children)
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def _loop_sensitive(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The inner step's sensitive paths, plus the same paths under every list item.

    The loop node's options mask both the iteration rows (one item, one output) and
    the loop's own row (the list of items, the list of outputs).
    """
    out = list(paths)
    for path in paths:
        head, _, rest = path.partition(".")
        if head in ("input", "output") and rest:
            out.append(f"{head}.*.{rest}")
    return tuple(dict.fromkeys(out))


def _qualname(fn: Any) -> str:
    return getattr(fn, "__qualname__", type(fn).__name__) if fn is not None else ""


def _await_if_needed(value: Any) -> Any:
    if inspect.iscoroutine(value):
        return run_coroutine(value)
    return value


# What one iteration runs


class _StepBody:
    """An iteration that calls a step's handlers with one item."""

    operation = "step"

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


class _WorkflowBody:
    """An iteration that runs a sub-workflow inline, as ``run_as_step`` does."""

    operation = "sub-workflow"
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
        # ctx.step_name is "<loop action>-<iteration>": one child per iteration.
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
            errors = tx.get_errors(COMPENSATE)
            message = errors[0].error.get("message") if errors else "compensation failed"
            raise WorkflowError(
                f"Compensation of sub-workflow {self.name} ({child_id}) failed: {message}",
                errors,
                tx,
            )
        return None


# Per-transaction bookkeeping


@dataclass
class _LoopState:
    """What the loop knows about its iterations in one transaction.

    Built from the iteration rows of a rebuilt transaction (``tx.iteration_records``),
    then kept up to date in memory; only the thread running the loop's handler changes
    it.
    """

    total: int | None = None
    attempts: dict[tuple[str, int], int] = field(default_factory=dict)
    outputs: dict[int, Any] = field(default_factory=dict)
    owed: dict[int, Any] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    known: bool = False

    def apply(self, record: AttemptRecord) -> None:
        """Fold one iteration row into the state."""
        i = record.iteration
        self.known = True
        key = (record.handler_type, i)
        self.attempts[key] = max(self.attempts.get(key, 0), record.attempt)
        if record.total_items is not None and record.total_items != self.total:
            self.reset(record.total_items)
        if record.handler_type == INVOKE:
            if record.status == "COMPLETED":
                self.outputs[i] = record.output
                self.owed[i] = record.compensate_input
                self.skipped.discard(i)
            elif record.status == "SKIPPED":
                self.skipped.add(i)
                self.outputs.pop(i, None)
                self.owed.pop(i, None)
            elif record.status == "FAILED":
                self.outputs.pop(i, None)
                if record.compensate_input is not None:
                    self.owed[i] = record.compensate_input
        elif record.status == "COMPLETED":
            self.owed.pop(i, None)
            self.outputs.pop(i, None)

    def reset(self, total: int) -> None:
        """Different items than the recorded ones: forget what they produced."""
        self.total = total
        self.outputs.clear()
        self.owed.clear()
        self.skipped.clear()


@dataclass
class _Outcome:
    """The result of one iteration, attempts included, produced on any thread."""

    iteration: int
    status: str = "FAILED"
    output: Any = None
    compensate_input: Any = None
    error: BaseException | None = None
    records: list[AttemptRecord] = field(default_factory=list)
    last_attempt: int = 0


class _Loop:
    """The loop node's handlers, for one use of ``for_each``."""

    def __init__(self, node: StepNode, body: _StepBody | _WorkflowBody, concurrency: int):
        self.node = node
        self.body = body
        self.concurrency = concurrency

    def invoke_handler(self) -> Callable[[Any, Any], Any]:
        def invoke(items: Any, ctx: StepContext) -> StepResponse:
            return self.invoke(items, ctx)

        # The workflow signature compares handler names: name the loop after its body.
        invoke.__qualname__ = f"for_each[{self.body.signature}].invoke"
        return invoke

    def compensate_handler(self) -> Callable[[Any, Any], Any] | None:
        if not self.body.can_compensate:
            return None

        def compensate(data: Any, ctx: StepContext) -> None:
            return self.compensate(data, ctx)

        compensate.__qualname__ = f"for_each[{self.body.signature}].compensate"
        return compensate

    # State

    def state(self, tx: Transaction) -> _LoopState:
        store: dict[int, _LoopState] = vars(tx).setdefault(_STATE_ATTRIBUTE, {})
        state = store.get(self.node.index)
        if state is None:
            state = _LoopState()
            path = self.node.id
            for record in getattr(tx, "iteration_records", None) or ():
                if record.step_path == path and record.iteration > 0:
                    state.apply(record)
            store[self.node.index] = state
        return state

    # Invoke

    def invoke(self, items: Any, ctx: StepContext) -> StepResponse:
        """Run every iteration not done yet; undo the finished ones if one fails."""
        tx: Transaction = ctx._transaction
        action = self.node.action
        if not isinstance(items, list):
            raise TypeError(
                f"for_each step {action} needs a list of items, got {type(items).__name__}."
            )
        total = len(items)
        state = self.state(tx)
        if state.total != total:
            state.reset(total)
        state.known = True
        outputs: list[Any] = [None] * total
        todo: list[int] = []
        for i in range(1, total + 1):
            if i in state.outputs:  # finished before a crash: not run twice
                outputs[i - 1] = state.outputs[i]
            elif i not in state.skipped:
                todo.append(i)
        failures: list[_Outcome] = []

        def accept(outcome: _Outcome) -> None:
            self.write(tx, outcome.records)
            i = outcome.iteration
            state.attempts[(INVOKE, i)] = outcome.last_attempt
            if outcome.status == "COMPLETED":
                state.outputs[i] = outputs[i - 1] = outcome.output
                if self.body.can_compensate:
                    state.owed[i] = outcome.compensate_input
            elif outcome.status == "SKIPPED":
                state.skipped.add(i)
            else:
                if self.body.can_compensate and outcome.compensate_input is not None:
                    state.owed[i] = outcome.compensate_input
                failures.append(outcome)

        jobs = [(i, items[i - 1], state.attempts.get((INVOKE, i), 0)) for i in todo]
        if self.concurrency > 1 and len(jobs) > 1 and runtime.parallel_threads > 1:
            self.run_concurrently(tx, total, jobs, accept)
        else:
            for i, item, base in jobs:
                accept(self.iterate(tx, total, i, item, base))
                if failures:
                    break
        if failures:
            self.unwind(tx, state, total, min(failures, key=lambda o: o.iteration))
        compensate_inputs = [state.owed.get(i) for i in range(1, total + 1)]
        return StepResponse(outputs, compensate_inputs)

    def iterate(self, tx: Transaction, total: int, i: int, item: Any, base: int) -> _Outcome:
        """One iteration with the inner step's retries; records are returned, not written."""
        body = self.body
        outcome = _Outcome(i)
        attempt = base
        failures = 0
        stored = tx.stored
        while True:
            attempt += 1
            outcome.last_attempt = attempt
            ctx = StepContext(tx, self.step_name(i), INVOKE, attempt)
            started = clock.now()
            try:
                value = body.call(serialization.roundtrip(item), ctx)
                if isinstance(value, SkipStepResponse):
                    outcome.status = "SKIPPED"
                    outcome.records.append(
                        self.record(INVOKE, attempt, i, total, "SKIPPED", item, started)
                    )
                    return outcome
                if isinstance(value, StepResponse):
                    output, compensate_input = value.output, value.compensate_input
                else:
                    output = compensate_input = value
                if stored:
                    _check_storable(self.node.action, i, output, compensate_input)
            except (Exception, SystemExit) as exc:
                failures += 1
                permanent = isinstance(
                    exc,
                    PermanentStepFailureError
                    | NonSerializableCheckpointError
                    | PayloadTooLargeError,
                )
                kept = exc.compensate_input if isinstance(exc, PermanentStepFailureError) else None
                outcome.records.append(
                    self.record(
                        INVOKE,
                        attempt,
                        i,
                        total,
                        "FAILED",
                        item,
                        started,
                        compensate_input=kept,
                        error=self.error(tx, exc, INVOKE, i, total),
                    )
                )
                if permanent or failures > body.max_retries:
                    outcome.status = "FAILED"
                    outcome.error = exc
                    outcome.compensate_input = kept
                    return outcome
                continue
            outcome.status = "COMPLETED"
            outcome.output = output
            outcome.compensate_input = compensate_input
            outcome.records.append(
                self.record(
                    INVOKE,
                    attempt,
                    i,
                    total,
                    "COMPLETED",
                    item,
                    started,
                    output=output,
                    compensate_input=compensate_input,
                )
            )
            return outcome

    def run_concurrently(
        self,
        tx: Transaction,
        total: int,
        jobs: list[tuple[int, Any, int]],
        accept: Callable[[_Outcome], None],
    ) -> None:
        """Up to ``concurrency`` iterations at a time on the runtime's thread pool.

        Workers take the next item as they free up; this thread only writes the
        outcomes (storage writes stay on the thread that runs the loop). After a
        failure no new item starts. A worker no pool thread has picked up runs here,
        so loops nested in parallel steps or sub-workflows cannot deadlock the pool.
        """
        pending = deque(jobs)
        lock = threading.Lock()
        stopped = False
        messages: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def worker() -> None:
            nonlocal stopped
            try:
                while True:
                    with lock:
                        if stopped or not pending:
                            return
                        i, item, base = pending.popleft()
                    outcome = self.iterate(tx, total, i, item, base)
                    if outcome.status == "FAILED":
                        with lock:
                            stopped = True
                    messages.put(outcome)
            except BaseException as exc:  # a dying process: stop the others, re-raise here
                with lock:
                    stopped = True
                messages.put(exc)
            finally:
                messages.put(_DONE)

        pool = runtime.pool()
        futures = [pool.submit(worker) for _ in range(min(self.concurrency, len(jobs)))]
        live = len(futures)
        crash: BaseException | None = None
        try:
            while live:
                try:
                    message = messages.get_nowait()
                except queue.Empty:
                    if not any(f.running() for f in futures) and any(f.cancel() for f in futures):
                        worker()  # the pool had no free thread for it
                        continue
                    message = messages.get()
                if message is _DONE:
                    live -= 1
                elif isinstance(message, BaseException):
                    crash = crash or message
                else:
                    accept(message)  # may raise (a storage error): no new item starts then
        finally:
            with lock:
                stopped = True
        if crash is not None:
            raise crash

    def unwind(self, tx: Transaction, state: _LoopState, total: int, failed: _Outcome) -> None:
        """Undo the finished iterations in reverse, then fail the loop with the error."""
        exc = failed.error
        assert exc is not None
        undone = sorted(state.owed, reverse=True)
        problems = self.undo_all(tx, state, total, dict(state.owed))
        exc.add_note(
            f"for_each step {self.node.action}: iteration {failed.iteration} of {total} "
            "failed" + (f"; compensated iterations {undone}" if undone else "")
        )
        for i, problem in problems:
            exc.add_note(f"compensation of iteration {i} failed too: {problem}")
        raise exc

    # Compensate

    def compensate(self, data: Any, ctx: StepContext) -> None:
        """Undo the iterations still owed a compensation, last item first."""
        tx: Transaction = ctx._transaction
        state = self.state(tx)
        run = tx.steps[self.node.index]
        targets = dict(state.owed)
        finished = run.invoke_state in (StepState.DONE, StepState.TIMEOUT)
        if finished and not state.known and not targets and isinstance(data, list):
            # No iteration rows known (a storage that keeps none): trust the loop's data.
            targets = {i: value for i, value in enumerate(data, start=1)}
        total = state.total or (len(data) if isinstance(data, list) else len(targets))
        problems = self.undo_all(tx, state, total, targets)
        if problems:
            i, error = problems[0]
            error.add_note(
                f"for_each step {self.node.action}: compensation of iteration {i} of {total} failed"
            )
            raise error

    def undo_all(
        self, tx: Transaction, state: _LoopState, total: int, targets: dict[int, Any]
    ) -> list[tuple[int, BaseException]]:
        """Compensate ``targets`` (iteration -> compensate input) in reverse order, with
        the inner step's retries; the failures are returned after all were tried."""
        body = self.body
        problems: list[tuple[int, BaseException]] = []
        for i in sorted(targets, reverse=True):
            data = targets[i]
            failures = 0
            while True:
                attempt = state.attempts.get((COMPENSATE, i), 0) + 1
                state.attempts[(COMPENSATE, i)] = attempt
                ctx = StepContext(tx, self.step_name(i), COMPENSATE, attempt)
                started = clock.now()
                try:
                    value = body.undo(data, ctx)
                except (Exception, SystemExit) as exc:
                    failures += 1
                    error = self.error(tx, exc, COMPENSATE, i, total)
                    self.write(
                        tx,
                        [
                            self.record(
                                COMPENSATE, attempt, i, total, "FAILED", data, started, error=error
                            )
                        ],
                    )
                    if failures <= body.max_retries and not isinstance(
                        exc, PermanentStepFailureError
                    ):
                        continue
                    problems.append((i, exc))
                    break
                output = value.output if isinstance(value, StepResponse) else value
                self.write(
                    tx,
                    [
                        self.record(
                            COMPENSATE, attempt, i, total, "COMPLETED", data, started, output=output
                        )
                    ],
                )
                state.owed.pop(i, None)
                state.outputs.pop(i, None)
                break
        return problems

    # Records

    def step_name(self, i: int) -> str:
        """The iteration's step name in its context: its idempotency key is its own."""
        return f"{self.node.action}-{i}"

    def record(
        self,
        handler_type: str,
        attempt: int,
        i: int,
        total: int,
        status: str,
        input: Any,
        started: float,
        *,
        output: Any = None,
        compensate_input: Any = None,
        error: dict | None = None,
    ) -> AttemptRecord:
        node = self.node
        return AttemptRecord(
            step_index=node.index,
            step_id=node.action,
            step_path=node.id,
            handler_type=handler_type,
            attempt=attempt,
            status=status,
            input=input,
            output=output,
            compensate_input=compensate_input,
            error=error,
            started_at=int(started * 1000),
            ended_at=int(clock.now() * 1000),
            operation=self.body.operation,
            iteration=i,
            total_items=total,
        )

    def error(
        self, tx: Transaction, exc: BaseException, handler_type: str, i: int, total: int
    ) -> dict:
        error = serialize_error(exc)
        error["stack"] = (error.get("stack") or "") + (
            f"\n    at [{tx.workflow_id} -> {self.node.action} #{i}/{total} ({handler_type})]"
        )
        return error

    @staticmethod
    def write(tx: Transaction, records: list[AttemptRecord]) -> None:
        if tx.stored:
            for record in records:
                runtime.storage.record_attempt(tx, record)


def _check_storable(action: str, i: int, output: Any, compensate_input: Any) -> None:
    """Refuse (for good) an iteration result that a stored run could not keep."""
    try:
        size = len(serialization.dumps(output).encode())
        if compensate_input is not output:
            size += len(serialization.dumps(compensate_input).encode())
    except (TypeError, ValueError) as exc:
        raise NonSerializableCheckpointError(
            f"Iteration {i} of {action} returned a value that cannot be stored as JSON: {exc}"
        ) from None
    limit = runtime.max_payload_bytes
    if limit and size > limit:
        raise PayloadTooLargeError(
            f"Iteration {i} of {action} returned {size} bytes, more than "
            f"MAX_PAYLOAD_BYTES ({limit})"
        )


__all__ = ["LOOP_OPERATION", "for_each"]
