"""Compensation: order, inputs, states, failures, continue/skip flags and cancel."""

import pytest

from workflows_app.sdk import (
    StepResponse,
    WorkflowError,
    create_step,
    create_workflow,
    parallelize,
)

from .helpers import Recorder, compensate_state, flow_steps, invoke_state, recording_step, uname

pytestmark = pytest.mark.django_db


def _chain(log, names, failing=None, **per_step):
    return [recording_step(n, log, fail=(n == failing), **per_step.get(n, {})) for n in names]


def test_five_step_chain_compensates_in_reverse_with_none_for_failing_step():
    log = Recorder()
    steps = _chain(log, ["s1", "s2", "s3", "s4", "s5"], failing="s5")

    def composer(input):
        for step in steps:
            step()

    res = create_workflow(uname(), composer).run(throw_on_error=False)
    comp = [(e[1], e[2]) for e in log.entries if e[0] == "compensate"]
    assert comp == [("s5", None), ("s4", "s4"), ("s3", "s3"), ("s2", "s2"), ("s1", "s1")]
    assert res.transaction.get_state() == "reverted"


def test_states_after_compensation():
    log = Recorder()
    a, b, c = _chain(log, ["a", "b", "c"], failing="b")

    def composer(input):
        a()
        b()
        c()

    tx = create_workflow(uname(), composer).run(throw_on_error=False).transaction
    assert tx.get_state() == "reverted"
    assert tx.has_finished() is True
    assert invoke_state(tx, "a") == ("done", "ok")
    assert compensate_state(tx, "a")[0] == "reverted"
    assert invoke_state(tx, "b") == ("failed", "permanent_failure")
    assert compensate_state(tx, "b")[0] == "reverted"
    assert invoke_state(tx, "c")[0] == "not_started"
    assert compensate_state(tx, "c")[0] == "dormant"
    assert "c" not in log.names("invoke")
    assert tx.get_flow()["state"] == "reverted"


def test_states_after_success():
    log = Recorder()
    a, b = _chain(log, ["a", "b"])

    def composer(input):
        a()
        b()

    tx = create_workflow(uname(), composer).run().transaction
    assert tx.get_state() == "done"
    for name in ("a", "b"):
        assert invoke_state(tx, name) == ("done", "ok")
        assert compensate_state(tx, name)[0] == "dormant"
    assert log.names("compensate") == []


def test_raw_return_value_is_compensate_input():
    got = []
    a = create_step("a", lambda inp, ctx: {"raw": True}, lambda ci, ctx: got.append(ci))

    def explode(inp, ctx):
        raise ValueError("boom")

    b = create_step("b", explode)

    def composer(input):
        a()
        b()

    create_workflow(uname(), composer).run(throw_on_error=False)
    assert got == [{"raw": True}]


def test_step_without_compensate_is_marked_reverted():
    log = Recorder()
    a = recording_step("a", log)
    b = recording_step("no-undo", log, compensate=False)
    c = recording_step("c", log, fail=True)

    def composer(input):
        a()
        b()
        c()

    tx = create_workflow(uname(), composer).run(throw_on_error=False).transaction
    assert log.names("compensate") == ["c", "a"]
    assert compensate_state(tx, "no-undo")[0] == "reverted"
    assert tx.get_state() == "reverted"


def test_no_compensation_option_suppresses_compensate_fn():
    log = Recorder()
    a = recording_step("a", log, no_compensation=True)
    b = recording_step("b", log, fail=True)

    def composer(input):
        a()
        b()

    create_workflow(uname(), composer).run(throw_on_error=False)
    assert log.names("compensate") == ["b"]


def test_throw_happens_after_compensation():
    log = Recorder()
    a = recording_step("a", log)
    b = recording_step("b", log, fail=True)

    def composer(input):
        a()
        b()

    with pytest.raises(WorkflowError) as exc:
        create_workflow(uname(), composer).run()
    assert log.names("compensate") == ["b", "a"]
    assert str(exc.value) == "b failed"
    assert exc.value.transaction.get_state() == "reverted"
    assert [e.error["message"] for e in exc.value.errors] == ["b failed"]


