"""Workflows that the real qcluster workers of tests/background run.

The workers find them by autodiscovery (``tests.background.bgapp`` is installed by
``tests/background/settings.py``); the pytest process registers them by importing this
module. Every step appends one line ``<transaction_id> <step> <attempt> <pid> <time>``
to ``<input["dir"]>/effects.txt`` (written with ``O_APPEND`` and fsync'ed, so lines of
concurrent workers never mix and survive a kill -9): the tests count these lines to see
how often each step body really ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from workflows_app.sdk import StepResponse, WorkflowResponse, create_step, create_workflow

THREE_STEPS = "bg-three-steps"
RETRY_ONCE = "bg-retry-once"
CRASH = "bg-crash-in-step-2"

EFFECTS_FILE = "effects.txt"
# Written by the crash workflow's step 2 when its first attempt starts.
STARTED_FILE = "step2-started"
# How long step 2 of the crash workflow sleeps on its first attempt: far longer than
# the test waits, so the kill always lands inside the step.
CRASH_SLEEP_SECONDS = 60

BACKGROUND = {"async_": True, "background_execution": True}
STORE = {"store": True, "retention_time": 3600}


def record(directory: str, ctx: Any, step: str) -> None:
    """Append one side-effect line for this step execution."""
    line = f"{ctx.transaction_id} {step} {ctx.attempt} {os.getpid()} {time.time():.3f}\n"
    fd = os.open(Path(directory) / EFFECTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_effects(directory: str | Path) -> list[tuple[str, str, int, int, float]]:
    """The recorded ``(transaction_id, step, attempt, pid, time)`` lines, in order."""
    path = Path(directory) / EFFECTS_FILE
    if not path.exists():
        return []
    effects = []
    for line in path.read_text().splitlines():
        tx, step, attempt, pid, moment = line.split()
        effects.append((tx, step, int(attempt), int(pid), float(moment)))
    return effects


def _next(value: dict, step: str) -> StepResponse:
    return StepResponse({**value, "trail": [*value.get("trail", []), step]})


# bg-three-steps: three background steps in a row.


def _step(name: str):
    def invoke(value: dict, ctx: Any) -> StepResponse:
        record(value["dir"], ctx, name)
        return _next(value, name)

    invoke.__name__ = f"invoke_{name}"
    return create_step(f"{THREE_STEPS}-{name}", invoke, **BACKGROUND)


_three = [_step(f"s{number}") for number in (1, 2, 3)]


def _three_steps(input: dict) -> WorkflowResponse:
    value = input
    for step in _three:
        value = step(value)
    return WorkflowResponse(value)


create_workflow(THREE_STEPS, _three_steps, **STORE)


# bg-retry-once: a background step, then one that fails on its first attempt and is
# retried after retry_interval seconds.


def _retry_first(value: dict, ctx: Any) -> StepResponse:
    record(value["dir"], ctx, "first")
    return _next(value, "first")


def _flaky(value: dict, ctx: Any) -> StepResponse:
    record(value["dir"], ctx, "flaky")
    if ctx.attempt <= 1:
        raise RuntimeError("flaky step fails on its first attempt")
    return _next(value, "flaky")


_retry_steps = [
    create_step(f"{RETRY_ONCE}-first", _retry_first, **BACKGROUND),
    create_step(f"{RETRY_ONCE}-flaky", _flaky, max_retries=1, retry_interval=2, **BACKGROUND),
]


def _retry_once(input: dict) -> WorkflowResponse:
    value = input
    for step in _retry_steps:
        value = step(value)
    return WorkflowResponse(value)


create_workflow(RETRY_ONCE, _retry_once, **STORE)


# bg-crash-in-step-2: step 2's first attempt announces itself, then sleeps until the
# test kills the whole cluster; a later attempt returns at once.


def _crash_step(name: str):
    def invoke(value: dict, ctx: Any) -> StepResponse:
        record(value["dir"], ctx, name)
        if name == "s2":
            started = Path(value["dir"]) / STARTED_FILE
            if not started.exists():
                started.write_text(str(os.getpid()))
                time.sleep(CRASH_SLEEP_SECONDS)
        return _next(value, name)

    invoke.__name__ = f"invoke_{name}"
    return create_step(f"{CRASH}-{name}", invoke, **BACKGROUND)


_crash = [_crash_step(f"s{number}") for number in (1, 2, 3)]


def _crash_workflow(input: dict) -> WorkflowResponse:
    value = input
    for step in _crash:
        value = step(value)
    return WorkflowResponse(value)


create_workflow(CRASH, _crash_workflow, **STORE)


# bg-approval: a plain step, an async step that waits for an answer (its handler runs
# where run() is called), a background step, then a plain step.
APPROVAL = "bg-approval"


def _approval_step(name: str, **options: Any):
    def invoke(value: dict, ctx: Any) -> StepResponse | None:
        record(value["dir"], ctx, name)
        if name == "ask":
            return None
        return _next(value, name)

    invoke.__name__ = f"invoke_{name}"
    return create_step(f"{APPROVAL}-{name}", invoke, **options)


_approval_first = _approval_step("first")
_approval_ask = _approval_step("ask", async_=True)
_approval_charge = _approval_step("charge", **BACKGROUND)
_approval_last = _approval_step("last")


def _approval(input: dict) -> WorkflowResponse:
    first = _approval_first(input)
    _approval_ask(first)
    return WorkflowResponse(_approval_last(_approval_charge(first)))


create_workflow(APPROVAL, _approval, **STORE)
