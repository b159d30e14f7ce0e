"""The benchmark workloads (SPEC section 11): what each runs and how its result is checked.

The workloads mirror the peer harnesses (Medusa's Workflows SDK, DBOS Transact) so that
their numbers can be set side by side: the same shapes, the same count of step
invocations per run. Every run goes through :data:`workflow_engine` and every result is
checked, so a broken run fails the benchmark instead of flattering it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..engine import workflow_engine
from ..sdk import (
    RunResult,
    StepResponse,
    TransactionState,
    WorkflowResponse,
    create_step,
    create_workflow,
    parallelize,
    transform,
    when,
)

DURABILITY_MODES = ("step", "boundary")
STORED_RETENTION_SECONDS = 3600


class BenchmarkError(Exception):
    """A run of a workload returned something other than the expected result."""


@dataclass(frozen=True)
class Workload:
    """One benchmark: which workflow to run, with what input, and how to check it."""

    key: str
    workflow_id: str
    steps_per_run: int
    make_input: Callable[[int], Any]
    check: Callable[[RunResult, int], None]
    throw_on_error: bool = True
    stored: bool = False
    before: Callable[[], None] | None = None
    # Runs handed to a django-q2 cluster and timed end to end (bench.background).
    in_workers: bool = False

    def run_once(self, i: int) -> None:
        if self.before is not None:
            self.before()
        result = workflow_engine.run(
            self.workflow_id, input=self.make_input(i), throw_on_error=self.throw_on_error
        )
        self.check(result, i)


# Compensations append here; runs are sequential, so one list serves every workload.
_compensated: list[Any] = []


def _reset_compensated() -> None:
    _compensated.clear()


def _workflow_name(key: str) -> str:
    return "bench-" + key.replace("_", "-")


def _fail(key: str, message: str) -> None:
    raise BenchmarkError(f"{key}: {message}")


def _n_input(i: int) -> dict:
    return {"n": i}


def _storage_options(stored: bool) -> dict:
    return {"store": True, "retention_time": STORED_RETENTION_SECONDS} if stored else {}


# Step handlers (module level, so each is one function however often it is used).


def _add_one(n: int, ctx: Any) -> StepResponse:
    return StepResponse(n + 1, n)


def _undo_add_one(previous: Any, ctx: Any) -> None:
    _compensated.append(previous)


def _always_fails(n: int, ctx: Any) -> None:
    raise RuntimeError("step 5 failed on purpose")


# Workload definitions.


def _sequence(steps: list) -> Any:
    """A composer that feeds ``input["n"]`` through ``steps`` one after the other."""

    def composer(input: Any) -> WorkflowResponse:
        value = input["n"]
        for step in steps:
            value = step(value)
        return WorkflowResponse(value)

    return composer


def _chain(key: str, length: int, stored: bool) -> Workload:
    name = _workflow_name(key)
    steps = [
        create_step(f"{name}-add-{position}", _add_one, _undo_add_one)
        for position in range(1, length + 1)
    ]

    create_workflow(name, _sequence(steps), **_storage_options(stored))

    def check(result: RunResult, i: int) -> None:
        if result.result != i + length:
            _fail(key, f"expected {i + length}, got {result.result!r}")

    return Workload(key, name, length, _n_input, check, stored=stored)


def _compensate5(key: str, stored: bool) -> Workload:
    name = _workflow_name(key)
    failing_step = f"{name}-s5"

    def recording_step(position: int) -> Any:
        def invoke(n: int, ctx: Any) -> StepResponse:
            return StepResponse(n + 1, position)

        invoke.__name__ = f"invoke_s{position}"
        return create_step(f"{name}-s{position}", invoke, _undo_add_one)

    steps = [recording_step(position) for position in range(1, 5)]
    failing = create_step(failing_step, _always_fails)

    create_workflow(name, _sequence([*steps, failing]), **_storage_options(stored))

    def check(result: RunResult, i: int) -> None:
        if _compensated != [4, 3, 2, 1]:
            _fail(key, f"compensation order {_compensated!r}, expected [4, 3, 2, 1]")
        state = result.transaction.state
        if state is not TransactionState.REVERTED:
            _fail(key, f"state {state}, expected reverted")
        if len(result.errors) != 1 or result.errors[0].step_id != failing_step:
            _fail(key, f"unexpected errors {[e.to_dict() for e in result.errors]!r}")
        if result.result is not None:
            _fail(key, f"result {result.result!r}, expected None")

    return Workload(
        key,
        name,
        5,
        _n_input,
        check,
        throw_on_error=False,
        stored=stored,
        before=_reset_compensated,
    )


def _parallel(key: str) -> Workload:
    name = _workflow_name(key)

    def adder(label: str, amount: int) -> Any:
        def invoke(a: int, ctx: Any) -> StepResponse:
            return StepResponse(a + amount, a)

        invoke.__name__ = f"add_{amount}"
        return create_step(f"{name}-{label}", invoke)

    def total(values: dict, ctx: Any) -> StepResponse:
        return StepResponse(values["b"] + values["c"] + values["d"])

    step_a = create_step(f"{name}-A", _add_one)
    step_b, step_c, step_d = adder("B", 10), adder("C", 20), adder("D", 30)
    step_e = create_step(f"{name}-E", total)

    def composer(input: Any) -> WorkflowResponse:
        a = step_a(input["n"])
        b, c, d = parallelize(step_b(a), step_c(a), step_d(a))
        return WorkflowResponse(step_e({"b": b, "c": c, "d": d}))

    create_workflow(name, composer)

    def check(result: RunResult, i: int) -> None:
        expected = 3 * (i + 1) + 60
        if result.result != expected:
            _fail(key, f"expected {expected}, got {result.result!r}")

    return Workload(key, name, 5, _n_input, check)


def _classify(values: dict) -> dict:
    doubled = values["s1"] * 2
    return {"v": doubled, "big": doubled > 10}


def _is_big(values: dict) -> bool:
    return values["big"]


def _is_small(values: dict) -> bool:
    return not values["big"]


def _pick_branch(values: dict) -> dict:
    big = values["t"]["big"]
    return {"branch": "big" if big else "small", "value": values["big"] if big else values["small"]}


def _transform_when(key: str) -> Workload:
    name = _workflow_name(key)

    def first(n: int, ctx: Any) -> StepResponse:
        return StepResponse(n + 1)

    def times_hundred(v: int, ctx: Any) -> StepResponse:
        return StepResponse(v * 100)

    def plus_thousand(v: int, ctx: Any) -> StepResponse:
        return StepResponse(v + 1000)

    step_s1 = create_step(f"{name}-s1", first)
    step_big = create_step(f"{name}-big", times_hundred)
    step_small = create_step(f"{name}-small", plus_thousand)

    def composer(input: Any) -> WorkflowResponse:
        s1 = step_s1(input["n"])
        t = transform({"s1": s1}, _classify)
        big = when(f"{name}-when-big", t, _is_big).then(lambda: step_big(t["v"]))
        small = when(f"{name}-when-small", t, _is_small).then(lambda: step_small(t["v"]))
        return WorkflowResponse(transform({"big": big, "small": small, "t": t}, _pick_branch))

    create_workflow(name, composer)

    def check(result: RunResult, i: int) -> None:
        v = ((i % 10) + 1) * 2
        if v > 10:
            expected = {"branch": "big", "value": v * 100}
        else:
            expected = {"branch": "small", "value": v + 1000}
        if result.result != expected:
            _fail(key, f"expected {expected!r}, got {result.result!r}")

    # One unconditional step plus exactly one of the two branches.
    return Workload(key, name, 2, lambda i: {"n": i % 10}, check)


# The background workload: runs handed over to django-q2 workers in other processes.

BACKGROUND_KEY = "background"
BACKGROUND_WORKERS = 2
BACKGROUND_STEPS = 3


class BenchmarkUnavailable(BenchmarkError):
    """A workload cannot run with this configuration (e.g. ``background`` on SQLite)."""


def _background(key: str) -> Workload:
    name = _workflow_name(key)
    steps = [
        create_step(f"{name}-add-{position}", _add_one, async_=True, background_execution=True)
        for position in range(1, BACKGROUND_STEPS + 1)
    ]

    create_workflow(name, _sequence(steps), **_storage_options(True))

    def check(result: RunResult, i: int) -> None:
        # run() only hands the run over; bench.background checks the stored rows.
        state = result.transaction.state
        if state is not TransactionState.INVOKING:
            _fail(key, f"run {i} returned {state}, expected invoking (handed to a worker)")

    return Workload(
        key,
        name,
        BACKGROUND_STEPS,
        _n_input,
        check,
        stored=True,
        in_workers=True,
    )


# Key -> how to define it. Adding a workload is one entry here.
_FACTORIES: dict[str, Callable[[], Workload]] = {
    "chain5": lambda: _chain("chain5", 5, stored=False),
    "chain20": lambda: _chain("chain20", 20, stored=False),
    "compensate5": lambda: _compensate5("compensate5", stored=False),
    "parallel": lambda: _parallel("parallel"),
    "transform_when": lambda: _transform_when("transform_when"),
    "chain5_stored": lambda: _chain("chain5_stored", 5, stored=True),
    "chain20_stored": lambda: _chain("chain20_stored", 20, stored=True),
    "compensate5_stored": lambda: _compensate5("compensate5_stored", stored=True),
    BACKGROUND_KEY: lambda: _background(BACKGROUND_KEY),
}

WORKLOAD_KEYS: tuple[str, ...] = tuple(_FACTORIES)
# Run only when named with --only: they start worker processes and need PostgreSQL.
OPT_IN_KEYS: frozenset[str] = frozenset({BACKGROUND_KEY})
DEFAULT_KEYS: tuple[str, ...] = tuple(key for key in WORKLOAD_KEYS if key not in OPT_IN_KEYS)


@functools.cache
def workload(key: str) -> Workload:
    """The workload called ``key``; its workflow is defined (and registered) once."""
    return _FACTORIES[key]()


def timing(item: Workload, runs: int, seconds: float) -> dict:
    """The fields every workload reports: runs, seconds, runs/s and us per step."""
    return {
        "runs": runs,
        "seconds": round(seconds, 6),
        "runs_per_s": round(runs / seconds, 1),
        "us_per_step": round(seconds * 1e6 / (runs * item.steps_per_run), 2),
        "steps_per_run": item.steps_per_run,
    }


def warmup_runs(n: int) -> int:
    """Untimed runs before the timed ones: a tenth of ``n``, at least 20."""
    return max(20, n // 10)


def select(only: Iterable[str] | None) -> list[str]:
    """The workload keys to run, in the standard order (by default all but the opt-in
    ones); unknown keys raise ``ValueError``."""
    if not only:
        return list(DEFAULT_KEYS)
    wanted = [key.strip() for key in only if key.strip()]
    unknown = sorted(set(wanted) - set(WORKLOAD_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown workload(s): {', '.join(unknown)}. Known: {', '.join(WORKLOAD_KEYS)}."
        )
    return [key for key in WORKLOAD_KEYS if key in wanted]
