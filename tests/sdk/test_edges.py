"""Edge cases across the contract: names, traps, hooks in blocks, cancel by id, failure events."""

import pytest

from workflows_app.sdk import (
    CompositionError,
    StepResponse,
    create_hook,
    create_step,
    create_workflow,
    parallelize,
    transform,
    when,
)

from .helpers import Recorder, compensate_state, flow_steps, invoke_state, recording_step, uname

pytestmark = pytest.mark.django_db


def test_two_steps_with_the_same_name_raise():
    one = create_step("same-name", lambda inp, ctx: 1)
    two = create_step("same-name", lambda inp, ctx: 2)

    def composer(input):
        one()
        two()

    with pytest.raises(CompositionError):
        create_workflow(uname(), composer)


def test_renaming_onto_an_existing_name_raises():
    a = create_step("a", lambda inp, ctx: 1)
    b = create_step("b", lambda inp, ctx: 2)

    def composer(input):
        a()
        b().config(name="a")

    with pytest.raises(CompositionError):
        create_workflow(uname(), composer)


def test_two_hooks_with_the_same_name_raise():
    def composer(input):
        create_hook("dup", {"x": input})
        create_hook("dup", {"y": input})

    with pytest.raises(CompositionError):
        create_workflow(uname(), composer)


@pytest.mark.parametrize("op", ["ne", "gt", "le", "ge"])
def test_other_comparisons_raise(op):
    ops = {
        "ne": lambda r: r != 1,
        "gt": lambda r: r > 1,
        "le": lambda r: r <= 1,
        "ge": lambda r: r >= 1,
    }
    a = create_step("a", lambda inp, ctx: 1)

    def composer(input):
        ops[op](a())

    with pytest.raises(CompositionError):
        create_workflow(uname(), composer)


def test_transform_shared_by_step_condition_and_result_runs_once():
    calls = []
    b = create_step("b", lambda inp, ctx: inp)
    c = create_step("c", lambda inp, ctx: "c-ran")

    def composer(input):
        t = transform(input, lambda v: calls.append(v) or {"ok": v > 0})
        b(t)
        when(t, lambda v: v["ok"]).then(lambda: c())
        return t

    res = create_workflow(uname(), composer).run(input=5)
    assert res.result == {"ok": True}
    assert calls == [5]


def test_get_step_result_of_skipped_step_is_none():
    seen = []
    a = create_step("a", lambda inp, ctx: StepResponse.skip())
    b = create_step("b", lambda inp, ctx: seen.append(ctx.get_step_result("a")))

    def composer(input):
        a()
        b()

    create_workflow(uname(), composer).run()
    assert seen == [None]


def test_hook_inside_false_when_is_not_called():
    calls = []
    z = create_step("z", lambda inp, ctx: "z")

    def composer(input):
        def block():
            create_hook("maybe_hook", {"v": input})

        when(input, lambda i: i == "yes").then(block)
        return z()

    wf = create_workflow(uname(), composer)
    wf.hooks.maybe_hook(lambda inp, ctx: calls.append(inp))
    wf.run(input="no")
    assert calls == []
    wf.run(input="yes")
    assert calls == [{"v": "yes"}]


def test_hook_get_result_none_when_handler_returns_none():
    def composer(input):
        hook = create_hook("quiet", {"v": input})
        return {"hook": hook.get_result(), "const": 1}

    wf = create_workflow(uname(), composer)
    wf.hooks.quiet(lambda inp, ctx: None)
    res = wf.run(input=1)
    assert res.result.get("hook") is None
    assert res.result["const"] == 1


def test_nested_result_supports_attribute_access():
    inner = create_step("inner", lambda inp, ctx: {"total": inp["n"] * 3})

    def child_composer(input):
        return inner(input)

    child = create_workflow(uname("child"), child_composer)
    echo = create_step("echo", lambda inp, ctx: inp)

    def composer(input):
        res = child.run_as_step(input={"n": input})
        return echo(res.total)

    assert create_workflow(uname(), composer).run(input=4).result == 12


def test_continued_failure_is_compensated_if_workflow_later_reverts():
    log = Recorder()
    a = recording_step("a", log)
    b = recording_step("b", log, fail=True, continue_on_permanent_failure=True)
    c = recording_step("c", log, fail=True)

    def composer(input):
        a()
        b()
        c()

    res = create_workflow(uname(), composer).run(throw_on_error=False)
    tx = res.transaction
    assert tx.get_state() == "reverted"
    assert log.names("compensate") == ["c", "b", "a"]
    assert log.payloads("compensate")["b"] is None
    assert [e.error["message"] for e in res.errors] == ["b failed", "c failed"]


def test_on_compensate_step_failure_event():
    events = []

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
    wf.run(
        throw_on_error=False,
        events={
            "on_compensate_step_failure": lambda **kw: events.append(
                (kw["step"].id.rsplit(".", 1)[-1], bool(kw.get("errors")))
            )
        },
    )
    assert events == [("a", True)]


def test_skipped_parallel_member_does_not_block_follower():
    log = Recorder()
    p = create_step("p", lambda inp, ctx: StepResponse.skip())
    q = recording_step("q", log)
    z = recording_step("z", log)

    def composer(input):
        parallelize(p(), q())
        return z()

    res = create_workflow(uname(), composer).run()
    tx = res.transaction
    assert tx.get_state() == "done"
    assert invoke_state(tx, "p") == ("skipped", "ok")
    assert res.result == "z"


def test_cancel_stored_done_transaction_by_id():
    log = Recorder()
    a = recording_step("a", log)
    b = recording_step("b", log)

    def composer(input):
        a()
        b()

    wf = create_workflow(uname(), composer, retention_time=600)
    wf.run(transaction_id="cancel-me")
    wf.cancel(transaction_id="cancel-me")
    assert log.names("compensate") == ["b", "a"]


def test_async_compensation_failure_marks_transaction_failed():
    async def bad_undo(ci, ctx):
        raise RuntimeError("async undo broke")

    a = create_step("a", lambda inp, ctx: 1, bad_undo)

    def explode(inp, ctx):
        raise ValueError("boom")

    b = create_step("b", explode)

    def composer(input):
        a()
        b()

    tx = create_workflow(uname(), composer).run(throw_on_error=False).transaction
    assert tx.get_state() == "failed"
    assert compensate_state(tx, "a") == ("failed", "permanent_failure")


def test_failing_step_in_when_block_reverts():
    log = Recorder()
    a = recording_step("a", log)
    inside = recording_step("inside", log, fail=True)
    z = recording_step("z", log)

    def composer(input):
        a()
        when(input, lambda i: True).then(lambda: inside())
        z()

    res = create_workflow(uname(), composer).run(input=1, throw_on_error=False)
    assert res.transaction.get_state() == "reverted"
    assert "z" not in log.names("invoke")
    assert log.names("compensate") == ["inside", "a"]


def test_flow_step_entries_for_parallel_group():
    a = create_step("a", lambda inp, ctx: 1)
    p = create_step("p", lambda inp, ctx: 1)
    q = create_step("q", lambda inp, ctx: 1)
    z = create_step("z", lambda inp, ctx: 1)

    def composer(input):
        a()
        parallelize(p(), q())
        z()

    tx = create_workflow(uname(), composer).run().transaction
    steps = flow_steps(tx)
    assert set(steps) == {"a", "p", "q", "z"}
    assert steps["p"]["depth"] == steps["q"]["depth"] == steps["a"]["depth"] + 1
    assert steps["z"]["depth"] > steps["p"]["depth"]
