"""Micro-benchmarks of workflows_app (SPEC section 11).

The workloads mirror the peer harnesses in ``shared/bench/`` so that their numbers can
be set side by side: the same shapes, the same count of step invocations per run, and
the same output fields (``runs``, ``seconds``, ``runs_per_s``, ``us_per_step``,
``steps_per_run``). Every run goes through :data:`workflow_engine` and every result is
checked, so a broken run fails the benchmark instead of flattering it.

The ``background`` workload is different: it starts a django-q2 cluster of two
workers (``workflows_app.bench_worker``), hands runs over to it and times them end to
end, like the DBOS harness times its queue. It runs only when named with ``--only``.

``python manage.py workflows bench`` is the front end; :func:`run_benchmarks` does the
work and returns a JSON-ready dict.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import django
from django.conf import settings
from django.db import connection
from django.test.utils import override_settings

import workflows_app

from . import brokers
from .conf import workflows_settings
from .engine import workflow_engine
from .sdk import (
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
    # Workloads that are not a loop of run() calls measure themselves.
    measure: Callable[..., dict] | None = None

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
    failing_action = f"{name}-s5"

    def recording_step(position: int) -> Any:
        def invoke(n: int, ctx: Any) -> StepResponse:
            return StepResponse(n + 1, position)

        invoke.__name__ = f"invoke_s{position}"
        return create_step(f"{name}-s{position}", invoke, _undo_add_one)

    steps = [recording_step(position) for position in range(1, 5)]
    failing = create_step(failing_action, _always_fails)

    create_workflow(name, _sequence([*steps, failing]), **_storage_options(stored))

    def check(result: RunResult, i: int) -> None:
        if _compensated != [4, 3, 2, 1]:
            _fail(key, f"compensation order {_compensated!r}, expected [4, 3, 2, 1]")
        state = result.transaction.state
        if state is not TransactionState.REVERTED:
            _fail(key, f"state {state}, expected reverted")
        if len(result.errors) != 1 or result.errors[0].action != failing_action:
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
# How long the worker cluster may take to start (the warm-up runs must finish by then).
WORKER_START_SECONDS = 120.0
# Deadline for the timed runs to finish: generous, a stuck queue should still fail.
FINISH_SECONDS_MIN = 120.0
FINISH_SECONDS_PER_RUN = 0.5
COMPLETION_POLL_SECONDS = 0.02
WORKER_STOP_SECONDS = 15.0


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
        # run() only hands the run over; measure_background checks the stored rows.
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
        measure=measure_background,
    )


class WorkerCluster:
    """A ``qcluster`` with ``workers`` worker processes (``workflows_app.bench_worker``),
    in its own process group, on this process's settings and database."""

    def __init__(self, workers: int, persistent_connections: bool = True) -> None:
        self.workers = workers
        self.persistent_connections = persistent_connections
        self.process: subprocess.Popen | None = None
        self._log: Any = None

    def __enter__(self) -> WorkerCluster:
        from .bench_worker import (
            DATABASE_NAME_ENV,
            DURABILITY_ENV,
            PERSISTENT_CONNECTIONS_ENV,
            WORKERS_ENV,
        )

        self._log = tempfile.NamedTemporaryFile(
            prefix="workflows-bench-workers-", suffix=".log", delete=False
        )
        # Under override_settings, settings.SETTINGS_MODULE reads None: use the variable.
        settings_module = os.environ.get("DJANGO_SETTINGS_MODULE") or settings.SETTINGS_MODULE
        if not settings_module:
            raise BenchmarkUnavailable(
                "The worker cluster needs DJANGO_SETTINGS_MODULE (run through manage.py)."
            )
        path = [entry for entry in sys.path if entry]
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(path)),
            DATABASE_NAME_ENV: str(connection.settings_dict["NAME"]),
            WORKERS_ENV: str(self.workers),
            # The workers write the step checkpoints: they follow --durability too.
            DURABILITY_ENV: str(workflows_settings.DURABILITY),
            PERSISTENT_CONNECTIONS_ENV: "1" if self.persistent_connections else "0",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workflows_app.bench_worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc_info: Any) -> None:
        process = self.process
        if process is not None:
            # SIGTERM to the leader stops the cluster in order; then clear the group.
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=WORKER_STOP_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=WORKER_STOP_SECONDS)
        if self._log is not None:
            self._log.close()
            os.unlink(self._log.name)

    def log_tail(self, size: int = 4000) -> str:
        if self._log is None:
            return ""
        with open(self._log.name, errors="replace") as handle:
            return handle.read()[-size:]

    def check_alive(self, key: str) -> None:
        if self.process is not None and self.process.poll() is not None:
            _fail(
                key,
                f"the worker cluster exited ({self.process.returncode}):\n{self.log_tail()}",
            )


