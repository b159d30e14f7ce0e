"""Workflows that the qcluster workers of tests/fault run while faults are injected.

The workers find them by autodiscovery (``tests.fault.faultapp`` is installed by
``tests/fault/settings.py``); the pytest process and the answering processes register
them by importing this module. Every step body, invoke or compensation, appends a
``start`` line when it begins and an ``end`` line when its work is done to
``<dir>/effects.txt`` (``O_APPEND`` and fsync'ed, so lines of concurrent processes never
mix and survive a kill -9): ``<transaction> <step> <invoke|compensate> <start|end>
<attempt> <pid> <time>``. The tests count these lines to see how often each body ran.

Every run takes ``{"dir": ..., "sleep": seconds per step, "fail": bool}``; ``fail``
makes the last step of the chain fail, so that the run compensates.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from workflows_app.sdk import (
    StepResponse,
    WorkflowResponse,
    create_step,
    create_workflow,
    parallelize,
)

CHAIN = "fault-chain"
CHAIN_STEPS = ("s1", "s2", "s3", "s4")
NESTED_PARENT = "fault-nested-parent"
NESTED_CHILD = "fault-nested-child"
CANCEL = "fault-cancel"
CANCEL_STEPS = ("c1", "c2", "c3")
APPROVE = "fault-approve"
APPROVE_STEPS = ("a1", "approve", "a2")
APPROVE_BUSY = "fault-approve-busy"
APPROVE_BUSY_STEPS = ("answer", "hold", "close")

EFFECTS_FILE = "effects.txt"
BACKGROUND = {"async_": True, "background_execution": True}
STORE = {"store": True, "retention_time": 3600}


def record(directory: str, ctx: Any, step: str, kind: str, event: str) -> None:
    """Append one side-effect line for this step body."""
    line = (
        f"{ctx.transaction_id} {step} {kind} {event} {ctx.attempt} {os.getpid()} "
        f"{time.time():.6f}\n"
    )
    fd = os.open(Path(directory) / EFFECTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _body(name: str, *, fail: bool = False, waits: bool = False):
    """The invoke and compensate handlers of step ``name``: both record their start
    and end and sleep ``input["sleep"]`` (or ``input["long"]`` for a long step) in
    between; ``fail`` raises when the run's input asks for a failure; ``waits``
    returns nothing, so that the step waits for an answer."""

    def invoke(value: dict, ctx: Any) -> StepResponse | None:
        record(value["dir"], ctx, name, "invoke", "start")
        time.sleep(float(value.get("long" if name == value.get("long_step") else "sleep", 0)))
        record(value["dir"], ctx, name, "invoke", "end")
        if fail and value.get("fail"):
            raise RuntimeError(f"{name} fails as the run's input asks")
        if waits:
            return None
        trail = [*value.get("trail", []), name]
        return StepResponse({**value, "trail": trail}, {"dir": value["dir"]})

    def compensate(data: dict | None, ctx: Any) -> None:
        if data is None:
            # The step failed or waited: it stored nothing to undo.
            return
        record(data["dir"], ctx, name, "compensate", "start")
        time.sleep(0.05)
        record(data["dir"], ctx, name, "compensate", "end")

    invoke.__name__ = f"invoke_{name}"
    compensate.__name__ = f"compensate_{name}"
    return invoke, compensate


def _chain(workflow: str, names: tuple[str, ...], fail_last: bool = False) -> None:
    """Register ``workflow``: background steps ``names`` in a row, each with a
    compensation; the last one fails when the input asks (``fail_last``)."""
    steps = []
    for number, name in enumerate(names, start=1):
        invoke, compensate = _body(name, fail=fail_last and number == len(names))
        steps.append(create_step(f"{workflow}-{name}", invoke, compensate, **BACKGROUND))

    def compose(input: dict) -> WorkflowResponse:
        value = input
        for step in steps:
            value = step(value)
        return WorkflowResponse(value)

    create_workflow(workflow, compose, **STORE)


# fault-chain: four steps; the last one fails when the input says so.
_chain(CHAIN, CHAIN_STEPS, fail_last=True)
# fault-cancel: c2 is a long step (input["long"] seconds) during which the test cancels.
_chain(CANCEL, CANCEL_STEPS)


# fault-nested-parent: a nested child that waits for an answer ("ask") runs beside a
# long background step ("busy"); "join" runs after both.

_ask_invoke, _ask_compensate = _body("ask", waits=True)
_ask = create_step(f"{NESTED_CHILD}-ask", _ask_invoke, _ask_compensate, async_=True)


def _run_child(input: dict) -> WorkflowResponse:
    return WorkflowResponse(_ask(input))


nested_child = create_workflow(NESTED_CHILD, _run_child, **STORE)
_busy_invoke, _busy_compensate = _body("busy")
# io_bound: it overlaps the nested child in the parallel group instead of running first.
_busy = create_step(
    f"{NESTED_PARENT}-busy", _busy_invoke, _busy_compensate, io_bound=True, **BACKGROUND
)
_join_invoke, _join_compensate = _body("join")
_join = create_step(f"{NESTED_PARENT}-join", _join_invoke, _join_compensate, **BACKGROUND)


def _run_parent(input: dict) -> WorkflowResponse:
    answered, busy = parallelize(nested_child.run_as_step(input=input), _busy(input))
    return WorkflowResponse(_join({"dir": input["dir"], "answer": answered, "busy": busy}))


create_workflow(NESTED_PARENT, _run_parent, **STORE)

# fault-approve: "approve" waits for an answer, which two processes give at once.

_a1_invoke, _a1_compensate = _body("a1")
_a1 = create_step(f"{APPROVE}-a1", _a1_invoke, _a1_compensate, **BACKGROUND)
_approve_invoke, _approve_compensate = _body("approve", waits=True)
_approve = create_step(f"{APPROVE}-approve", _approve_invoke, _approve_compensate, async_=True)
_a2_invoke, _a2_compensate = _body("a2")
_a2 = create_step(f"{APPROVE}-a2", _a2_invoke, _a2_compensate, **BACKGROUND)


def _run_approve(input: dict) -> WorkflowResponse:
    first = _a1(input)
    answer = _approve(first)
    return WorkflowResponse(_a2({"dir": input["dir"], "answer": answer}))


create_workflow(APPROVE, _run_approve, **STORE)


# fault-timeout: "t2" outlives django-q2's task timeout: on its first start only when
# the input says "slow": "once", on every start when it says "always".

TIMEOUT = "fault-timeout"
TIMEOUT_STEPS = ("t1", "t2", "t3")


def _starts(directory: str, ctx: Any, step: str) -> int:
    """How often this body started before (lines of ``effects.txt``)."""
    path = Path(directory) / EFFECTS_FILE
    if not path.exists():
        return 0
    mine = f"{ctx.transaction_id} {step} invoke start "
    return sum(line.startswith(mine) for line in path.read_text().splitlines())


def _timed(name: str):
    invoke, compensate = _body(name)

    def timed_invoke(value: dict, ctx: Any) -> StepResponse | None:
        slow = value.get("slow")
        if name == "t2" and (
            slow == "always" or (slow == "once" and not _starts(value["dir"], ctx, name))
        ):
            record(value["dir"], ctx, name, "invoke", "start")
            time.sleep(float(value["long"]))
            # Not interrupted: fail the step, so that the test sees it.
            raise AssertionError("t2 outlived the task timeout and was not interrupted")
        return invoke(value, ctx)

    timed_invoke.__name__ = f"invoke_{name}"
    return timed_invoke, compensate


_timeout_steps = [
    create_step(f"{TIMEOUT}-{name}", *_timed(name), **BACKGROUND) for name in TIMEOUT_STEPS
]


def _run_timeout(input: dict) -> WorkflowResponse:
    value = input
    for step in _timeout_steps:
        value = step(value)
    return WorkflowResponse(value)


create_workflow(TIMEOUT, _run_timeout, **STORE)


# fault-approve-busy: "answer" waits beside "hold"; "hold" fails at once on its first
# attempt, so that its retry (a long one, input["long"] seconds) keeps the worker busy
# with the run while "answer" waits; "close" runs after both.

_answer_invoke, _answer_compensate = _body("answer", waits=True)
_answer = create_step(f"{APPROVE_BUSY}-answer", _answer_invoke, _answer_compensate, async_=True)


def _hold_invoke(value: dict, ctx: Any) -> StepResponse:
    if ctx.attempt == 1:
        # Before any side effect: the ledger sees one body of "hold" per run.
        raise RuntimeError("hold fails once, so that its retry starts after answer waits")
    record(value["dir"], ctx, "hold", "invoke", "start")
    time.sleep(float(value.get("long", 0)))
    record(value["dir"], ctx, "hold", "invoke", "end")
    return StepResponse("held", {"dir": value["dir"]})


_hold = create_step(
    f"{APPROVE_BUSY}-hold", _hold_invoke, _body("hold")[1], max_retries=1, **BACKGROUND
)
_close_invoke, _close_compensate = _body("close")
_close = create_step(f"{APPROVE_BUSY}-close", _close_invoke, _close_compensate, **BACKGROUND)


def _run_approve_busy(input: dict) -> WorkflowResponse:
    answered, held = parallelize(_answer(input), _hold(input))
    return WorkflowResponse(_close({"dir": input["dir"], "answer": answered, "hold": held}))


create_workflow(APPROVE_BUSY, _run_approve_busy, **STORE)
