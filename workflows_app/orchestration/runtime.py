"""Process-wide defaults the orchestrator runs with.

Outside Django they are in-memory. ``workflows_app.apps`` replaces the storage and the
scheduler and pushes the ``WORKFLOWS`` settings in here, so that neither ``sdk/`` nor
this package imports Django.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import ExecutorInterrupted
from .scheduler import Scheduler, ThreadScheduler
from .storage import InMemoryStorage, Storage


class Runtime:
    def __init__(self) -> None:
        self.storage: Storage = InMemoryStorage()
        self.scheduler: Scheduler = ThreadScheduler()
        self.parallel_threads = 4
        self.max_payload_bytes: int | None = None
        self.redactor: Any = None
        # When true, a response to a waiting step (set_step_success/failure) hands the
        # steps that follow to a worker instead of running them in the caller.
        self.responses_in_background = False
        # Called with a nested child transaction that finished after its parent's
        # step handler returned, to complete the waiting parent step.
        self.nested_finished: Callable[[Any], None] | None = None
        # Exceptions that interrupt the executor rather than fail the step that runs
        # (a worker's task timeout, set by the worker side): raised as
        # ``ExecutorInterrupted`` instead of being recorded as the step's error.
        self.interruptions: tuple[type[BaseException], ...] = ()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def releasing(self) -> tuple[type[BaseException], ...]:
        """What releases a run on its way out of the code executing it: errors and
        interruptions of the executor. Other ``BaseException``s (a process dying of
        ``KeyboardInterrupt``) leave the lease to run out."""
        return (Exception, ExecutorInterrupted, *self.interruptions)

    def pool(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=max(self.parallel_threads, 1),
                        thread_name_prefix="workflows-step",
                    )
                pool = self._pool
        return pool

    def configure(self, **values: Any) -> None:
        """Set defaults; a new ``parallel_threads`` replaces the thread pool."""
        for name, value in values.items():
            if not hasattr(self, name) or name.startswith("_"):
                raise AttributeError(f"Unknown runtime setting {name!r}")
            setattr(self, name, value)
        if "parallel_threads" in values:
            with self._lock:
                old, self._pool = self._pool, None
            if old is not None:
                old.shutdown(wait=False)


runtime = Runtime()
