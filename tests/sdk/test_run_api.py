"""wf.run(): options, transaction ids, result_from, events, the RunResult and the transaction."""

import pytest

from workflows_app.orchestration import StepState, StepStatus, TransactionState
from workflows_app.sdk import WorkflowError, create_step, create_workflow

from .helpers import Recorder, recording_step, uname

pytestmark = pytest.mark.django_db


def _simple(log=None, fail=False):
    log = log or Recorder()
    a = recording_step("a", log, output={"a": 1})
    b = recording_step("b", log, output={"b": 2}, fail=fail)

    def composer(input):
        a(input)
        return b()

    name = uname()
    return create_workflow(name, composer), name, log


def test_enums_are_strings():
    assert TransactionState.DONE == "done"
    assert TransactionState("reverted") == "reverted"
    assert StepState("skipped_failure") == "skipped_failure"
    assert StepStatus("temp_failure") == "temp_failure"


def test_default_transaction_id_is_auto_ulid():
    wf, _, _ = _simple()
    first = wf.run().transaction.transaction_id
    second = wf.run().transaction.transaction_id
    assert first.startswith("auto-")
    assert len(first) == len("auto-") + 26
    assert first != second


def test_explicit_transaction_id():
    wf, name, _ = _simple()
    tx = wf.run(transaction_id="my-tx").transaction
    assert tx.transaction_id == "my-tx"
    assert tx.workflow_id == name


def test_transaction_id_from_context():
    wf, _, _ = _simple()
    assert wf.run(context={"transaction_id": "ctx-tx"}).transaction.transaction_id == "ctx-tx"


def test_run_ids_differ_between_runs():
    wf, _, _ = _simple()
    r1 = wf.run(transaction_id="same").transaction.run_id
    r2 = wf.run(transaction_id="same").transaction.run_id
    assert r1 and r2 and r1 != r2


def test_run_result_fields_on_success():
    wf, _, _ = _simple()
    res = wf.run(input={"x": 1})
    assert res.result == {"b": 2}
    assert res.errors == []
    assert res.thrown_error is None
    tx = res.transaction
    assert tx.get_state() == TransactionState.DONE
    assert tx.get_state() == "done"
    assert tx.has_finished() is True


def test_get_context_has_payload_and_invoke():
    wf, _, _ = _simple()
    context = wf.run(input={"x": 1}).transaction.get_context()
    assert context["payload"] == {"x": 1}
    assert "invoke" in context
    assert "compensate" in context
    assert set(context["invoke"]) >= {"a", "b"}


def test_get_flow_top_level_fields():
    wf, name, _ = _simple()
    tx = wf.run(transaction_id="flow-tx").transaction
    flow = tx.get_flow()
    for key in (
        "state",
        "steps",
        "modelId",
        "options",
        "metadata",
        "startedAt",
        "definition",
        "timedOutAt",
        "cancelledAt",
        "transactionId",
        "runId",
        "hasAsyncSteps",
        "hasFailedSteps",
        "hasSkippedSteps",
        "hasWaitingSteps",
        "hasRevertedSteps",
        "hasSkippedOnFailureSteps",
    ):
        assert key in flow, key
    assert flow["state"] == "done"
    assert flow["modelId"] == name
    assert flow["transactionId"] == "flow-tx"
    assert flow["runId"] == tx.run_id
    assert flow["startedAt"]
    assert flow["hasAsyncSteps"] is False
    assert flow["hasSkippedSteps"] is False


def test_get_flow_step_fields():
    wf, _, _ = _simple()
    steps = wf.run().transaction.get_flow()["steps"]
    step = steps["_root.a"]
    for key in (
        "id",
        "depth",
        "definition",
        "invoke",
        "compensate",
        "attempts",
        "failures",
        "lastAttempt",
        "startedAt",
        "next",
    ):
        assert key in step, key
    assert (step["invoke"]["state"], step["invoke"]["status"]) == ("done", "ok")
    assert step["compensate"]["state"] == "dormant"
    assert step["id"] == "_root.a"
    assert step["attempts"] == 1
    assert step["failures"] == 0
    assert step["lastAttempt"]
    assert "_root.a.b" in steps


def test_result_from_returns_step_output():
    wf, _, _ = _simple()
    assert wf.run(result_from="a").result == {"a": 1}


def test_input_defaults_to_none():
    wf, _, log = _simple()
    wf.run()
    assert log.payloads("invoke")["a"] is None


