"""The scheduler protocol: how delayed work (retry intervals, timeouts) resumes a run.

``resume`` is the callable the scheduler calls when a delay is over:
``resume(workflow_id, transaction_id)``. The SDK installs it; the Django app swaps
the whole scheduler for one backed by django-q2 or by a virtual clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger("workflows_app")

ResumeCallback = Callable[[str, str], None]


class Scheduler(Protocol):
    def schedule(self, workflow_id: str, transaction_id: str, delay: float, key: str) -> None:
        """Resume the transaction after ``delay`` seconds (the same ``key`` replaces it)."""

    def clear(self, key: str) -> None:
        """Forget the delayed resume registered under ``key`` (if it has not fired yet)."""


class ThreadScheduler:
    """Delays with ``threading.Timer`` in this process (the default outside Django)."""

    def __init__(self) -> None:
        self.resume: ResumeCallback | None = None
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()

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
            return
        try:
            self.resume(workflow_id, transaction_id)
        except Exception:
            logger.exception("Resuming %s:%s failed", workflow_id, transaction_id)