def test_failing_compensation_ends_failed_and_others_still_compensate():
    log = Recorder()
    a = recording_step("a", log)

    def bad_undo(ci, ctx):
        log.add("compensate", "b", ci)
        raise RuntimeError("undo of b broke")

    b = create_step("b", lambda inp, ctx: "b-out", bad_undo)
    c = recording_step("c", log, fail=True)

    def composer(input):
        a()
        b()
        c()

    res = create_workflow(uname(), composer).run(throw_on_error=False)
    tx = res.transaction
    assert tx.get_state() == "failed"
    assert log.names("compensate") == ["c", "b", "a"]
    assert [(e.handler_type, e.error["message"]) for e in res.errors] == [("invoke", "c failed")]
    all_errors = {(e.handler_type, e.error["message"]) for e in tx.get_errors()}
    assert ("compensate", "undo of b broke") in all_errors
    assert ("invoke", "c failed") in all_errors
    assert compensate_state(tx, "b") == ("failed", "permanent_failure")


def test_failing_compensation_still_throws_first_invoke_error():
    def bad_undo(ci, ctx):
        raise RuntimeError("undo broke")

    a = create_step("a", lambda inp, ctx: 1, bad_undo)

    def explode(inp, ctx):
        raise KeyError("invoke broke")

    b = create_step("b", explode)

    def composer(input):
        a()
        b()

    with pytest.raises(WorkflowError) as exc:
        create_workflow(uname(), composer).run()
    assert str(exc.value) == str(KeyError("invoke broke"))
    assert exc.value.transaction.get_state() == "failed"


def test_parallel_group_compensation_order_differs_from_medusa():
    log = Recorder()
    a = recording_step("a", log)
    p = recording_step("p", log)
    q = recording_step("q", log)
    r = recording_step("r", log)
    s = recording_step("s", log)
    t = recording_step("t", log, fail=True)

    def composer(input):
        a()
        parallelize(p(), q(), r())
        s()
        t()

    res = create_workflow(uname(), composer).run(throw_on_error=False)
    order = log.names("compensate")
    assert order[:2] == ["t", "s"]
    assert sorted(order[2:5]) == ["p", "q", "r"]
    assert order[5:] == ["a"]
    assert res.transaction.get_state() == "reverted"


def test_parallel_group_members_compensate_concurrently():
    log = Recorder()
    a = recording_step("a", log)
    members = [recording_step(n, log, compensate_sleep=0.2, io_bound=True) for n in ("p", "q", "r")]
    t = recording_step("t", log, fail=True)

    def composer(input):
        a()
        parallelize(*(m() for m in members))
        t()

    wf = create_workflow(uname(), composer)
    wf.run(throw_on_error=False)
    assert sorted(log.names("compensate")) == ["a", "p", "q", "r", "t"]
    assert log.most_at_once("compensate began", "compensate ended") == 3


def test_continue_on_permanent_failure():
    log = Recorder()
    a = recording_step("a", log)
    b = recording_step("b", log, fail=True, continue_on_permanent_failure=True)
    c = recording_step("c", log)

    def composer(input):
        a()
        b()
        return c()

    res = create_workflow(uname(), composer).run(throw_on_error=True)
    tx = res.transaction
    assert tx.get_state() == "done"
    assert log.names("invoke") == ["a", "b", "c"]
    assert log.names("compensate") == []
    assert res.result == "c"
    assert tx.get_flow()["hasFailedSteps"] is True
    assert tx.is_partially_completed is True
    assert [e.error["message"] for e in res.errors] == ["b failed"]
    assert invoke_state(tx, "b") == ("failed", "permanent_failure")


def test_successful_run_is_not_partially_completed():
    log = Recorder()
    a = recording_step("a", log)

    def composer(input):
        a()

    tx = create_workflow(uname(), composer).run().transaction
    assert tx.is_partially_completed is False
    assert tx.get_flow()["hasFailedSteps"] is False


