"""Helpers for testing workflows with ``WORKFLOWS["BACKGROUND"] = "immediate"``.

With the immediate backend, work meant for a django-q2 worker runs in the test's
process at once, and delayed work (retry intervals, timeouts of waiting steps,
scheduled workflows) waits on a virtual clock::

    from workflows_app.testing import advance

    result = my_workflow.run(input=...)   # a step fails, retry_interval=30
    advance(30)                           # the retry runs now, no sleeping

Call :func:`reset` between tests (drops timers, puts the clock back).
"""

from __future__ import annotations

from .background import ImmediateScheduler
from .orchestration import runtime


def immediate_scheduler() -> ImmediateScheduler:
    """The immediate backend in use (an error explains how to enable it)."""
    scheduler = runtime.scheduler
    if not isinstance(scheduler, ImmediateScheduler):
        raise RuntimeError(
            "workflows_app.testing needs WORKFLOWS['BACKGROUND'] = 'immediate' "
            f"(the background backend in use is {type(scheduler).__name__})."
        )
    return scheduler


def advance(seconds: float) -> int:
    """Move the virtual clock forward, running the timers that fall due, in order.

    Returns how many timers fired.
    """
    return immediate_scheduler().advance(seconds)


def pending() -> list[tuple[str, float]]:
    """The timers waiting on the virtual clock: ``(key, seconds until due)``."""
    return immediate_scheduler().pending()


def reset() -> None:
    """Forget every timer and put the virtual clock back to wall time."""
    scheduler = runtime.scheduler
    if isinstance(scheduler, ImmediateScheduler):
        scheduler.reset()
    else:
        from .orchestration.clock import clock

        clock.reset()
