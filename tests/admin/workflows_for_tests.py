"""Workflows the admin tests run (registered on import; names are unique to these tests)."""

from __future__ import annotations

import threading

from workflows_app.sdk import StepResponse, create_step, create_workflow

OK = "admin-tests-ok"
REVERTED = "admin-tests-reverted"
FAILED = "admin-tests-failed"
WAITING = "admin-tests-waiting"
IN_MEMORY = "admin-tests-in-memory"

KEEP = {"store": True, "retention_time": 3600}

_lock = threading.Lock()
_compensations_failed: set[str] = set()


def _reserve(value, ctx):
    ref = value.get("ref") if isinstance(value, dict) else None
    return StepResponse({"reserved": True, "password": "hunter2", "ref": ref}, {"ref": ref})


def _release(data, ctx):
    return None


def _release_fails_once(data, ctx):
    """The first compensation of a ref raises; a retry of the compensation passes."""
    ref = (data or {}).get("ref")
    with _lock:
        first = ref not in _compensations_failed
        _compensations_failed.add(ref)
    if first:
        raise RuntimeError("refund service unavailable")


def _charge(value, ctx):
    return StepResponse({"charged": 42})


def _charge_declined(value, ctx):
    raise ValueError("card declined by the bank")


def _ship(value, ctx):
    return StepResponse({"shipped": True})


reserve = create_step("admin-tests-reserve", _reserve, _release)
reserve_flaky_undo = create_step("admin-tests-reserve-flaky", _reserve, _release_fails_once)
charge = create_step("admin-tests-charge", _charge)
charge_declined = create_step("admin-tests-charge-declined", _charge_declined)
ship = create_step("admin-tests-ship", _ship)
approve = create_step("approve", lambda value, ctx: None, async_=True)
echo = create_step("admin-tests-echo", lambda value, ctx: StepResponse({"echo": value}))


def _ok(input):
    reserved = reserve(input)
    charged = charge(reserved)
    return ship(charged)


def _reverted(input):
    reserved = reserve(input)
    return charge_declined(reserved)


def _failed(input):
    reserved = reserve_flaky_undo(input)
    return charge_declined(reserved)


def _waiting(input):
    reserved = reserve(input)
    approved = approve(reserved)
    return ship(approved)


def _in_memory(input):
    return echo(input)


create_workflow(OK, _ok, **KEEP)
create_workflow(REVERTED, _reverted, **KEEP)
create_workflow(FAILED, _failed, **KEEP)
create_workflow(WAITING, _waiting, **KEEP)
create_workflow(IN_MEMORY, _in_memory)


# A generated chain of 30 steps: the graph must still fit the page.
LONG = "admin-tests-thirty-steps"
LONG_STEPS = 30

_long_steps = [
    create_step(f"admin-tests-long-{i:02d}", lambda value, ctx: StepResponse(value))
    for i in range(1, LONG_STEPS + 1)
]


def _long(input):
    value = input
    for step in _long_steps:
        value = step(value)
    return value


create_workflow(LONG, _long, **KEEP)


# A workflow with an input example for the Run form.
WITH_EXAMPLE = "admin-tests-with-example"

create_workflow(
    WITH_EXAMPLE,
    lambda input: echo(input),
    input_example={"ref": "example-ref", "lines": [{"sku": "A-1", "qty": 2}]},
    **KEEP,
)