def test_skip_on_permanent_failure_true():
    log = Recorder()
    a = recording_step("a", log)
    b = recording_step("b", log, fail=True, skip_on_permanent_failure=True)
    c = recording_step("c", log)
    d = recording_step("d", log)

    def composer(input):
        a()
        b()
        c()
        d()

    res = create_workflow(uname(), composer).run()
    tx = res.transaction
    assert tx.get_state() == "done"
    assert log.names("invoke") == ["a", "b"]
    assert log.names("compensate") == []
    assert invoke_state(tx, "c")[0] == "skipped_failure"
    assert invoke_state(tx, "d")[0] == "skipped_failure"
    flow = tx.get_flow()
    assert flow["hasSkippedOnFailureSteps"] is True
    assert flow["hasFailedSteps"] is True
    assert tx.is_partially_completed is True


def test_skip_on_permanent_failure_to_named_step():
    log = Recorder()
    a = recording_step("a", log)
    b = recording_step("b", log, fail=True, skip_on_permanent_failure="step-x")
    c = recording_step("c", log)
    d = recording_step("d", log)
    x = recording_step("step-x", log)
    y = recording_step("y", log)

    def composer(input):
        a()
        b()
        c()
        d()
        x()
        return y()

    res = create_workflow(uname(), composer).run()
    tx = res.transaction
    assert tx.get_state() == "done"
    assert log.names("invoke") == ["a", "b", "step-x", "y"]
    assert invoke_state(tx, "c")[0] == "skipped_failure"
    assert invoke_state(tx, "d")[0] == "skipped_failure"
    assert invoke_state(tx, "step-x") == ("done", "ok")
    assert invoke_state(tx, "y") == ("done", "ok")
    assert res.result == "y"


def test_cancel_done_transaction_compensates_in_place():
    log = Recorder()
    a = recording_step("a", log, compensate_input="undo-a")
    b = recording_step("b", log, compensate_input="undo-b")
    c = recording_step("c", log, compensate_input="undo-c")

    def composer(input):
        a()
        b()
        c()

    wf = create_workflow(uname(), composer)
    res = wf.run()
    assert res.transaction.get_state() == "done"
    assert log.names("compensate") == []
    wf.cancel(transaction=res.transaction)
    comp = [(e[1], e[2]) for e in log.entries if e[0] == "compensate"]
    assert comp == [("c", "undo-c"), ("b", "undo-b"), ("a", "undo-a")]
    assert res.transaction.get_state() == "reverted"


def test_cancel_failed_transaction_raises():
    def bad_undo(ci, ctx):
        raise RuntimeError("undo broke")

    a = create_step("a", lambda inp, ctx: 1, bad_undo)

    def explode(inp, ctx):
        raise ValueError("boom")

    b = create_step("b", explode)

    def composer(input):
        a()
        b()

    wf = create_workflow(uname(), composer)
    res = wf.run(throw_on_error=False)
    assert res.transaction.get_state() == "failed"
    with pytest.raises(Exception):  # noqa: B017 - the contract only says "raises"
        wf.cancel(transaction=res.transaction)


def test_permanent_failure_step_without_compensate_input_gets_none():
    got = []

    def invoke(inp, ctx):
        StepResponse.permanent_failure("nope")

    a = create_step("a", invoke, lambda ci, ctx: got.append(ci))

    def composer(input):
        a()

    create_workflow(uname(), composer).run(throw_on_error=False)
    assert got == [None]


def test_compensation_not_run_for_unstarted_steps():
    log = Recorder()
    a = recording_step("a", log, fail=True)
    b = recording_step("b", log)

    def composer(input):
        a()
        b()

    tx = create_workflow(uname(), composer).run(throw_on_error=False).transaction
    assert log.names("compensate") == ["a"]
    assert flow_steps(tx)["b"]["compensate"]["state"] == "dormant"
