"""The ``background`` benchmark: runs handed to a django-q2 cluster, timed end to end.

:func:`measure_background` starts a ``qcluster`` of :data:`BACKGROUND_WORKERS` workers
(:mod:`workflows_app.bench.worker`), starts runs here and times each from ``run()`` to
its stored ``ended_at``, as the DBOS harness times its queue.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import connection
from django.test.utils import override_settings

from .. import brokers
from ..conf import workflows_settings
from ..engine import workflow_engine
from .worker import DATABASE_NAME_ENV, DURABILITY_ENV, PERSISTENT_CONNECTIONS_ENV, WORKERS_ENV
from .workloads import (
    BACKGROUND_STEPS,
    BACKGROUND_WORKERS,
    BenchmarkUnavailable,
    Workload,
    _fail,
    timing,
    warmup_runs,
)

# How long the worker cluster may take to start (the warm-up runs must finish by then).
WORKER_START_SECONDS = 120.0
# Deadline for the timed runs to finish: generous, a stuck queue should still fail.
FINISH_SECONDS_MIN = 120.0
FINISH_SECONDS_PER_RUN = 0.5
COMPLETION_POLL_SECONDS = 0.02
WORKER_STOP_SECONDS = 15.0


class WorkerCluster:
    """A ``qcluster`` with ``workers`` worker processes (:mod:`workflows_app.bench.worker`),
    in its own process group, on this process's settings and database."""

    def __init__(self, workers: int, persistent_connections: bool = True) -> None:
        self.workers = workers
        self.persistent_connections = persistent_connections
        self.process: subprocess.Popen | None = None
        self._log: Any = None

    def __enter__(self) -> WorkerCluster:
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
            [sys.executable, "-m", "workflows_app.bench.worker"],
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


def _start_runs(
    item: Workload, prefix: str, count: int, rate: float | None = None
) -> dict[str, float]:
    """Start ``count`` runs one after another, ``rate`` per second at most (``None``: as
    fast as this process can); returns each run's start (epoch s)."""
    workflow_id, make_input, check = item.workflow_id, item.make_input, item.check
    run = workflow_engine.run
    started: dict[str, float] = {}
    first = time.monotonic()
    for i in range(count):
        if rate is not None:
            # Open loop: each start has its slot, whatever the previous ones cost.
            delay = first + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        transaction_id = f"{prefix}-{i}"
        started[transaction_id] = time.time()
        check(run(workflow_id, input=make_input(i), transaction_id=transaction_id), i)
    return started


def _wait_finished(
    item: Workload, prefix: str, count: int, workers: WorkerCluster, seconds: float
) -> list[tuple[str, str, Any, Any]]:
    """Poll until the ``count`` runs named ``prefix-*`` are finished; their rows."""
    from ..models import WorkflowExecution
    from ..status import UNFINISHED_STATES

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


def measure_background(
    item: Workload, n: int, allow_sqlite: bool = False, rate: float | None = None
) -> dict:
    """Start ``n`` runs here and time them through a django-q2 cluster of
    :data:`BACKGROUND_WORKERS` workers, as the DBOS harness times its queue:
    workflows/s from the first run call to the last execution's ``ended_at``, and
    end-to-end latency per run (run called -> ``ended_at``).

    By default the runs start as fast as this process can start them, so the latency
    includes the queue that forms when that is faster than the workers; ``rate`` starts
    them at that many per second instead (the latency at an offered load)."""
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
            result = _time_background(item, n, workers, rate)
    finally:
        queue_logger.setLevel(level)
    return result


def _time_background(
    item: Workload, n: int, workers: WorkerCluster, rate: float | None = None
) -> dict:
    """Warm up (which also waits for the workers to be up), then time ``n`` runs."""
    tag = uuid.uuid4().hex[:10]
    warm = warmup_runs(n)
    warm_prefix = f"{item.workflow_id}-warm-{tag}"
    _start_runs(item, warm_prefix, warm)
    _wait_finished(item, warm_prefix, warm, workers, WORKER_START_SECONDS)
    gc.collect()
    prefix = f"{item.workflow_id}-{tag}"
    first = time.time()
    started = _start_runs(item, prefix, n, rate)
    enqueue_seconds = time.time() - first
    seconds_allowed = max(FINISH_SECONDS_MIN, n * FINISH_SECONDS_PER_RUN)
    rows = _wait_finished(item, prefix, n, workers, seconds_allowed)
    ends = {transaction_id: ended.timestamp() for transaction_id, _s, ended, _o in rows}
    latencies = [(ends[tx] - began) * 1000 for tx, began in started.items()]
    seconds = max(ends.values()) - first
    return {
        **timing(item, n, seconds),
        "p50_ms": round(_percentile(latencies, 50), 1),
        "p95_ms": round(_percentile(latencies, 95), 1),
        "max_ms": round(max(latencies), 1),
        "enqueue_seconds": round(enqueue_seconds, 6),
        "enqueue_per_s": round(n / enqueue_seconds, 1),
        "offered_per_s": rate,
        "workers": workers.workers,
        "broker": brokers.broker_name(),
        "worker_persistent_connections": workers.persistent_connections,
        "warmup_runs": warm,
    }
