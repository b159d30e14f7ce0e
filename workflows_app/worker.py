"""What a django-q2 worker process does besides running tasks.

When a qcluster worker starts (django-q2's ``post_spawn`` signal) it queues a
recovery sweep, so runs left behind by a dead worker are resumed at once, and starts
a thread that turns due django-q2 schedules into tasks every
``WORKFLOWS["SCHEDULER_TICK_SECONDS"]``: django-q2 itself does that only about every
30 seconds, too coarse for retry intervals and timeouts of a few seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextvars import ContextVar
from typing import Any

from django.db import close_old_connections

logger = logging.getLogger("workflows_app")

_ticker: threading.Thread | None = None
_ticker_lock = threading.Lock()

#: Id of the django-q2 task this thread runs, set by django-q2's ``pre_execute``
#: signal: the step attempts recorded meanwhile keep it (``StepExecution.task_id``).
_current_task: ContextVar[str] = ContextVar("workflows_current_task", default="")


def current_task_id() -> str:
    """The django-q2 task id being executed in this thread, ``""`` outside a task."""
    return _current_task.get()


_label: tuple[int, str] = (0, "")


def process_label() -> str:
    """``host:pid`` of this process, kept on each step attempt it runs."""
    global _label
    pid = os.getpid()
    if _label[0] != pid:
        _label = (pid, f"{socket.gethostname()}:{pid}")
    return _label[1]


def connect_worker_signals() -> None:
    from django_q.signals import post_execute, post_spawn, pre_execute

    post_spawn.connect(on_worker_start, dispatch_uid="workflows_app.worker_start")
    pre_execute.connect(on_task_start, dispatch_uid="workflows_app.task_start")
    post_execute.connect(on_task_end, dispatch_uid="workflows_app.task_end")


def on_task_start(sender: Any = None, task: dict | None = None, **kwargs: Any) -> None:
    _current_task.set(str((task or {}).get("id") or ""))


def on_task_end(sender: Any = None, **kwargs: Any) -> None:
    _current_task.set("")


def on_worker_start(sender: Any = None, proc_name: str = "", **kwargs: Any) -> None:
    from .conf import workflows_settings

    if workflows_settings.BACKGROUND != "django_q":
        return
    from .background import DjangoQScheduler

    try:
        DjangoQScheduler().enqueue_task("workflows_app.tasks.recover")
    except Exception:
        logger.exception("Could not queue the recovery sweep at worker start")
    start_ticker(float(workflows_settings.SCHEDULER_TICK_SECONDS))


def start_ticker(seconds: float) -> None:
    """Start (once per process) the thread that runs django-q2's scheduler often."""
    global _ticker
    if seconds <= 0:
        return
    with _ticker_lock:
        if _ticker is not None and _ticker.is_alive():
            return
        _ticker = threading.Thread(
            target=_tick, args=(seconds,), name="workflows-schedule-tick", daemon=True
        )
        _ticker.start()


def _tick(seconds: float) -> None:
    from django_q.brokers import get_broker
    from django_q.scheduler import scheduler

    broker = get_broker()
    stop = threading.Event()
    while not stop.wait(seconds):
        try:
            scheduler(broker=broker)
        except Exception:
            logger.exception("Running due django-q2 schedules failed")
        finally:
            close_old_connections()
