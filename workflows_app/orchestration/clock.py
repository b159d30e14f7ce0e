"""The orchestrator's clock: wall time plus an offset that tests may move forward.

Retry intervals, step and transaction timeouts are compared against this clock, so
``workflows_app.testing.advance(seconds)`` can make them due without sleeping.
"""

from __future__ import annotations

import time


class Clock:
    """Wall-clock seconds, shifted by ``offset`` (0 outside tests)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("The clock only moves forward.")
        self.offset += seconds

    def advance_to(self, moment: float) -> None:
        """Move forward until ``now()`` has reached ``moment`` (never back).

        Adding the difference to the offset can leave ``now()`` a rounding error
        short of ``moment``; a timer fired "at" its due moment must see it reached.
        """
        for _ in range(8):
            gap = moment - self.now()
            if gap <= 0:
                return
            self.offset += max(gap, 1e-6)
        raise RuntimeError(f"The clock could not reach {moment}.")

    def reset(self) -> None:
        self.offset = 0.0


clock = Clock()


def now_ms() -> int:
    """Milliseconds since the epoch on the orchestrator's clock."""
    return int((time.time() + clock.offset) * 1000)


def due_at(start_ms: int, seconds: float) -> int:
    """The moment (ms) a timeout of ``seconds`` counted from ``start_ms`` passes.

    Timers are armed for this moment and the checks on resume ask ``now >= due``:
    a resume that a timer starts at its due moment must find the timeout passed,
    or the run would re-arm a timer for "now" and wait on a task that has already
    run (seen with the virtual clock, whose timers fire exactly on time).
    """
    return start_ms + int(seconds * 1000)
