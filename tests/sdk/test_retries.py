"""Retries: max_retries, attempt counting, failure events, auto_retry=False pauses."""

import pytest

from workflows_app.sdk import WorkflowError, create_step, create_workflow

from .helpers import flow_steps, invoke_state, uname

pytestmark = pytest.mark.django_db


def _failing_until(success_attempt, attempts):
    def invoke(inp, ctx):
        attempts.append(ctx.attempt)
        if ctx.attempt < success_attempt:
            raise RuntimeError(f"attempt {ctx.attempt} failed")
        return {"succeeded_on": ctx.attempt}

    return invoke


def test_default_is_a_single_attempt():
    attempts = []
    step = create_step("once", _failing_until(99, attempts))

    def composer(input):
        step()

    res = create_workflow(uname(), composer).run(throw_on_error=False)
    assert attempts == [1]
    assert res.transaction.get_state() == "reverted"


def test_max_retries_gives_n_plus_one_attempts():
    attempts = []
    step = create_step("always-fails", _failing_until(99, attempts), max_retries=2)

    def composer(input):
        step()

    with pytest.raises(WorkflowError) as exc:
        create_workflow(uname(), composer).run()
    assert attempts == [1, 2, 3]
    assert str(exc.value) == "attempt 3 failed"


def test_retry_succeeds_within_the_same_run():
    attempts = []
    step = create_step("flaky", _failing_until(3, attempts), max_retries=3)

    def composer(input):
        return step()

    res = create_workflow(uname(), composer).run()
    assert attempts == [1, 2, 3]
    assert res.result == {"succeeded_on": 3}
    assert res.errors == []
    tx = res.transaction
    assert tx.get_state() == "done"
    entry = flow_steps(tx)["flaky"]
    assert entry["attempts"] == 3
    assert entry["failures"] == 2
    assert invoke_state(tx, "flaky") == ("done", "ok")


def test_on_step_failure_fires_for_every_failed_attempt():
    failures = []
    attempts = []
    step = create_step("fails-twice", _failing_until(3, attempts), max_retries=2)

    def composer(input):
        step()

    def on_step_failure(**kwargs):
        failures.append(kwargs["step"].id)

    res = create_workflow(uname(), composer).run(events={"on_step_failure": on_step_failure})
    assert res.transaction.get_state() == "done"
    assert len(failures) == 2
    assert all(sid.endswith("fails-twice") for sid in failures)


def test_later_steps_wait_for_retried_step():
    order = []
    attempts = []
    flaky_fn = _failing_until(2, attempts)

    def flaky(inp, ctx):
        order.append(("flaky", ctx.attempt))
        return flaky_fn(inp, ctx)

    a = create_step("flaky", flaky, max_retries=1)
    b = create_step("next", lambda inp, ctx: order.append(("next", inp)))

    def composer(input):
        out = a()
        b(out)

    create_workflow(uname(), composer).run()
    assert order == [("flaky", 1), ("flaky", 2), ("next", {"succeeded_on": 2})]


def test_auto_retry_false_pauses_then_resumes_on_rerun():
    attempts = []
    after = []
    step = create_step("manual", _failing_until(2, attempts), auto_retry=False, max_retries=3)
    b = create_step("after", lambda inp, ctx: after.append(inp) or "finished")

    def composer(input):
        out = step()
        return b(out)

    wf = create_workflow(uname(), composer)
    assert wf.options["store"] is True
    first = wf.run(transaction_id="manual-retry-1", throw_on_error=True)
    assert attempts == [1]
    assert after == []
    assert first.transaction.get_state() == "invoking"
    assert first.result is None
    assert invoke_state(first.transaction, "manual")[1] == "temp_failure"

    second = wf.run(transaction_id="manual-retry-1")
    assert attempts == [1, 2]
    assert after == [{"succeeded_on": 2}]
    assert second.transaction.get_state() == "done"
    assert second.result == "finished"


def test_compensation_is_retried():
    comp_attempts = []

    def undo(cinput, ctx):
        comp_attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("undo flaked")

    a = create_step("a", lambda inp, ctx: "a-out", undo, max_retries=1)

    def explode(inp, ctx):
        raise ValueError("b broke")

    b = create_step("b", explode)

    def composer(input):
        a()
        b()

    res = create_workflow(uname(), composer).run(throw_on_error=False)
    assert comp_attempts == [1, 2]
    assert res.transaction.get_state() == "reverted"


def test_retries_happen_before_continue_on_permanent_failure():
    attempts = []
    after = []
    a = create_step(
        "flaky", _failing_until(99, attempts), max_retries=1, continue_on_permanent_failure=True
    )
    b = create_step("after", lambda inp, ctx: after.append(inp))

    def composer(input):
        out = a()
        b(out)

    res = create_workflow(uname(), composer).run()
    assert attempts == [1, 2]
    assert after == [None]
    assert res.transaction.get_state() == "done"
    assert [e.error["message"] for e in res.errors] == ["attempt 2 failed"]


def test_compensate_context_attempt_starts_at_one():
    comp_attempts = []
    a = create_step(
        "a",
        _failing_until(2, []),
        lambda ci, ctx: comp_attempts.append(ctx.attempt),
        max_retries=1,
    )

    def explode(inp, ctx):
        raise ValueError("b broke")

    b = create_step("b", explode)

    def composer(input):
        a()
        b()

    create_workflow(uname(), composer).run(throw_on_error=False)
    assert comp_attempts == [1]
