"""Nested workflows via run_as_step."""

import pytest

from workflows_app.sdk import WorkflowError, create_step, create_workflow

from .helpers import Recorder, flow_steps, recording_step, uname

pytestmark = pytest.mark.django_db


def _child(log, fail=False):
    c1 = recording_step("c1", log, output="c1-out")

    def c2_invoke(inp, ctx):
        log.add("invoke", "c2", inp)
        log.add("ctx", "c2", {"tx": ctx.transaction_id, "wf": ctx.workflow_id})
        if fail:
            raise ValueError("child failed")
        return {"child_saw": inp}

    c2 = create_step("c2", c2_invoke, lambda ci, ctx: log.add("compensate", "c2", ci))
    name = uname("child")

    def composer(input):
        c1(input)
        return c2(input)

    return create_workflow(name, composer), name


def test_run_as_step_returns_child_result():
    log = Recorder()
    child, child_name = _child(log)
    p1 = recording_step("p1", log)

    def composer(input):
        p1()
        return child.run_as_step(input={"v": input})

    res = create_workflow(uname(), composer).run(input=5)
    assert res.result == {"child_saw": {"v": 5}}
    assert log.names("invoke") == ["p1", "c1", "c2"]
    assert f"{child_name}-as-step" in flow_steps(res.transaction)


def test_child_transaction_id_derives_from_parent():
    log = Recorder()
    child, child_name = _child(log)

    def composer(input):
        return child.run_as_step(input=input)

    create_workflow(uname(), composer).run(input=1, transaction_id="parent-tx")
    ctx = log.payloads("ctx")["c2"]
    assert ctx == {"tx": f"{child_name}-as-step-parent-tx", "wf": child_name}


def test_parent_failure_compensates_child_steps_in_reverse():
    log = Recorder()
    child, _ = _child(log)
    p1 = recording_step("p1", log)
    p3 = recording_step("p3", log, fail=True)

    def composer(input):
        p1()
        child.run_as_step(input=input)
        p3()

    res = create_workflow(uname(), composer).run(input=1, throw_on_error=False)
    assert res.transaction.get_state() == "reverted"
    comp = log.names("compensate")
    assert comp == ["p3", "c2", "c1", "p1"]
    assert log.payloads("compensate")["c1"] == "c1-out"


def test_failing_child_fails_parent_step_and_parent_reverts():
    log = Recorder()
    child, child_name = _child(log, fail=True)
    p1 = recording_step("p1", log)
    p3 = recording_step("p3", log)

    def composer(input):
        p1()
        child.run_as_step(input=input)
        p3()

    with pytest.raises(WorkflowError) as exc:
        create_workflow(uname(), composer).run(input=1)
    assert "child failed" in str(exc.value)
    tx = exc.value.transaction
    assert tx.get_state() == "reverted"
    assert "p3" not in log.names("invoke")
    assert flow_steps(tx)[f"{child_name}-as-step"]["invoke"]["state"] == "failed"
    comp = log.names("compensate")
    assert comp.index("c1") < comp.index("p1")
    assert comp[-1] == "p1"


def test_same_child_twice_with_rename():
    log = Recorder()
    child, child_name = _child(log)

    def composer(input):
        first = child.run_as_step(input=1)
        second = child.run_as_step(input=2).config(name="second-child")
        return [first, second]

    res = create_workflow(uname(), composer).run(transaction_id="twice-tx")
    assert res.result == [{"child_saw": 1}, {"child_saw": 2}]
    txs = [e[2]["tx"] for e in log.entries if e[0] == "ctx"]
    assert txs == [f"{child_name}-as-step-twice-tx", "second-child-twice-tx"]
