"""Medusa's semantics through the SDK's ``run()``: the transaction timeout blames the
steps that overran, the result of a run that did not end ``done``,
``is_partially_completed`` and the input of a step called without one. Workflows with a
timeout or async steps are stored (on the test database); the others run in memory."""

from __future__ import annotations

import pytest

from tests.support import uname
from workflows_app.orchestration import WorkflowError, runtime
from workflows_app.orchestration.clock import clock
from workflows_app.sdk import (
    StepResponse,
    create_step,
    create_workflow,
    parallelize,
    transform,
    when,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_thread():
    """Run the members of a parallel group one after the other, in order."""
    before = runtime.parallel_threads
    runtime.configure(parallel_threads=1)
    yield
    runtime.configure(parallel_threads=before)


def taking(seconds: float, log: list[str]):
    """A handler that takes ``seconds`` on the orchestrator's clock."""

    def invoke(value, ctx):
        log.append(ctx.step_name)
        clock.advance(seconds)
        return StepResponse(value, ctx.step_name)

    return invoke


def test_the_transaction_timeout_times_out_every_step_of_the_batch_still_running(one_thread):
    log: list[str] = []
    name = uname("sdk-timeout")
    undo = lambda data, ctx: log.append(f"undo {ctx.step_name}")  # noqa: E731
    quick = create_step(f"{name}-quick", taking(0, log), undo)
    slow = create_step(f"{name}-slow", taking(3, log), undo)
    skipping = create_step(f"{name}-skipping", taking(0, log), undo, skip_on_permanent_failure=True)
    after = create_step(f"{name}-after", taking(0, log), undo)

    def compose(input):
        parallelize(quick(input), slow(input), skipping(input))
        return after(input)

    wf = create_workflow(name, compose, timeout=1)

    res = wf.run(input=1, throw_on_error=False)

    tx = res.transaction
    assert tx.get_state() == "reverted"
    assert [e.step_id for e in res.errors] == [f"{name}-slow", f"{name}-skipping"]
    assert {e.error["name"] for e in res.errors} == {"TransactionTimeoutError"}
    assert str(tx.get_step(f"{name}-quick").invoke_state) == "done"
    assert str(tx.get_step(f"{name}-slow").invoke_state) == "timeout"
    assert str(tx.get_step(f"{name}-skipping").invoke_state) == "timeout"
    assert f"{name}-after" not in log
    assert sorted(entry for entry in log if entry.startswith("undo")) == [
        f"undo {name}-quick",
        f"undo {name}-skipping",
        f"undo {name}-slow",
    ]
    assert isinstance(res.thrown_error, WorkflowError)
    assert f"while step {name}-slow was running" in str(res.thrown_error)


def test_steps_that_ended_before_the_deadline_are_not_blamed(one_thread):
    log: list[str] = []
    name = uname("sdk-timeout-late")
    first = create_step(f"{name}-first", taking(0.5, log))
    second = create_step(f"{name}-second", taking(2, log))
    wf = create_workflow(name, lambda input: second(first(input)), timeout=1)

    res = wf.run(input=1, throw_on_error=False)

    assert res.transaction.get_state() == "reverted"
    assert [e.step_id for e in res.errors] == [f"{name}-second"]
    assert str(res.transaction.get_step(f"{name}-first").invoke_state) == "done"


def test_a_step_timeout_that_reverts_still_returns_the_result_of_what_completed():
    name = uname("sdk-step-timeout")
    first = create_step(f"{name}-first", lambda value, ctx: {"first": value})
    late = create_step(f"{name}-late", taking(2, []), timeout=1)

    def compose(input):
        one = first(input)
        two = late(one)
        return {"one": one, "two": two}

    res = create_workflow(name, compose).run(input=3, throw_on_error=False)

    assert res.transaction.get_state() == "reverted"
    assert res.errors[0].error["name"] == "TransactionStepTimeoutError"
    # The late step's output was kept (for its compensation), so it is in the result.
    assert res.result == {"one": {"first": 3}, "two": {"first": 3}}


def test_a_failed_run_resolves_its_result_and_a_raising_transform_adds_its_error():
    name = uname("sdk-result")

    def explode(value, ctx):
        raise ValueError("boom")

    first = create_step(f"{name}-first", lambda value, ctx: value + 1)
    second = create_step(f"{name}-second", explode)

    def compose(input):
        one = first(input)
        two = second(one)
        return transform({"one": one, "two": two}, lambda v: v["one"] + v["two"]["x"])

    res = create_workflow(name, compose).run(input=1, throw_on_error=False)

    assert res.transaction.get_state() == "reverted"
    assert res.result is None
    assert [e.step_id for e in res.errors] == [f"{name}-second", "_result"]
    assert res.errors[0].error["message"] == "boom"
    assert res.errors[1].error["name"] == "TypeError"
    assert str(res.thrown_error) == "boom"


def test_a_waiting_run_has_no_result_yet():
    name = uname("sdk-wait")
    ask = create_step(f"{name}-ask", lambda value, ctx: None, async_=True)
    wf = create_workflow(name, lambda input: ask(input))

    res = wf.run(input=1)

    assert res.transaction.get_state() == "invoking"
    assert res.result is None


def test_is_partially_completed_is_failed_or_skipped_steps():
    name = uname("sdk-partial")
    plain = create_step(f"{name}-plain", lambda value, ctx: value)
    maybe = create_step(f"{name}-maybe", lambda value, ctx: value)

    def compose(input):
        value = plain(input)
        when(value, lambda v: v > 10).then(lambda: maybe(value))
        return value

    wf = create_workflow(name, compose)

    skipped = wf.run(input=1).transaction
    assert skipped.get_state() == "done"
    assert skipped.is_partially_completed is True
    assert wf.run(input=11).transaction.is_partially_completed is False


def test_a_failed_step_let_through_makes_the_run_partially_completed():
    name = uname("sdk-partial-failed")

    def explode(value, ctx):
        raise ValueError("ignored")

    bad = create_step(f"{name}-bad", explode, continue_on_permanent_failure=True)
    tx = create_workflow(name, lambda input: bad(input)).run(input=1).transaction

    assert tx.get_state() == "done"
    assert tx.is_partially_completed is True


def test_a_step_called_without_input_gets_an_empty_dict_and_explicit_none_stays_none():
    seen = []
    name = uname("sdk-no-input")
    step = create_step(f"{name}-step", lambda value, ctx: seen.append(value))
    other = create_step(f"{name}-other", lambda value, ctx: seen.append(value))

    def compose(input):
        step()
        other(None)

    create_workflow(name, compose).run(input=5)

    assert seen == [{}, None]
