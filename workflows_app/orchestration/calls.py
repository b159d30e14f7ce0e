"""Calling step handlers: one attempt at a time, or a batch together.

Only the handlers of I/O-bound steps of a parallel batch run on pool threads;
everything else the orchestrator does stays on the calling thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .clock import clock
from .context import StepContext
from .errors import ExecutorInterrupted, StaleTransactionError
from .runtime import runtime
from .transaction import StepRun


class Outcome:
    """How an attempt ended, before the orchestrator applies it."""

    OK = "ok"
    ERROR = "error"
    SKIP = "skip"
    WAIT = "wait"


_local = threading.local()


def run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion on this thread's own event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = getattr(_local, "loop", None)
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            _local.loop = loop
        return loop.run_until_complete(coro)
    # Called from inside a running loop (run() used from async code): use a pool thread.
    return runtime.pool().submit(run_coroutine, coro).result()


class Attempt:
    """One handler call being prepared, executed and then applied."""

    __slots__ = (
        "ctx",
        "ended",
        "fn",
        "handler_type",
        "input",
        "is_coroutine",
        "outcome",
        "replayed",
        "run",
        "started",
        "timed_out_run",
        "value",
    )

    def __init__(self, run: StepRun, handler_type: str):
        self.run = run
        self.handler_type = handler_type
        self.input: Any = None
        self.fn: Any = None
        self.ctx: StepContext | None = None
        self.is_coroutine = False
        self.outcome: str | None = None
        self.value: Any = None
        self.replayed = False
        self.started = 0.0
        self.ended = 0.0
        # Replayed attempt that the run's timeout caught while it ran.
        self.timed_out_run = False


def call(job: Attempt) -> None:
    """Run one attempt's handler here and note its outcome."""
    job.started = clock.now()
    try:
        value = job.fn(job.input, job.ctx)
        if job.is_coroutine:
            value = run_coroutine(value)
        job.outcome, job.value = Outcome.OK, value
    except (StaleTransactionError, ExecutorInterrupted):
        # Another executor owns the run (seen by a handler that writes, e.g. a loop),
        # or a nested run inside this handler was interrupted: not the step's outcome.
        raise
    except runtime.interruptions as exc:
        raise interrupted(job, exc) from exc
    except (Exception, SystemExit) as exc:
        job.outcome, job.value = Outcome.ERROR, exc
    job.ended = clock.now()


def interrupted(job: Attempt, exc: BaseException) -> ExecutorInterrupted:
    """The executor was interrupted inside ``job``'s handler (e.g. by a worker's task
    timeout): the attempt gets no outcome, so nothing records it as failed."""
    return ExecutorInterrupted(exc, job.run.step_id, job.handler_type)


async def _acall(job: Attempt) -> None:
    job.started = clock.now()
    try:
        job.outcome, job.value = Outcome.OK, await job.fn(job.input, job.ctx)
    except ExecutorInterrupted:
        raise
    except runtime.interruptions as exc:
        raise interrupted(job, exc) from exc
    except (Exception, SystemExit) as exc:
        job.outcome, job.value = Outcome.ERROR, exc
    job.ended = clock.now()


async def _gather(jobs: list[Attempt]) -> None:
    await asyncio.gather(*(_acall(job) for job in jobs))


def call_concurrently(jobs: list[Attempt]) -> None:
    """Run a batch's handlers, overlapping what can overlap.

    Coroutines are gathered on this thread's event loop; plain functions of steps
    marked ``io_bound`` run on the thread pool; every other plain function runs here,
    one after another: under the interpreter lock a thread per step would only add a
    hand-off, with nothing to overlap. Handlers that write as they go (loops write
    their iteration rows) always stay here, where the database connection holds the run.
    """
    if runtime.parallel_threads <= 1:
        for job in jobs:
            call(job)
        return
    coroutines = [job for job in jobs if job.is_coroutine]
    here: list[Attempt] = []
    plain: list[Attempt] = []
    for job in jobs:
        if not job.is_coroutine:
            node = job.run.node
            pooled = node.options.io_bound and not node.runs_on_caller
            (plain if pooled else here).append(job)
    if not plain:
        if coroutines:
            run_coroutine(_gather(coroutines))
        for job in here:
            call(job)
        return
    if not here and not coroutines:
        here.append(plain.pop(0))
    pool = runtime.pool()
    futures = [(job, pool.submit(call, job)) for job in plain]
    if coroutines:
        run_coroutine(_gather(coroutines))
    for job in here:
        call(job)
    for job, future in futures:
        # A job no pool thread has picked up yet runs here, so nested runs cannot deadlock.
        if future.cancel():
            call(job)
        else:
            future.result()
