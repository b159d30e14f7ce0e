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

import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..orchestration import (
    AttemptRecord,
    AttemptStatus,
    CompositionError,
    HandlerType,
    NonSerializableCheckpointError,
    Operation,
    PayloadTooLargeError,
    PermanentStepFailureError,
    SkipStepResponse,
    StepContext,
    StepNode,
    StepOptions,
    StepResponse,
    StepState,
    Transaction,
    build_record,
    codec,
    locate_error,
    runtime,
    storable,
)
from ..orchestration.clock import clock
from .composer import Composition, current
from .loop_bodies import StepBody, WorkflowBody, body_for
from .references import Reference, StepRef, compile_value
from .steps import Step
from .workflows import Workflow

INVOKE = HandlerType.INVOKE
COMPENSATE = HandlerType.COMPENSATE

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
    body = body_for(step_or_subworkflow)
    node = StepNode(
        step_id=_free_step_id(composition, f"for-each-{body.name}"),
        invoke_fn=None,
        operation=Operation.LOOP,
        options=StepOptions(sensitive=_loop_sensitive(body.sensitive)),
        resolve_input=compile_value(items),
    )
    node.runs_on_caller = True  # it writes its iteration rows as it goes
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


def _free_step_id(composition: Composition, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... when an earlier step of the flow has it.

    Names are counted in composer order, so every process derives the same names
    (resumed runs find their steps by name).
    """
    taken: set[str] = set()
    stack = list(composition.roots)
    while stack:
        node = stack.pop()
        taken.add(node.step_id)
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
            if record.status == AttemptStatus.COMPLETED:
                self.outputs[i] = record.output
                self.owed[i] = record.compensate_input
                self.skipped.discard(i)
            elif record.status == AttemptStatus.SKIPPED:
                self.skipped.add(i)
                self.outputs.pop(i, None)
                self.owed.pop(i, None)
            elif record.status == AttemptStatus.FAILED:
                self.outputs.pop(i, None)
                if record.compensate_input is not None:
                    self.owed[i] = record.compensate_input
        elif record.status == AttemptStatus.COMPLETED:
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
    status: str = AttemptStatus.FAILED
    output: Any = None
    compensate_input: Any = None
    error: BaseException | None = None
    records: list[AttemptRecord] = field(default_factory=list)
    last_attempt: int = 0


class _Loop:
    """The loop node's handlers, for one use of ``for_each``."""

    def __init__(self, node: StepNode, body: StepBody | WorkflowBody, concurrency: int):
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
        step_id = self.node.step_id
        if not isinstance(items, list):
            raise TypeError(
                f"for_each step {step_id} needs a list of items, got {type(items).__name__}."
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
            if outcome.status == AttemptStatus.COMPLETED:
                state.outputs[i] = outputs[i - 1] = outcome.output
                if self.body.can_compensate:
                    state.owed[i] = outcome.compensate_input
            elif outcome.status == AttemptStatus.SKIPPED:
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
                value = body.call(codec.roundtrip(item), ctx)
                if isinstance(value, SkipStepResponse):
                    outcome.status = AttemptStatus.SKIPPED
                    outcome.records.append(
                        self.record(INVOKE, attempt, i, total, AttemptStatus.SKIPPED, item, started)
                    )
                    return outcome
                if isinstance(value, StepResponse):
                    output, compensate_input = value.output, value.compensate_input
                else:
                    output = compensate_input = value
                if stored:
                    output, compensate_input = storable(
                        f"The output of iteration {i} of {self.node.step_id}",
                        output,
                        compensate_input,
                    )
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
                        AttemptStatus.FAILED,
                        item,
                        started,
                        compensate_input=kept,
                        error=self.error(tx, exc, INVOKE, i, total),
                    )
                )
                if permanent or failures > body.max_retries:
                    outcome.status = AttemptStatus.FAILED
                    outcome.error = exc
                    outcome.compensate_input = kept
                    return outcome
                continue
            outcome.status = AttemptStatus.COMPLETED
            outcome.output = output
            outcome.compensate_input = compensate_input
            outcome.records.append(
                self.record(
                    INVOKE,
                    attempt,
                    i,
                    total,
                    AttemptStatus.COMPLETED,
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
                    if outcome.status == AttemptStatus.FAILED:
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
            f"for_each step {self.node.step_id}: iteration {failed.iteration} of {total} "
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
            step_id = self.node.step_id
            error.add_note(
                f"for_each step {step_id}: compensation of iteration {i} of {total} failed"
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
                problem: BaseException | None = None
                try:
                    value = body.undo(data, ctx)
                    output = value.output if isinstance(value, StepResponse) else value
                    status, result = AttemptStatus.COMPLETED, {"output": output}
                except (Exception, SystemExit) as exc:
                    problem = exc
                    error = self.error(tx, exc, COMPENSATE, i, total)
                    status, result = AttemptStatus.FAILED, {"error": error}
                record = self.record(COMPENSATE, attempt, i, total, status, data, started, **result)
                self.write(tx, [record])
                if problem is not None:
                    failures += 1
                    if failures <= body.max_retries and not isinstance(
                        problem, PermanentStepFailureError
                    ):
                        continue
                    problems.append((i, problem))
                    break
                state.owed.pop(i, None)
                state.outputs.pop(i, None)
                break
        return problems

    # Records

    def step_name(self, i: int) -> str:
        """The iteration's step name in its context: its idempotency key is its own."""
        return f"{self.node.step_id}-{i}"

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
        return build_record(
            self.node,
            handler_type,
            attempt,
            status,
            input,
            started,
            clock.now(),
            output=output,
            compensate_input=compensate_input,
            error=error,
            operation=self.body.operation,
            iteration=i,
            total_items=total,
        )

    def error(
        self, tx: Transaction, exc: BaseException, handler_type: str, i: int, total: int
    ) -> dict:
        where = f"{tx.workflow_id} -> {self.node.step_id} #{i}/{total} ({handler_type})"
        return locate_error(exc, where)

    @staticmethod
    def write(tx: Transaction, records: list[AttemptRecord]) -> None:
        if tx.stored:
            for record in records:
                runtime.storage.record_attempt(tx, record)


__all__ = ["for_each"]
