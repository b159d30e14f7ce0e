"""Background backends: where async steps, delays and schedules of workflows run.

``WORKFLOWS["BACKGROUND"]`` picks one:

- ``"django_q"``: django-q2 tasks (``workflows_app.tasks``, ids only) for work to
  do now, ``Schedule.ONCE`` rows for delays, CRON/MINUTES schedules for recurring
  jobs. With a database broker (PostgreSQL or ORM, see :mod:`workflows_app.brokers`)
  the enqueue joins the database transaction that hands the run over; with Redis it
  is sent after that transaction commits.
- ``"immediate"``: for tests. Work to do now runs in this process at once; delays
  and recurring jobs wait on a virtual clock moved by
  :func:`workflows_app.testing.advance`.
"""

from __future__ import annotations

import datetime
import hashlib
import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from .brokers import uses_redis
from .conf import workflows_settings
from .orchestration.clock import clock

logger = logging.getLogger("workflows_app")

RESUME_TASK = "workflows_app.tasks.resume"
# django-q2's Schedule.name holds at most 100 characters.
_NAME_LIMIT = 100


def save_results() -> bool:
    """Whether django-q2 saves the successes of the app's tasks (``SAVE_TASK_RESULTS``).

    django-q2 saves a failed task whatever this says. By default a success is not
    saved: the monitor skips its select and insert per task, and the step log
    (StepExecution: task id, worker, duration) is the record. Read at each call, so
    overrides apply."""
    return bool(workflows_settings.SAVE_TASK_RESULTS)


def schedule_options() -> str:
    """A schedule's ``kwargs``: the task django-q2 starts from it is saved as the app's
    queued tasks are (its scheduler hands ``q_options`` to ``async_task``)."""
    return repr({"q_options": {"save": save_results()}})


def schedule_name(key: str) -> str:
    """A schedule name for ``key`` that fits django-q2's column (long keys hashed)."""
    if len(key) <= _NAME_LIMIT:
        return key
    digest = hashlib.sha1(key.encode()).hexdigest()
    return f"{key[: _NAME_LIMIT - len(digest) - 1]}:{digest}"


def next_cron_time(expression: str, after: datetime.datetime) -> datetime.datetime:
    """The first time after ``after`` that the cron expression names."""
    try:
        from croniter import croniter
    except ImportError:
        raise ImproperlyConfigured(
            f"The cron schedule {expression!r} needs the croniter package: "
            "pip install 'workflows-app[cron]'."
        ) from None

    return croniter(expression, after).get_next(datetime.datetime)


@dataclass(frozen=True)
class Recurrence:
    """How often a recurring job runs: a cron expression or an interval in seconds;
    ``times`` caps the number of runs (``None``: forever)."""

    cron: str | None = None
    every: float | None = None
    times: int | None = None

    def next_after(self, moment: datetime.datetime) -> datetime.datetime:
        if self.cron:
            return next_cron_time(self.cron, moment)
        return moment + datetime.timedelta(seconds=float(self.every or 60))


