"""Failed runs, retries, and the bad inputs of SPEC section 12, as stored."""

from __future__ import annotations

import pytest
from django.test import override_settings

from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.sdk import (
    InvalidTransactionIdError,
    PayloadTooLargeError,
    StepResponse,
    create_step,
    create_workflow,
)

from .helpers import Calls, chain_workflow, counted_step, rows, step_rows, uname

pytestmark = pytest.mark.django_db(transaction=True)

LOG_KEYS = {
    "stepId",
    "stepName",
    "stepPath",
    "handlerType",
    "operation",
    "status",
    "attempt",
    "input",
    "output",
    "compensateInput",
    "error",
    "startedAt",
    "endedAt",
    "durationMs",
}


def test_failed_run_stores_reverted_state_error_and_compensations():
    calls = Calls()
    name, steps = chain_workflow(3, calls, fail_last=True, store=True, retention_time=3600)

    res = workflow_engine.run(name, input=0, transaction_id="fail-1", throw_on_error=False)

    assert res.acknowledgement["has_failed"] is True
    assert calls.compensated(steps[0]) == 1 and calls.compensated(steps[1]) == 1
    [row] = rows(name)
    assert row.state == "reverted"
    assert row.status == "FAILED"
    assert row.output_payload is None
    assert row.error == f"{steps[2]} exploded"
    assert row.top_error()["name"] == "ValueError"
    assert "ValueError" in row.error_stack
    assert f"{steps[2]} exploded" in row.error_stack
    assert row.context["errors"][0]["stepId"] == steps[2]
    assert row.context["errors"][0]["handlerType"] == "invoke"
    assert row.execution["state"] == "reverted"
    assert row.execution["hasRevertedSteps"] is True

    log = step_rows(row)
    failed = [s for s in log if s.status == "FAILED"]
    assert [(s.step_id, s.handler_type, s.attempt) for s in failed] == [(steps[2], "invoke", 1)]
    assert failed[0].error["message"] == f"{steps[2]} exploded"
    assert failed[0].error["name"] == "ValueError"
    assert "stack" in failed[0].error
    compensations = [s for s in log if s.handler_type == "compensate"]
    # The failing step is compensated too (with no input), then the earlier ones in reverse.
    assert [s.step_id for s in compensations] == [steps[2], steps[1], steps[0]]
    assert {s.status for s in compensations} == {"COMPLETED"}
    assert [s.attempt for s in compensations] == [1, 1, 1]
    assert [s.input for s in compensations] == [None, {"undo": steps[1]}, {"undo": steps[0]}]


def test_one_step_row_per_attempt_and_camelcase_steps_log():
    name = uname("retry")
    attempts: list[int] = []

    def flaky(value, ctx):
        attempts.append(ctx.attempt)
        if len(attempts) < 3:
            raise RuntimeError(f"try {len(attempts)} failed")
        return StepResponse({"ok": True})

    step = create_step(f"{name}-flaky", flaky, max_retries=2)
    create_workflow(name, lambda inp: step(inp), store=True, retention_time=3600)

    res = workflow_engine.run(name, input={"n": 1}, transaction_id="retry-1")

    assert res.result == {"ok": True}
    assert len(attempts) == 3
    [row] = rows(name)
    assert row.state == "done"
    log = step_rows(row)
    assert [(s.attempt, s.status) for s in log] == [
        (1, "FAILED"),
        (2, "FAILED"),
        (3, "COMPLETED"),
    ]
    assert [s.error["message"] if s.error else None for s in log] == [
        "try 1 failed",
        "try 2 failed",
        None,
    ]
    assert row.execution["steps"][log[0].step_path]["attempts"] == 3
    assert row.execution["steps"][log[0].step_path]["failures"] == 2

    entries = workflow_engine.retrieve_workflow_execution(row.id).steps_log()
    assert len(entries) == 3
    for entry in entries:
        assert set(entry) >= LOG_KEYS, LOG_KEYS - set(entry)
        assert not any("_" in key for key in entry), entry.keys()
        assert entry["stepId"] == f"{name}-flaky"
        assert entry["stepName"] == f"{name}-flaky"
        assert entry["handlerType"] == "invoke"
        assert isinstance(entry["startedAt"], str) and isinstance(entry["endedAt"], str)
        assert isinstance(entry["durationMs"], int)
    assert [e["attempt"] for e in entries] == [1, 2, 3]
    assert [e["status"] for e in entries] == ["FAILED", "FAILED", "COMPLETED"]
    assert entries[0]["input"] == {"n": 1}
    assert entries[2]["output"] == {"ok": True}