def _percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (as the DBOS harness computes it)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _start_runs(item: Workload, prefix: str, count: int) -> dict[str, float]:
    """Start ``count`` runs one after another; returns each run's start (epoch s)."""
    workflow_id, make_input, check = item.workflow_id, item.make_input, item.check
    run = workflow_engine.run
    started: dict[str, float] = {}
    for i in range(count):
        transaction_id = f"{prefix}-{i}"
        started[transaction_id] = time.time()
        check(run(workflow_id, input=make_input(i), transaction_id=transaction_id), i)
    return started


def _wait_finished(
    item: Workload, prefix: str, count: int, workers: WorkerCluster, seconds: float
) -> list[tuple[str, str, Any, Any]]:
    """Poll until the ``count`` runs named ``prefix-*`` are finished; their rows."""
    from .models import WorkflowExecution
    from .status import UNFINISHED_STATES

    rows = WorkflowExecution.objects.filter(
        workflow_id=item.workflow_id, transaction_id__startswith=prefix + "-"
    )
    deadline = time.monotonic() + seconds
    while rows.filter(state__in=UNFINISHED_STATES).exists():
        workers.check_alive(item.key)
        if time.monotonic() > deadline:
            left = rows.filter(state__in=UNFINISHED_STATES).count()
            _fail(
                item.key,
                f"{left} of {count} runs unfinished after {seconds:g} s:\n{workers.log_tail()}",
            )
        time.sleep(COMPLETION_POLL_SECONDS)
    found = list(rows.values_list("transaction_id", "state", "ended_at", "output_payload"))
    if len(found) != count:
        _fail(item.key, f"{len(found)} stored runs, expected {count}")
    for transaction_id, state, _ended, output in found:
        i = int(transaction_id.rsplit("-", 1)[1])
        if state != "done":
            _fail(item.key, f"run {transaction_id} ended {state}, expected done")
        expected = i + BACKGROUND_STEPS
        if output != expected:
            _fail(item.key, f"run {transaction_id}: expected {expected}, got {output!r}")
    return found


def measure_background(item: Workload, n: int, allow_sqlite: bool = False) -> dict:
    """Start ``n`` runs here and time them through a django-q2 cluster of
    :data:`BACKGROUND_WORKERS` workers, as the DBOS harness times its queue:
    workflows/s from the first run call to the last execution's ``ended_at``, and
    end-to-end latency per run (run called -> ``ended_at``)."""
    key = item.key
    if connection.vendor == "sqlite" and not allow_sqlite:
        raise BenchmarkUnavailable(
            f"{key}: needs a database that worker processes can share under load "
            "(PostgreSQL: set DATABASE_URL=postgres://...). On SQLite, django-q2's ORM "
            "broker and several writers lock the database. Pass --allow-sqlite to try anyway."
        )
    background = {**getattr(settings, "WORKFLOWS", {}), "BACKGROUND": "django_q"}
    # django-q2 logs every enqueue at INFO: hundreds of lines on stderr, and time.
    queue_logger = logging.getLogger("django-q")
    level = queue_logger.level
    queue_logger.setLevel(max(level, logging.WARNING))
    try:
        with override_settings(WORKFLOWS=background), WorkerCluster(BACKGROUND_WORKERS) as workers:
            result = _time_background(item, n, workers)
    finally:
        queue_logger.setLevel(level)
    return result


