"""A stored 5-step workflow for the crash-recovery test, imported by the test process
and by ``crash_worker.py`` so that both register the same definition.

Every step execution appends its number to the file named by ``CRASH_SIDE_EFFECTS``.
Step 3, the first time it runs, writes the file named by ``CRASH_MARKER`` and then
sleeps for a long time, so that the test can kill the process in the middle of it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from workflows_app.sdk import StepResponse, create_step, create_workflow

WORKFLOW_NAME = "storage-crash-recovery-chain"
SIDE_EFFECTS_ENV = "CRASH_SIDE_EFFECTS"
MARKER_ENV = "CRASH_MARKER"
SLEEP_SECONDS = 600


def _append(number: int) -> int:
    """Record one execution of step ``number``; returns how often it ran before."""
    path = Path(os.environ[SIDE_EFFECTS_ENV])
    before = path.read_text().split().count(str(number)) if path.exists() else 0
    with path.open("a") as handle:
        handle.write(f"{number}\n")
        handle.flush()
        os.fsync(handle.fileno())
    return before


def _make(number: int):
    def invoke(value, ctx):
        before = _append(number)
        if number == 3 and before == 0:
            Path(os.environ[MARKER_ENV]).write_text(str(os.getpid()))
            time.sleep(SLEEP_SECONDS)
        return StepResponse((value or 0) + 1)

    return create_step(f"{WORKFLOW_NAME}-step{number}", invoke)


STEPS = [_make(number) for number in range(1, 6)]


def _compose(inp):
    value = inp
    for step in STEPS:
        value = step(value)
    return value


crash_workflow = create_workflow(WORKFLOW_NAME, _compose, store=True, retention_time=3600)