@pytest.mark.parametrize(
    "bad",
    [pytest.param(lambda: object(), id="object"), pytest.param(lambda: {object()}, id="set")],
)
def test_non_serialisable_output_fails_step_and_compensates(bad):
    calls = Calls()
    name = uname("nonser")
    first = counted_step(f"{name}-a", calls)
    second = counted_step(f"{name}-b", calls)
    after = counted_step(f"{name}-after", calls)
    bad_name = f"{name}-bad"

    def produce(value, ctx):
        calls.hit("invoke", bad_name)
        return bad()

    bad_step = create_step(bad_name, produce, lambda data, ctx: calls.hit("compensate", bad_name))

    def compose(inp):
        return after(bad_step(second(first(inp))))

    create_workflow(name, compose, store=True, retention_time=3600)

    res = workflow_engine.run(name, input=0, transaction_id="ns-1", throw_on_error=False)

    assert res.acknowledgement["has_failed"] is True
    assert calls.invoked(bad_name) == 1, "a permanent failure is not retried"
    assert calls.invoked(f"{name}-after") == 0
    assert calls.compensated(f"{name}-a") == 1
    assert calls.compensated(f"{name}-b") == 1
    [error] = res.errors
    assert error.step_id == bad_name
    assert error.error["name"] == "NonSerializableCheckpointError"
    assert bad_name in error.error["message"]
    [row] = rows(name)
    assert row.state == "reverted"
    assert row.top_error()["name"] == "NonSerializableCheckpointError"
    failed = [s for s in step_rows(row) if s.status == "FAILED"]
    assert [s.step_id for s in failed] == [bad_name]
    assert failed[0].output is None


def test_non_serialisable_output_raises_workflow_error_by_default():
    calls = Calls()
    name = uname("nonser-raise")
    first = counted_step(f"{name}-a", calls)
    bad = create_step(f"{name}-bad", lambda value, ctx: object())
    create_workflow(name, lambda inp: bad(first(inp)), store=True)

    with pytest.raises(Exception) as info:
        workflow_engine.run(name, input=0, transaction_id="ns-2")

    assert f"{name}-bad" in str(info.value)
    assert calls.compensated(f"{name}-a") == 1
    assert not WorkflowExecution.objects.filter(workflow_id=name).exists()


def test_transaction_id_with_colon_is_refused_and_nothing_stored():
    calls = Calls()
    name, _ = chain_workflow(2, calls, store=True, retention_time=3600)

    with pytest.raises(InvalidTransactionIdError, match="':'"):
        workflow_engine.run(name, input=1, transaction_id="order:42")

    assert calls.total() == 0
    assert not WorkflowExecution.objects.filter(workflow_id=name).exists()
    assert StepExecution.objects.count() == 0


@override_settings(WORKFLOWS={"MAX_PAYLOAD_BYTES": 100})
def test_oversize_input_is_refused_and_nothing_stored():
    calls = Calls()
    name, _ = chain_workflow(2, calls, store=True, retention_time=3600)

    with pytest.raises(PayloadTooLargeError) as info:
        workflow_engine.run(name, input={"blob": "x" * 1024}, transaction_id="big-1")

    message = str(info.value)
    assert name in message
    assert "MAX_PAYLOAD_BYTES" in message
    assert "100" in message
    assert calls.total() == 0
    assert not WorkflowExecution.objects.filter(workflow_id=name).exists()
    assert StepExecution.objects.count() == 0


@override_settings(WORKFLOWS={"MAX_PAYLOAD_BYTES": 100})
def test_oversize_step_output_fails_the_step_and_compensates():
    calls = Calls()
    name = uname("bigout")
    first = counted_step(f"{name}-a", calls)
    big = create_step(f"{name}-big", lambda value, ctx: "y" * 1024)
    create_workflow(name, lambda inp: big(first(inp)), store=True, retention_time=3600)

    res = workflow_engine.run(name, input=0, transaction_id="big-2", throw_on_error=False)

    assert res.errors[0].error["name"] == "PayloadTooLargeError"
    assert f"{name}-big" in res.errors[0].error["message"]
    assert calls.compensated(f"{name}-a") == 1
    [row] = rows(name)
    assert row.state == "reverted"
    assert "y" * 200 not in str(row.context) + str(row.execution)
