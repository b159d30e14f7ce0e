"""for_each() in stored workflows: one step row per iteration, compensation rows, rebuild."""

from __future__ import annotations

import json

import pytest

from workflows_app.models import WorkflowExecution
from workflows_app.orchestration import runtime
from workflows_app.sdk import StepResponse, create_step, create_workflow, for_each

from .helpers import Calls, counted_step, rows, step_rows, uname

pytestmark = pytest.mark.django_db(transaction=True)

STORED = {"store": True, "retention_time": 3600}


class SimulatedCrash(BaseException):
    """Not an ``Exception``: it escapes the step like a dying process would."""


def _loop_workflow(calls: Calls, *, fail_on=(), boom: bool = False, **step_options):
    """``before -> for_each(items, item step) [-> boom]``; returns (workflow, names)."""
    name = uname("loop")
    before = counted_step(f"{name}-before", calls)

    def invoke(item, ctx):
        calls.hit("invoke", item)
        if item in fail_on:
            raise ValueError(f"item {item} failed")
        return StepResponse({"n": item * 10}, {"undo": item})

    def compensate(data, ctx):
        calls.hit("compensate", data["undo"])

    inner = create_step(f"{name}-item", invoke, compensate, **step_options)
    last = counted_step(f"{name}-boom", calls, fail=True)

    def compose(input):
        before(0)
        outputs = for_each(input["items"], inner)
        if boom:
            last(0)
        return outputs

    workflow = create_workflow(name, compose, **STORED)
    return workflow, {"before": f"{name}-before", "loop": f"for-each-{name}-item"}


def _iteration_rows(row: WorkflowExecution, handler_type: str = "invoke"):
    return [s for s in step_rows(row) if s.iteration and s.handler_type == handler_type]


def test_each_iteration_is_a_row_and_the_loop_has_its_own():
    calls = Calls()
    wf, names = _loop_workflow(calls)

    res = wf.run(input={"items": [1, 2, 3]}, transaction_id="loop-rows")

    assert res.result == [{"n": 10}, {"n": 20}, {"n": 30}]
    [row] = rows(wf.name)
    assert row.state == "done"
    loop_rows = [s for s in step_rows(row) if s.step_id == names["loop"]]
    [own] = [s for s in loop_rows if s.iteration == 0]
    assert own.operation == "builtin:loop"
    assert (own.handler_type, own.attempt, own.status) == ("invoke", 1, "COMPLETED")
    assert own.total_items is None
    assert own.input == [1, 2, 3]
    assert own.output == [{"n": 10}, {"n": 20}, {"n": 30}]
    assert own.compensate_input == [{"undo": 1}, {"undo": 2}, {"undo": 3}]

    iterations = _iteration_rows(row)
    assert [(s.iteration, s.total_items, s.status, s.attempt) for s in iterations] == [
        (1, 3, "COMPLETED", 1),
        (2, 3, "COMPLETED", 1),
        (3, 3, "COMPLETED", 1),
    ]
    assert {s.step_path for s in iterations} == {own.step_path}
    assert {s.operation for s in iterations} == {"step"}
    assert [s.input for s in iterations] == [1, 2, 3]
    assert [s.output for s in iterations] == [{"n": 10}, {"n": 20}, {"n": 30}]
    assert [s.compensate_input for s in iterations] == [{"undo": 1}, {"undo": 2}, {"undo": 3}]
    assert all(s.started_at and s.ended_at and s.duration_ms is not None for s in iterations)
    entry = iterations[1].as_log_entry()
    assert (entry["iteration"], entry["totalItems"]) == (2, 3)
    assert own.as_log_entry()["iteration"] is None


