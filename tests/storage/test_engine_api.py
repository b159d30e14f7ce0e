"""The service layer over stored executions: listing, retrieval, cancel, events, resume."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from workflows_app.engine import ExecutionNotFound, workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import StepResponse, Transaction, create_step, create_workflow

from .helpers import Calls, chain_workflow, counted_step, rows, step_rows, uname

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def executions():
    """Two kept workflows: ``a`` with 3 runs (2 done, 1 reverted), ``b`` with one."""
    calls = Calls()
    a, _ = chain_workflow(1, calls, store=True, retention_time=3600, prefix="list-a")
    failing, _ = chain_workflow(
        1, calls, fail_last=True, store=True, retention_time=3600, prefix="list-f"
    )
    b, _ = chain_workflow(1, calls, store=True, retention_time=3600, prefix="list-b")
    workflow_engine.run(a, transaction_id="Order-100")
    workflow_engine.run(a, transaction_id="order-101")
    workflow_engine.run(failing, transaction_id="refund-7", throw_on_error=False)
    workflow_engine.run(b, transaction_id="cart-1")
    base = timezone.now() - timedelta(days=10)
    order = ["Order-100", "order-101", "refund-7", "cart-1"]
    for day, transaction_id in enumerate(order):
        WorkflowExecution.objects.filter(transaction_id=transaction_id).update(
            created_at=base + timedelta(days=day)
        )
    return {"a": a, "failing": failing, "b": b, "base": base, "order": order}


def _tx_ids(queryset) -> list[str]:
    return [row.transaction_id for row in queryset]


def test_list_defaults_to_newest_first(executions):
    mine = [executions["a"], executions["failing"], executions["b"]]
    listed = workflow_engine.list_workflow_executions(filters={"workflow_id": mine})
    assert _tx_ids(listed) == list(reversed(executions["order"]))


def test_list_filters_on_state_value_and_list(executions):
    done = workflow_engine.list_workflow_executions(filters={"state": "done"})
    assert sorted(_tx_ids(done)) == ["Order-100", "cart-1", "order-101"]
    reverted = workflow_engine.list_workflow_executions(filters={"state": "reverted"})
    assert _tx_ids(reverted) == ["refund-7"]
    both = workflow_engine.list_workflow_executions(filters={"state": ["done", "reverted"]})
    assert len(both) == 4
    none = workflow_engine.list_workflow_executions(filters={"state": ["invoking"]})
    assert list(none) == []


def test_list_filters_on_workflow_and_created_at_range(executions):
    base = executions["base"]
    by_workflow = workflow_engine.list_workflow_executions(
        filters={"workflow_id": executions["a"]}, order="created_at"
    )
    assert _tx_ids(by_workflow) == ["Order-100", "order-101"]

    window = workflow_engine.list_workflow_executions(
        filters={
            "created_at": {
                "gte": base + timedelta(days=1),
                "lt": base + timedelta(days=3),
            }
        },
        order=["created_at"],
    )
    assert _tx_ids(window) == ["order-101", "refund-7"]

    after = workflow_engine.list_workflow_executions(
        filters={"created_at": {"gt": base + timedelta(days=2)}}
    )
    assert _tx_ids(after) == ["cart-1"]

    with pytest.raises(ValueError):
        list(workflow_engine.list_workflow_executions(filters={"created_at": {"near": base}}))
    with pytest.raises(ValueError):
        list(workflow_engine.list_workflow_executions(filters={"execution": {}}))


def test_list_q_searches_transaction_id_case_insensitively(executions):
    found = workflow_engine.list_workflow_executions(q="ORDER-10", order="created_at")
    assert _tx_ids(found) == ["Order-100", "order-101"]
    assert _tx_ids(workflow_engine.list_workflow_executions(q="fund-")) == ["refund-7"]
    # q also matches the workflow id and combines with filters.
    combined = workflow_engine.list_workflow_executions(
        filters={"state": "done"}, q=executions["b"]
    )
    assert _tx_ids(combined) == ["cart-1"]
    assert list(workflow_engine.list_workflow_executions(q="no-such-thing")) == []


def test_list_order_limit_offset(executions):
    ordered = _tx_ids(workflow_engine.list_workflow_executions(order="created_at"))
    assert ordered == executions["order"]
    page = workflow_engine.list_workflow_executions(order="created_at", limit=2, offset=1)
    assert _tx_ids(page) == executions["order"][1:3]
    tail = workflow_engine.list_workflow_executions(order="-created_at", offset=3)
    assert _tx_ids(tail) == executions["order"][:1]
    by_id = _tx_ids(workflow_engine.list_workflow_executions(order=["transaction_id"]))
    assert by_id == sorted(executions["order"])
    with pytest.raises(ValueError):
        workflow_engine.list_workflow_executions(order="execution")


def test_retrieve_execution_by_id_and_unknown_id(executions):
    row = WorkflowExecution.objects.get(transaction_id="refund-7")
    found = workflow_engine.retrieve_workflow_execution(row.id)
    assert found.pk == row.pk
    assert found.state == "reverted"
    with pytest.raises(ExecutionNotFound):
        workflow_engine.retrieve_workflow_execution("wf_exec_01NOSUCHEXECUTION0000000000")


def _paused_workflow(calls: Calls, **options):
    """A -> B -> C where B fails once; with auto_retry=False the run pauses at B."""
    name = uname("pause")
    first = counted_step(f"{name}-a", calls)
    last = counted_step(f"{name}-c", calls)

    def flaky(value, ctx):
        calls.hit("invoke", f"{name}-b")
        if calls.invoked(f"{name}-b") == 1:
            raise RuntimeError("not yet")
        return StepResponse(value + 10)

    middle = create_step(f"{name}-b", flaky, max_retries=1, auto_retry=False)
    create_workflow(name, lambda inp: last(middle(first(inp))), **options)
    return name


def test_auto_retry_false_pauses_then_run_resumes_without_rerunning_steps():
    calls = Calls()
    name = _paused_workflow(calls, store=True, retention_time=3600)

    first = workflow_engine.run(name, input=1, transaction_id="pause-1")

    assert first.acknowledgement["has_finished"] is False
    assert (calls.invoked(f"{name}-a"), calls.invoked(f"{name}-b")) == (1, 1)
    assert calls.invoked(f"{name}-c") == 0
    [row] = rows(name)
    assert row.state == "invoking"
    assert row.status == "RUNNING"
    assert row.owner == ""
    assert row.lease_expires_at is None
    assert [(s.step_id, s.status) for s in step_rows(row)] == [
        (f"{name}-a", "COMPLETED"),
        (f"{name}-b", "FAILED"),
    ]

    running = workflow_engine.get_running_transaction(name, "pause-1")
    assert isinstance(running, Transaction)
    assert str(running.state) == "invoking"
    assert WorkflowExecution.objects.get(pk=row.pk).owner == "", "peeking takes no lease"

    second = workflow_engine.run(name, transaction_id="pause-1")

    assert second.result == 13
    assert second.acknowledgement["run_id"] == first.acknowledgement["run_id"]
    assert calls.invoked(f"{name}-a") == 1, "completed steps are not run again"
    assert calls.invoked(f"{name}-b") == 2
    assert calls.invoked(f"{name}-c") == 1
    [row] = rows(name)
    assert row.state == "done"
    assert row.output_payload == 13
    assert [(s.step_id, s.attempt, s.status) for s in step_rows(row)] == [
        (f"{name}-a", 1, "COMPLETED"),
        (f"{name}-b", 1, "FAILED"),
        (f"{name}-b", 2, "COMPLETED"),
        (f"{name}-c", 1, "COMPLETED"),
    ]
    assert workflow_engine.get_running_transaction(name, "pause-1") is None


def test_auto_retry_false_without_retention_is_deleted_after_resume():
    calls = Calls()
    name = _paused_workflow(calls)

    workflow_engine.run(name, input=1, transaction_id="pause-2")
    assert [r.state for r in rows(name)] == ["invoking"]
    res = workflow_engine.run(name, transaction_id="pause-2")

    assert res.result == 13
    assert calls.invoked(f"{name}-a") == 1
    assert rows(name) == []


def test_get_running_transaction_is_none_for_finished_and_unknown():
    calls = Calls()
    name, _ = chain_workflow(1, calls, store=True, retention_time=3600)
    workflow_engine.run(name, transaction_id="fin-1")
    assert workflow_engine.get_running_transaction(name, "fin-1") is None
    assert workflow_engine.get_running_transaction(name, "never-ran") is None


def test_cancel_done_kept_execution_compensates_and_marks_canceled():
    calls = Calls()
    name, steps = chain_workflow(3, calls, store=True, retention_time=3600)
    workflow_engine.run(name, input=0, transaction_id="cancel-1")
    assert calls.total("compensate") == 0

    res = workflow_engine.cancel(name, "cancel-1")

    assert [calls.compensated(step) for step in steps] == [1, 1, 1]
    assert calls.total("invoke") == 3
    assert str(res.transaction.state) == "reverted"
    [row] = rows(name)
    assert row.state == "reverted"
    assert row.status == "CANCELED"
    assert row.execution["cancelledAt"] is not None
    compensations = [s for s in step_rows(row) if s.handler_type == "compensate"]
    assert [s.step_id for s in compensations] == list(reversed(steps))
    assert {s.status for s in compensations} == {"COMPLETED"}


def test_cancel_unknown_transaction_raises():
    calls = Calls()
    name, _ = chain_workflow(1, calls, store=True, retention_time=3600)
    with pytest.raises(LookupError):
        workflow_engine.cancel(name, "missing")


def test_subscribe_receives_step_and_finish_events_until_unsubscribed():
    calls = Calls()
    name, steps = chain_workflow(2, calls, store=True, retention_time=3600)
    events: list[dict] = []

    workflow_engine.subscribe(name, events.append, subscriber_id="watcher")
    try:
        workflow_engine.run(name, input=1, transaction_id="sub-1")
    finally:
        workflow_engine.unsubscribe(name, "watcher")

    kinds = [e["event_type"] for e in events]
    successes = [e for e in events if e["event_type"] == "on_step_success"]
    assert [e["step"] for e in successes] == steps
    assert [e["response"] for e in successes] == [2, 3]
    assert kinds[-1] == "on_finish"
    assert events[-1]["result"] == 3
    assert events[-1]["state"] == "done"
    assert {e["transaction_id"] for e in events} == {"sub-1"}
    assert {e["workflow_id"] for e in events} == {name}

    count = len(events)
    workflow_engine.run(name, input=1, transaction_id="sub-2")
    assert len(events) == count


def test_subscribe_to_one_transaction_and_unsubscribe_by_function():
    calls = Calls()
    name, _ = chain_workflow(1, calls, store=True, retention_time=3600)
    mine: list[dict] = []
    everything: list[dict] = []

    workflow_engine.subscribe(name, mine.append, transaction_id="only-this")
    workflow_engine.subscribe(name, everything.append)
    try:
        workflow_engine.run(name, transaction_id="other")
        workflow_engine.run(name, transaction_id="only-this")
    finally:
        workflow_engine.unsubscribe(name, everything.append)

    assert {e["transaction_id"] for e in mine} == {"only-this"}
    assert mine[-1]["event_type"] == "on_finish"
    assert {e["transaction_id"] for e in everything} == {"other", "only-this"}
    finishes = [e for e in everything if e["event_type"] == "on_finish"]
    assert len(finishes) == 2

    before = (len(mine), len(everything))
    workflow_engine.run(name, transaction_id="only-this")
    assert (len(mine), len(everything)) == before
