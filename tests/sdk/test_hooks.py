"""Hooks: create_hook inside a composer, wf.hooks.<name> registration, get_result()."""

import pytest

from workflows_app.sdk import (
    CompositionError,
    WorkflowResponse,
    create_hook,
    create_step,
    create_workflow,
)

from .helpers import Recorder, recording_step, uname

pytestmark = pytest.mark.django_db


def _order_workflow(log=None, fail_after=False):
    log = log or Recorder()
    make = recording_step("make-order", log, output={"id": "o1"})
    tail = recording_step("tail", log, fail=fail_after)

    def composer(input):
        order = make(input)
        hook = create_hook("order_created", {"order": order})
        tail()
        return WorkflowResponse({"order": order, "hook": hook.get_result()}, hooks=[hook])

    return create_workflow(uname(), composer), log


def test_registered_hook_receives_input_and_result_is_exposed():
    wf, _ = _order_workflow()
    seen = []

    def handler(inp, ctx):
        seen.append(inp)
        return {"extra": inp["order"]["id"] + "-x"}

    wf.hooks.order_created(handler)
    res = wf.run(input={})
    assert seen == [{"order": {"id": "o1"}}]
    assert res.result == {"order": {"id": "o1"}, "hook": {"extra": "o1-x"}}


def test_unregistered_hook_is_a_noop():
    wf, log = _order_workflow()
    res = wf.run(input={})
    assert res.transaction.get_state() == "done"
    assert log.names("invoke") == ["make-order", "tail"]
    assert res.result["order"] == {"id": "o1"}
    assert res.result.get("hook") is None


def test_second_hook_registration_raises():
    wf, _ = _order_workflow()
    wf.hooks.order_created(lambda inp, ctx: None)
    with pytest.raises(CompositionError):
        wf.hooks.order_created(lambda inp, ctx: None)


def test_hook_compensation_runs_when_later_step_fails():
    log = Recorder()
    wf, _ = _order_workflow(log, fail_after=True)

    def handler(inp, ctx):
        log.add("invoke", "hook", inp)
        return "hooked"

    def undo(cinput, ctx):
        log.add("compensate", "hook", cinput)

    wf.hooks.order_created(handler, undo)
    res = wf.run(input={}, throw_on_error=False)
    assert res.transaction.get_state() == "reverted"
    assert log.names("compensate") == ["tail", "hook", "make-order"]
    assert log.payloads("compensate")["hook"] == "hooked"


def test_hook_handler_failure_reverts_workflow():
    wf, log = _order_workflow()

    def handler(inp, ctx):
        raise ValueError("hook refused")

    wf.hooks.order_created(handler)
    res = wf.run(input={}, throw_on_error=False)
    assert res.transaction.get_state() == "reverted"
    assert [e.error["message"] for e in res.errors] == ["hook refused"]
    assert "tail" not in log.names("invoke")
    assert log.names("compensate") == ["make-order"]


def test_hook_without_workflow_response_still_exposed():
    step = create_step("s", lambda inp, ctx: "S")
    calls = []

    def composer(input):
        step()
        create_hook("validate", {"input": input})

    wf = create_workflow(uname(), composer)
    wf.hooks.validate(lambda inp, ctx: calls.append(inp))
    res = wf.run(input=7)
    assert calls == [{"input": 7}]
    assert res.result is None