def test_failing_iteration_rows_and_compensation_rows():
    calls = Calls()
    wf, names = _loop_workflow(calls, fail_on=(3,), max_retries=1)

    res = wf.run(input={"items": [1, 2, 3, 4]}, transaction_id="loop-fail", throw_on_error=False)

    assert res.transaction.get_state() == "reverted"
    assert calls.invoked(3) == 2 and calls.invoked(4) == 0
    assert (calls.compensated(1), calls.compensated(2)) == (1, 1)
    [row] = rows(wf.name)
    assert row.state == "reverted"
    assert row.error == "item 3 failed"

    assert [(s.iteration, s.attempt, s.status) for s in _iteration_rows(row)] == [
        (1, 1, "COMPLETED"),
        (2, 1, "COMPLETED"),
        (3, 1, "FAILED"),
        (3, 2, "FAILED"),
    ]
    failed = _iteration_rows(row)[-1]
    assert failed.error["message"] == "item 3 failed"
    assert failed.total_items == 4
    undone = _iteration_rows(row, "compensate")
    assert [(s.iteration, s.status, s.input) for s in undone] == [
        (2, "COMPLETED", {"undo": 2}),
        (1, "COMPLETED", {"undo": 1}),
    ]
    assert {s.total_items for s in undone} == {4}

    log = [(s.step_id, s.handler_type, s.iteration, s.status) for s in step_rows(row)]
    # The loop's own rows: its failure, then its (empty) compensation; then the step before.
    assert log[-3:] == [
        (names["loop"], "invoke", 0, "FAILED"),
        (names["loop"], "compensate", 0, "COMPLETED"),
        (names["before"], "compensate", 0, "COMPLETED"),
    ]


def test_later_failure_records_iteration_compensations_in_reverse():
    calls = Calls()
    wf, _ = _loop_workflow(calls, boom=True)

    wf.run(input={"items": [1, 2, 3]}, transaction_id="loop-later", throw_on_error=False)

    [row] = rows(wf.name)
    assert row.state == "reverted"
    undone = _iteration_rows(row, "compensate")
    assert [(s.iteration, s.status, s.attempt) for s in undone] == [
        (3, "COMPLETED", 1),
        (2, "COMPLETED", 1),
        (1, "COMPLETED", 1),
    ]


def test_stored_run_is_rebuilt_without_iteration_rows_in_the_replay_and_can_be_cancelled():
    calls = Calls()
    wf, names = _loop_workflow(calls)
    wf.run(input={"items": [1, 2, 3]}, transaction_id="loop-rebuild")

    tx = runtime.storage.load(wf.definition, "loop-rebuild", include_finished=True)

    assert tx is not None
    assert tx.get_state() == "done"
    assert tx.replay == {}
    loop_step = tx.get_step(names["loop"])
    assert (loop_step.invoke_state, loop_step.attempts) == ("done", 1)
    assert tx.get_step_result(names["loop"]) == [{"n": 10}, {"n": 20}, {"n": 30}]
    assert [r.iteration for r in tx.iteration_records] == [1, 2, 3]

    # The rebuilt run compensates every iteration from the stored rows, last item first.
    result = wf.cancel(transaction_id="loop-rebuild")

    assert result.transaction.get_state() == "reverted"
    assert [calls.compensated(i) for i in (1, 2, 3)] == [1, 1, 1]
    row = WorkflowExecution.objects.get(workflow_id=wf.name, run_id=tx.run_id)
    assert [s.iteration for s in _iteration_rows(row, "compensate")] == [3, 2, 1]


def test_resumed_loop_does_not_rerun_finished_iterations():
    name = uname("loop-crash")
    side_effects: list[int] = []

    def invoke(item, ctx):
        side_effects.append(item)
        if item == 3 and side_effects.count(3) == 1:
            raise SimulatedCrash()
        return item * 2

    inner = create_step(f"{name}-item", invoke)
    wf = create_workflow(name, lambda input: for_each(input, inner), **STORED)

    with pytest.raises(SimulatedCrash):
        wf.run(input=[1, 2, 3, 4], transaction_id="loop-crashed")
    [row] = rows(name)
    assert [(s.iteration, s.status) for s in step_rows(row)] == [(1, "COMPLETED"), (2, "COMPLETED")]

    # The worker is gone: release its lease and run the transaction again.
    WorkflowExecution.objects.filter(pk=row.pk).update(owner="", lease_expires_at=None)
    res = wf.run(transaction_id="loop-crashed")

    assert res.result == [2, 4, 6, 8]
    assert side_effects == [1, 2, 3, 3, 4]
    [row] = rows(name)
    assert row.state == "done"
    log = [(s.iteration, s.attempt, s.status, s.operation) for s in step_rows(row)]
    assert log == [
        (1, 1, "COMPLETED", "step"),
        (2, 1, "COMPLETED", "step"),
        (3, 1, "COMPLETED", "step"),
        (4, 1, "COMPLETED", "step"),
        (0, 1, "COMPLETED", "builtin:loop"),
    ]


