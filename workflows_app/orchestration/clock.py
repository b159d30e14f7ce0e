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

    def reset(self) -> None:
        self.offset = 0.0


clock = Clock()


def now_ms() -> int:
    """Milliseconds since the epoch on the orchestrator's clock."""
    return int((time.time() + clock.offset) * 1000)