class DjangoQScheduler:
    """Background work through django-q2."""

    name = "django_q"

    @property
    def transactional(self) -> bool:
        # PostgreSQL and ORM brokers: the queue row is written in the caller's transaction.
        return not uses_redis()

    def enqueue(self, workflow_id: str, transaction_id: str) -> None:
        """Queue the resume of a run that was handed over.

        With Redis the task is sent after the hand-over committed: the run is stored
        and its row carries a deadline. If the broker refuses the task then, the error
        is logged and not raised, so the caller gets its committed run (and does not
        start a second one); the recovery sweep resumes the run once the deadline
        passes. With the ORM broker the task joins the hand-over's transaction and an
        error rolls both back.
        """
        self.enqueue_task(RESUME_TASK, workflow_id, transaction_id, recoverable=True)

    def enqueue_task(self, func: str, *args: Any, recoverable: bool = False) -> None:
        if not apps.is_installed("django_q"):
            # Without the app django-q2 would push to a Redis nobody configured.
            raise ImproperlyConfigured(
                "WORKFLOWS['BACKGROUND'] is 'django_q' but 'django_q' is not in "
                "INSTALLED_APPS: add it and set Q_CLUSTER (manage.py check explains)."
            )
        from django_q.tasks import async_task

        def send() -> None:
            async_task(func, *args, save=save_results())

        def send_after_commit() -> None:
            try:
                send()
            except Exception:
                if not recoverable:
                    raise
                logger.exception(
                    "The broker did not take %s%r; the run is stored and the recovery "
                    "sweep resumes it when its hand-over deadline passes",
                    func,
                    args,
                )

        if uses_redis():
            transaction.on_commit(send_after_commit)
        else:
            send()

    def schedule(self, workflow_id: str, transaction_id: str, delay: float, key: str) -> None:
        if delay <= 0:
            self.enqueue(workflow_id, transaction_id)
            return
        from django_q.models import Schedule

        name = schedule_name(key)
        next_run = timezone.now() + datetime.timedelta(seconds=delay)
        values = {
            "func": RESUME_TASK,
            "args": repr((workflow_id, transaction_id)),
            "kwargs": schedule_options(),
            "schedule_type": Schedule.ONCE,
            "repeats": -1,
            "next_run": next_run,
        }
        if not Schedule.objects.filter(name=name).update(**values):
            Schedule.objects.create(name=name, **values)

    def clear(self, key: str) -> None:
        from django_q.models import Schedule

        Schedule.objects.filter(name=schedule_name(key)).delete()

    def repeat(self, name: str, func: str, args: tuple, recurrence: Recurrence) -> str:
        """Create or update a recurring django-q2 schedule; returns what was done."""
        from django_q.models import Schedule

        if recurrence.cron:
            values: dict[str, Any] = {"schedule_type": Schedule.CRON, "cron": recurrence.cron}
        else:
            every = float(recurrence.every or 0)
            if every < 60 or every % 60:
                raise ValueError(
                    f"Schedule {name}: an interval of {every:g} s cannot be a django-q2 "
                    "schedule, which counts whole minutes; use a multiple of 60 or a cron "
                    "expression."
                )
            values = {"schedule_type": Schedule.MINUTES, "minutes": int(every // 60), "cron": None}
        values.update(func=func, args=repr(tuple(args)), kwargs=schedule_options())
        existing = Schedule.objects.filter(name=name).first()
        if existing is not None and all(
            getattr(existing, key) == value for key, value in values.items()
        ):
            return "unchanged"
        values["repeats"] = recurrence.times if recurrence.times else -1
        values["next_run"] = recurrence.next_after(timezone.now())
        if existing is None:
            Schedule.objects.create(name=name, **values)
            return "created"
        Schedule.objects.filter(pk=existing.pk).update(**values)
        return "updated"

    def remove_repeats(self, prefix: str, keep: set[str]) -> list[str]:
        """Delete recurring schedules named ``prefix*`` that are not in ``keep``."""
        from django_q.models import Schedule

        stale = Schedule.objects.filter(name__startswith=prefix).exclude(name__in=keep)
        names = list(stale.values_list("name", flat=True))
        stale.delete()
        return names


@dataclass(order=True)
class _Timer:
    due: float
    order: int
    key: str = field(compare=False)
    func: Callable[..., Any] = field(compare=False)
    args: tuple = field(compare=False)
    recurrence: Recurrence | None = field(default=None, compare=False)
    runs: int = field(default=0, compare=False)


class ImmediateScheduler:
    """Runs background work in this process: now at once, later on a virtual clock."""

    name = "immediate"
    transactional = False

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._timers: dict[str, _Timer] = {}
        self._order = itertools.count()

    # The scheduler protocol

    def enqueue(self, workflow_id: str, transaction_id: str) -> None:
        self.enqueue_task(RESUME_TASK, workflow_id, transaction_id)

    def enqueue_task(self, func: str, *args: Any) -> None:
        import_string(func)(*args)

    def schedule(self, workflow_id: str, transaction_id: str, delay: float, key: str) -> None:
        if delay <= 0:
            self.enqueue(workflow_id, transaction_id)
            return
        self._add(
            key, clock.now() + delay, import_string(RESUME_TASK), (workflow_id, transaction_id)
        )

    def clear(self, key: str) -> None:
        with self._lock:
            self._timers.pop(key, None)

    def repeat(self, name: str, func: str, args: tuple, recurrence: Recurrence) -> str:
        with self._lock:
            existed = name in self._timers
        now = datetime.datetime.fromtimestamp(clock.now(), tz=datetime.UTC)
        due = recurrence.next_after(now).timestamp()
        self._add(name, due, import_string(func), tuple(args), recurrence)
        return "updated" if existed else "created"

    def remove_repeats(self, prefix: str, keep: set[str]) -> list[str]:
        with self._lock:
            stale = [
                key
                for key, timer in self._timers.items()
                if key.startswith(prefix) and key not in keep and timer.recurrence is not None
            ]
            for key in stale:
                del self._timers[key]
        return stale

    # The virtual clock

    def advance(self, seconds: float) -> int:
        """Move the clock ``seconds`` forward, firing what falls due on the way, in
        order and each at its own time. Returns the number of timers fired."""
        target = clock.now() + seconds
        fired = 0
        while True:
            with self._lock:
                due = [t for t in self._timers.values() if t.due <= target]
                if not due:
                    break
                timer = heapq.nsmallest(1, due)[0]
                del self._timers[timer.key]
            clock.advance_to(timer.due)
            self._fire(timer)
            fired += 1
        clock.advance_to(target)
        return fired

    def pending(self) -> list[tuple[str, float]]:
        """``(key, seconds until due)`` of every timer, soonest first."""
        now = clock.now()
        with self._lock:
            timers = sorted(self._timers.values())
        return [(t.key, t.due - now) for t in timers]

    def reset(self) -> None:
        with self._lock:
            self._timers.clear()
        clock.reset()

    def _add(
        self,
        key: str,
        due: float,
        func: Callable[..., Any],
        args: tuple,
        recurrence: Recurrence | None = None,
        runs: int = 0,
    ) -> None:
        timer = _Timer(due, next(self._order), key, func, args, recurrence, runs)
        with self._lock:
            self._timers[key] = timer

    def _fire(self, timer: _Timer) -> None:
        recurrence = timer.recurrence
        if recurrence is not None:
            runs = timer.runs + 1
            if recurrence.times is None or runs < recurrence.times:
                moment = datetime.datetime.fromtimestamp(timer.due, tz=datetime.UTC)
                due = recurrence.next_after(moment).timestamp()
                self._add(timer.key, due, timer.func, timer.args, recurrence, runs)
        timer.func(*timer.args)


def prune_task_results(retention_days: float | None, now: datetime.datetime | None = None) -> int:
    """Delete django-q2's saved successes that stopped more than ``retention_days``
    ago, in one ``DELETE`` (no row read into Python); returns the count.

    Successes of the app's tasks, queued or started by its schedules, are saved
    with ``WORKFLOWS["SAVE_TASK_RESULTS"]`` (other tasks follow django-q2); with
    ``Q_CLUSTER["save_limit"]`` 0 django-q2 never prunes them, which is cheaper per
    task than its own pruning (see system check ``workflows_app.W003``)."""
    if retention_days is None or not apps.is_installed("django_q"):
        return 0
    from django_q.models import Success

    cutoff = (now or timezone.now()) - datetime.timedelta(days=retention_days)
    return Success.objects.filter(stopped__lt=cutoff).delete()[0]


def worker_interruptions() -> tuple[type[BaseException], ...]:
    """What interrupts the code executing a run in a django-q2 worker rather than
    failing the step it runs: django-q2's task timeout, which a ``SIGALRM`` handler
    raises in whatever frame runs (``TimeoutException``, a ``SystemExit``). The
    orchestrator lets it through as ``ExecutorInterrupted``; the run is released and
    recovered, and the worker process is replaced."""
    if not apps.is_installed("django_q"):
        return ()
    from django_q.exceptions import TimeoutException

    return (TimeoutException,)


def build_scheduler(name: str) -> DjangoQScheduler | ImmediateScheduler:
    """The backend for a ``WORKFLOWS["BACKGROUND"]`` value."""
    if name == "immediate":
        return ImmediateScheduler()
    return DjangoQScheduler()
