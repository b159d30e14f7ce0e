"""The scheduler protocol: how a run continues in the background, now or later.

``enqueue`` hands a run to a worker at once (a run stopped before an async step);
``schedule`` resumes it after a delay (retry intervals, timeouts of waiting steps);
``clear`` forgets a delayed resume. A resume is ``resume(workflow_id,
transaction_id)``: load the unfinished run and execute it as a worker would.

Outside Django the :class:`ThreadScheduler` resumes on threads of this process; the
Django app swaps in a django-q2 backend or the immediate backend of the tests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger("workflows_app")

ResumeCallback = Callable[[str, str], None]


class Scheduler(Protocol):
    def enqueue(self, workflow_id: str, transaction_id: str) -> None:
        """Resume the transaction in the background as soon as a worker is free."""

    def schedule(self, workflow_id: str, transaction_id: str, delay: float, key: str) -> None:
        """Resume the transaction after ``delay`` seconds (the same ``key`` replaces it)."""

    def clear(self, key: str) -> None:
        """Forget the delayed resume registered under ``key`` (if it has not fired yet)."""


class ThreadScheduler:
    """Background work on threads of this process (the default outside Django)."""

    def __init__(self) -> None:
        self.resume: ResumeCallback | None = None
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self._sequence = 0

    def enqueue(self, workflow_id: str, transaction_id: str) -> None:
        with self._lock:
            self._sequence += 1
            key = f"now:{self._sequence}"
        self.schedule(workflow_id, transaction_id, 0, key)

    def schedule(self, workflow_id: str, transaction_id: str, delay: float, key: str) -> None:
        timer = threading.Timer(max(delay, 0), self._fire, (key, workflow_id, transaction_id))
        timer.daemon = True
        with self._lock:
            old = self._timers.pop(key, None)
            if old is not None:
                old.cancel()
            self._timers[key] = timer
        timer.start()

    def clear(self, key: str) -> None:
        with self._lock:
            timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _fire(self, key: str, workflow_id: str, transaction_id: str) -> None:
        with self._lock:
            self._timers.pop(key, None)
        if self.resume is None:
            logger.warning("No resume callback: %s:%s stays paused", workflow_id, transaction_id)
            return
        try:
            self.resume(workflow_id, transaction_id)
        except Exception:
            logger.exception("Resuming %s:%s failed", workflow_id, transaction_id)