def _time_background(item: Workload, n: int, workers: WorkerCluster) -> dict:
    """Warm up (which also waits for the workers to be up), then time ``n`` runs."""
    tag = uuid.uuid4().hex[:10]
    warm = warmup_runs(n)
    warm_prefix = f"{item.workflow_id}-warm-{tag}"
    _start_runs(item, warm_prefix, warm)
    _wait_finished(item, warm_prefix, warm, workers, WORKER_START_SECONDS)
    gc.collect()
    prefix = f"{item.workflow_id}-{tag}"
    first = time.time()
    started = _start_runs(item, prefix, n)
    enqueue_seconds = time.time() - first
    seconds_allowed = max(FINISH_SECONDS_MIN, n * FINISH_SECONDS_PER_RUN)
    rows = _wait_finished(item, prefix, n, workers, seconds_allowed)
    ends = {transaction_id: ended.timestamp() for transaction_id, _s, ended, _o in rows}
    latencies = [(ends[tx] - began) * 1000 for tx, began in started.items()]
    seconds = max(ends.values()) - first
    return {
        "runs": n,
        "seconds": round(seconds, 6),
        "runs_per_s": round(n / seconds, 1),
        "us_per_step": round(seconds * 1e6 / (n * item.steps_per_run), 2),
        "steps_per_run": item.steps_per_run,
        "p50_ms": round(_percentile(latencies, 50), 1),
        "p95_ms": round(_percentile(latencies, 95), 1),
        "max_ms": round(max(latencies), 1),
        "enqueue_seconds": round(enqueue_seconds, 6),
        "enqueue_per_s": round(n / enqueue_seconds, 1),
        "workers": workers.workers,
        "broker": brokers.broker_name(),
        "worker_persistent_connections": workers.persistent_connections,
        "warmup_runs": warm,
    }


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


# Measuring.


def warmup_runs(n: int) -> int:
    """Untimed runs before the timed ones: a tenth of ``n``, at least 20."""
    return max(20, n // 10)


def measure(item: Workload, n: int) -> dict:
    """Warm up, then time ``n`` checked runs of the workload ``item``."""
    run_once = item.run_once
    for i in range(warmup_runs(n)):
        run_once(i)
    gc.collect()
    started = time.perf_counter()
    for i in range(n):
        run_once(i)
    seconds = time.perf_counter() - started
    return {
        "runs": n,
        "seconds": round(seconds, 6),
        "runs_per_s": round(n / seconds, 1),
        "us_per_step": round(seconds * 1e6 / (n * item.steps_per_run), 2),
        "steps_per_run": item.steps_per_run,
    }


def database_version() -> str:
    """The vendor and server version of the default database, e.g. ``PostgreSQL 15.20``."""
    connection.ensure_connection()
    vendor = connection.vendor
    if vendor == "postgresql":
        version = connection.pg_version
        return f"PostgreSQL {version // 10000}.{version % 10000}"
    if vendor == "sqlite":
        return f"SQLite {connection.Database.sqlite_version}"
    if vendor == "mysql":
        return f"{connection.display_name} {'.'.join(map(str, connection.mysql_version))}"
    return connection.display_name


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "django": django.get_version(),
        "workflows_app": workflows_app.__version__,
        "database": database_version(),
    }


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


def run_benchmarks(
    n: int,
    only: Iterable[str] | None = None,
    durability: str | None = None,
    on_result: Callable[[str, dict], Any] | None = None,
    allow_sqlite: bool = False,
) -> dict:
    """Run the selected workloads ``n`` times each; return the JSON-ready report.

    ``durability`` (``"step"`` or ``"boundary"``) applies to the stored workloads; by
    default they use ``WORKFLOWS["DURABILITY"]``. The runs use ``DEBUG = False`` so that
    Django's query log (a development aid) is not part of the measurement.
    ``allow_sqlite`` lets the ``background`` workload try SQLite, which it refuses otherwise.
    """
    if n < 1:
        raise ValueError("n must be a positive integer.")
    if durability is not None and durability not in DURABILITY_MODES:
        raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}.")
    keys = select(only)
    report: dict[str, Any] = {}
    stored_settings = {**getattr(settings, "WORKFLOWS", {})}
    if durability is not None:
        stored_settings["DURABILITY"] = durability
    with override_settings(DEBUG=False):
        for key in keys:
            item = workload(key)
            if item.measure is not None:
                with override_settings(WORKFLOWS=stored_settings):
                    result = item.measure(item, n, allow_sqlite=allow_sqlite)
            elif item.stored:
                with override_settings(WORKFLOWS=stored_settings):
                    result = measure(item, n)
            else:
                result = measure(item, n)
            report[key] = result
            if on_result is not None:
                on_result(key, result)
    report["versions"] = versions()
    report["config"] = {
        "durability": durability or workflows_settings.DURABILITY,
        "parallel_threads": workflows_settings.PARALLEL_THREADS,
        "database": f"{connection.vendor}:{connection.settings_dict.get('NAME')}",
        "debug": False,
        "warmup_runs": warmup_runs(n),
    }
    return report
