"""Step and workflow timeouts: detected after the fact, never interrupting code."""

import time

import pytest

from workflows_app.sdk import WorkflowError, create_step, create_workflow

from .helpers import Recorder, error_names, flow_steps, invoke_state, recording_step, uname

pytestmark = pytest.mark.django_db


def _slow_step(name, seconds, log, **options):
    def invoke(inp, ctx):
        time.sleep(seconds)
        log.add("invoke", name, inp)
        return f"{name}-late-output"

    def undo(cinput, ctx):
        log.add("compensate", name, cinput)

    return create_step(name, invoke, undo, **options)


def test_step_timeout_reverts_and_compensates_with_late_output():
    log = Recorder()
    a = recording_step("a", log)
    slow = _slow_step("slow", 0.15, log, timeout=0.05)
    z = recording_step("z", log)

    def composer(input):
        a()
        slow()
        z()

    wf = create_workflow(uname(), composer)
    assert wf.options["store"] is True
    res = wf.run(throw_on_error=False)
    tx = res.transaction
    assert tx.get_state() == "reverted"
    assert invoke_state(tx, "slow") == ("timeout", "permanent_failure")
    assert error_names(res.errors) == ["TransactionStepTimeoutError"]
    assert "z" not in log.names("invoke")
    assert log.names("invoke") == ["a", "slow"]
    assert log.names("compensate") == ["slow", "a"]
    assert log.payloads("compensate")["slow"] == "slow-late-output"


def test_step_timeout_with_continue_on_permanent_failure_ends_done():
    log = Recorder()
    slow = _slow_step("slow", 0.15, log, timeout=0.05, continue_on_permanent_failure=True)
    z = recording_step("z", log)

    def composer(input):
        slow()
        return z()

    res = create_workflow(uname(), composer).run()
    tx = res.transaction
    assert tx.get_state() == "done"
    assert invoke_state(tx, "slow") == ("timeout", "permanent_failure")
    assert log.names("invoke") == ["slow", "z"]
    assert res.result == "z"
    assert error_names(res.errors) == ["TransactionStepTimeoutError"]


def test_step_within_timeout_succeeds():
    log = Recorder()
    quick = _slow_step("quick", 0.0, log, timeout=5)

    def composer(input):
        return quick()

    res = create_workflow(uname(), composer).run()
    assert res.transaction.get_state() == "done"
    assert res.result == "quick-late-output"


def test_workflow_timeout_reverts():
    log = Recorder()
    slow = _slow_step("slow", 0.2, log)
    z = recording_step("z", log)

    def composer(input):
        slow()
        z()

    wf = create_workflow(uname(), composer, timeout=0.1)
    assert wf.options["store"] is True
    res = wf.run(throw_on_error=False)
    tx = res.transaction
    assert tx.get_state() == "reverted"
    names = error_names(tx.get_errors())
    assert "TransactionTimeoutError" in names
    assert tx.get_flow()["timedOutAt"]
    assert "z" not in log.names("invoke")


def test_workflow_timeout_ignores_continue_on_permanent_failure():
    log = Recorder()
    slow = _slow_step("slow", 0.2, log, continue_on_permanent_failure=True)
    z = recording_step("z", log, continue_on_permanent_failure=True)

    def composer(input):
        slow()
        z()

    res = create_workflow(uname(), composer, timeout=0.1).run(throw_on_error=False)
    tx = res.transaction
    assert tx.get_state() == "reverted"
    assert "TransactionTimeoutError" in error_names(tx.get_errors())
    assert tx.get_flow()["timedOutAt"]


def test_workflow_timeout_before_any_step_settled_still_names_the_timeout():
    """The run's timeout passes before its first step started (here an on_begin
    handler stalls; in production a paused process or a slow start): the run reverts
    with a TransactionTimeoutError, not with an empty error list."""
    log = Recorder()
    a = recording_step("a", log)

    def composer(input):
        a()

    def stall(transaction, **kwargs):
        time.sleep(0.15)

    res = create_workflow(uname(), composer, timeout=0.1).run(
        throw_on_error=False, events={"on_begin": stall}
    )
    tx = res.transaction
    assert tx.get_state() == "reverted"
    assert error_names(tx.get_errors()) == ["TransactionTimeoutError"]
    assert tx.get_errors()[0].step_id == "a"
    assert log.names("invoke") == []


def test_workflow_within_timeout_is_done():
    log = Recorder()
    a = recording_step("a", log)

    def composer(input):
        a()

    res = create_workflow(uname(), composer, timeout=5).run()
    tx = res.transaction
    assert tx.get_state() == "done"
    assert not tx.get_flow()["timedOutAt"]
    assert flow_steps(tx)["a"]["invoke"]["state"] == "done"


def test_step_timeout_with_skip_on_permanent_failure():
    log = Recorder()
    slow = _slow_step("slow", 0.15, log, timeout=0.05, skip_on_permanent_failure=True)
    z = recording_step("z", log)

    def composer(input):
        slow()
        z()

    res = create_workflow(uname(), composer).run()
    tx = res.transaction
    assert tx.get_state() == "done"
    assert invoke_state(tx, "z")[0] == "skipped_failure"
    assert log.names("invoke") == ["slow"]
    assert tx.get_flow()["hasSkippedOnFailureSteps"] is True


def test_on_timeout_event_fires_for_workflow_timeout():
    log = Recorder()
    slow = _slow_step("slow", 0.2, log)
    z = recording_step("z", log)
    fired = []

    def composer(input):
        slow()
        z()

    wf = create_workflow(uname(), composer, timeout=0.1)
    wf.run(throw_on_error=False, events={"on_timeout": lambda **kw: fired.append(kw)})
    assert len(fired) == 1
    assert "transaction" in fired[0]


def test_workflow_timeout_raises_with_throw_on_error():
    log = Recorder()
    slow = _slow_step("slow", 0.2, log)
    z = recording_step("z", log)

    def composer(input):
        slow()
        z()

    with pytest.raises(WorkflowError) as exc:
        create_workflow(uname(), composer, timeout=0.1).run()
    assert exc.value.transaction.get_state() == "reverted"
    assert log.names("compensate") == ["slow"]