def test_container_via_call_and_via_run():
    seen = []
    step = create_step("peek", lambda inp, ctx: seen.append(ctx.container))

    def composer(input):
        step()

    wf = create_workflow(uname(), composer)
    c1 = {"service": "one"}
    c2 = {"service": "two"}
    wf(c1).run()
    wf.run(container=c2)
    assert seen[0] is c1 or seen[0] == c1
    assert seen[1] is c2 or seen[1] == c2


def test_throw_on_error_raises_workflow_error():
    wf, _, log = _simple(fail=True)
    with pytest.raises(WorkflowError) as exc:
        wf.run()
    err = exc.value
    assert str(err) == "b failed"
    assert err.transaction.get_state() == "reverted"
    assert len(err.errors) == 1
    assert err.errors[0].error["message"] == "b failed"
    assert log.names("compensate") == ["b", "a"]


def test_throw_on_error_false_returns_errors():
    wf, _, _ = _simple(fail=True)
    res = wf.run(throw_on_error=False)
    assert res.result is None
    assert len(res.errors) == 1
    err = res.errors[0]
    assert err.handler_type == "invoke"
    assert err.step_id
    assert set(err.error) >= {"message", "name", "stack"}
    assert err.error["message"] == "b failed"
    assert err.error["name"] == "ValueError"


def test_log_on_error_does_not_change_outcome():
    wf, _, _ = _simple(fail=True)
    res = wf.run(throw_on_error=False, log_on_error=True)
    assert res.transaction.get_state() == "reverted"


def _event_recorder(calls, names):
    def make(name):
        def handler(**kwargs):
            step = kwargs.get("step")
            short = step.id.rsplit(".", 1)[-1] if step is not None else None
            calls.append((name, short, kwargs))

        return handler

    return {n: make(n) for n in names}


def test_events_on_success():
    calls = []
    names = ["on_begin", "on_step_begin", "on_step_success", "on_finish", "on_compensate_begin"]
    wf, _, _ = _simple()
    wf.run(events=_event_recorder(calls, names))
    assert [(n, s) for n, s, _ in calls] == [
        ("on_begin", None),
        ("on_step_begin", "a"),
        ("on_step_success", "a"),
        ("on_step_begin", "b"),
        ("on_step_success", "b"),
        ("on_finish", None),
    ]
    assert all("transaction" in kw for _, _, kw in calls)
    assert all("result" in kw for n, _, kw in calls if n == "on_step_success")
    finish = calls[-1][2]
    assert finish["result"] == {"b": 2}
    assert not finish.get("errors")


def test_events_on_failure_and_compensation():
    calls = []
    names = [
        "on_step_failure",
        "on_compensate_begin",
        "on_compensate_step_success",
        "on_finish",
    ]
    wf, _, _ = _simple(fail=True)
    wf.run(events=_event_recorder(calls, names), throw_on_error=False)
    assert [(n, s) for n, s, _ in calls] == [
        ("on_step_failure", "b"),
        ("on_compensate_begin", None),
        ("on_compensate_step_success", "b"),
        ("on_compensate_step_success", "a"),
        ("on_finish", None),
    ]
    assert calls[0][2].get("errors")
    assert all("result" in kw for n, _, kw in calls if n == "on_compensate_step_success")
    assert calls[-1][2].get("errors")
    assert all("transaction" in kw for _, _, kw in calls)


def test_on_step_skipped_event():
    from workflows_app.sdk import StepResponse

    skipped = []
    a = create_step("skipper", lambda inp, ctx: StepResponse.skip())

    def composer(input):
        a()

    wf = create_workflow(uname(), composer)
    wf.run(events={"on_step_skipped": lambda **kw: skipped.append(kw["step"].id)})
    assert len(skipped) == 1
    assert skipped[0].endswith("skipper")


def test_on_resume_event_fires_on_rerun_of_paused_transaction():
    calls = []
    attempts = []

    def flaky(inp, ctx):
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first")
        return "ok"

    step = create_step("flaky", flaky, auto_retry=False, max_retries=1)

    def composer(input):
        return step()

    wf = create_workflow(uname(), composer)
    events = {
        "on_begin": lambda **kw: calls.append("begin"),
        "on_resume": lambda **kw: calls.append("resume"),
    }
    wf.run(transaction_id="resume-tx", events=events)
    res = wf.run(transaction_id="resume-tx", events=events)
    assert res.result == "ok"
    assert calls[0] == "begin"
    assert "resume" in calls[1:]


def test_log_on_error_logs_each_error(caplog):
    import logging

    wf, _, _ = _simple(fail=True)
    with caplog.at_level(logging.DEBUG):
        wf.run(throw_on_error=False, log_on_error=True)
    messages = [r.getMessage() for r in caplog.records]
    assert any("b failed" in m for m in messages)