def test_concurrent_iterations_are_recorded_once_each():
    calls = Calls()
    name = uname("loop-conc")

    def invoke(item, ctx):
        calls.hit("invoke", item)
        return item

    inner = create_step(f"{name}-item", invoke)
    wf = create_workflow(name, lambda input: for_each(input, inner, concurrency=3), **STORED)

    res = wf.run(input=list(range(1, 8)), transaction_id="loop-conc")

    assert res.result == list(range(1, 8))
    [row] = rows(name)
    assert sorted(s.iteration for s in _iteration_rows(row)) == list(range(1, 8))
    assert {s.total_items for s in _iteration_rows(row)} == {7}


def test_sub_workflow_iterations_are_rows_with_the_child_transaction():
    name = uname("loop-sub")
    child_step = create_step(f"{name}-child-step", lambda item, ctx: {"child": item})
    child = create_workflow(f"{name}-child", lambda input: child_step(input))
    wf = create_workflow(name, lambda input: for_each(input, child), **STORED)

    res = wf.run(input=["a", "b"], transaction_id="loop-sub")

    assert res.result == [{"child": "a"}, {"child": "b"}]
    [row] = rows(name)
    iterations = _iteration_rows(row)
    assert {s.operation for s in iterations} == {"sub-workflow"}
    assert [s.compensate_input for s in iterations] == [
        {"workflow_id": f"{name}-child", "transaction_id": f"for-each-{name}-child-1-loop-sub"},
        {"workflow_id": f"{name}-child", "transaction_id": f"for-each-{name}-child-2-loop-sub"},
    ]


def test_sensitive_paths_of_the_inner_step_mask_iteration_and_loop_rows():
    name = uname("loop-sensitive")
    inner = create_step(
        f"{name}-pay",
        lambda item, ctx: {"receipt": f"r-{item['card']}", "ok": True},
        sensitive=["input.card", "output.receipt"],
    )
    wf = create_workflow(name, lambda input: for_each(input, inner), **STORED)

    res = wf.run(input=[{"card": "4242"}, {"card": "1111"}], transaction_id="loop-sens")

    assert res.result == [{"receipt": "r-4242", "ok": True}, {"receipt": "r-1111", "ok": True}]
    [row] = rows(name)
    masked = "[REDACTED]"
    for step in step_rows(row):
        items = step.input if step.iteration == 0 else [step.input]
        outputs = step.output if step.iteration == 0 else [step.output]
        assert all(item["card"] == masked for item in items)
        assert all(output == {"receipt": masked, "ok": True} for output in outputs)


def test_admin_detail_shows_iterations_as_items_of_the_loop(admin_client):
    from django.urls import reverse

    calls = Calls()
    wf, names = _loop_workflow(calls)
    wf.run(input={"items": [1, 2]}, transaction_id="loop-admin")
    [row] = rows(wf.name)

    url = reverse("admin:workflows_app_workflowexecution_change", args=[row.pk])
    response = admin_client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    assert "(item 1/2)" in html and "(item 2/2)" in html
    assert f"{names['loop']} [2/2] #1" in html  # the timeline bar of item 2
    [loop] = [s for s in response.context["history"] if s["step_id"] == names["loop"]]
    assert sorted(a["iteration"] for a in loop["attempts"]) == [0, 1, 2]
    # The step's input is the loop's (the list), not the last item's.
    assert json.loads(loop["input"]) == [1, 2]
