"""``workflows bench --concurrency N``: N runner processes run one workload at once.

Processes, not threads, so that the interpreter lock is not what is measured. Each
runner is forked from the bench process (the workflow is already defined there), opens
its own database connection, warms up, waits for the others at a barrier and then runs
``n`` checked runs. The figure is every runner's runs over the time from the first
timed run started to the last one ended.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from typing import Any

from django.db import connection, connections

from ..orchestration.runtime import runtime
from .workloads import (
    BenchmarkError,
    BenchmarkUnavailable,
    Workload,
    timing,
    warmup_runs,
    workload,
)

# Seconds the runners may take to start and warm up, and to finish their timed runs.
START_SECONDS = 120.0
FINISH_SECONDS_MIN = 120.0
FINISH_SECONDS_PER_RUN = 0.2


def parse_concurrency(text: str) -> list[int]:
    """``"1,4,8"`` -> ``[1, 4, 8]``; raises ``ValueError`` on anything but positive integers."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--concurrency takes positive integers (e.g. 1,4,8), not {text!r}.")
        values.append(int(part))
    return list(dict.fromkeys(values))


def _runner(key: str, n: int, index: int, barrier: Any, results: Any) -> None:
    """One runner process: warm up, wait for the others, time ``n`` runs, report."""
    try:
        # A fresh thread pool: the parent's threads do not exist in this process.
        runtime.configure(parallel_threads=runtime.parallel_threads)
        item = workload(key)
        for i in range(warmup_runs(n)):
            item.run_once(i)
        barrier.wait(timeout=START_SECONDS)
        started = time.time()
        for i in range(n):
            item.run_once(index * n + i)
        results.put((index, started, time.time(), None))
    except Exception:
        barrier.abort()
        results.put((index, None, None, traceback.format_exc()))
    finally:
        connections.close_all()


def measure_concurrently(item: Workload, n: int, runners: int) -> dict:
    """Time ``n`` runs in each of ``runners`` processes started together."""
    if item.stored and connection.vendor == "sqlite":
        raise BenchmarkUnavailable(
            f"{item.key}: --concurrency needs a database that processes can share under "
            "load (PostgreSQL: set DATABASE_URL=postgres://...)."
        )
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(runners)
    results = context.Queue()
    # The runners open their own connections; none may share this process's socket.
    connections.close_all()
    processes = [
        context.Process(target=_runner, args=(item.key, n, index, barrier, results), daemon=True)
        for index in range(runners)
    ]
    for process in processes:
        process.start()
    deadline = (
        time.monotonic() + START_SECONDS + max(FINISH_SECONDS_MIN, n * FINISH_SECONDS_PER_RUN)
    )
    reports = []
    try:
        while len(reports) < runners:
            try:
                reports.append(results.get(timeout=max(deadline - time.monotonic(), 0.1)))
            except queue.Empty:
                raise BenchmarkError(
                    f"{item.key}: {runners - len(reports)} of {runners} runners did not finish"
                ) from None
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    failures = [error for _index, _start, _end, error in reports if error]
    if failures:
        raise BenchmarkError(f"{item.key}: a runner failed:\n{failures[0]}")
    first = min(start for _index, start, _end, _error in reports)
    last = max(end for _index, _start, end, _error in reports)
    return {**timing(item, n * runners, last - first), "runners": runners, "runs_per_runner": n}
