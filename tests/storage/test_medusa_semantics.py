"""Medusa's long-running semantics on stored runs (SQLite or PostgreSQL, whichever
DATABASE_URL names): async steps run where ``run()`` is called and wait, answers run
the steps that follow in the caller, only background work goes to a worker; waiting
attempts keep their wait; the transaction timeout blames the steps that overran; the
result of a run that did not end ``done`` (the top-level error: test_execution_error).

The django-q2 tests configure that backend with NO worker running: whatever would
need one stays queued in ``OrmQ`` (or in Redis when the project uses that broker).
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from django.urls import reverse
from django_q.models import OrmQ
from rest_framework.test import APIClient

from tests.support import uname
from workflows_app import tasks
from workflows_app.background import uses_redis
from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.orchestration import WorkflowError, runtime
from workflows_app.orchestration.clock import clock
from workflows_app.sdk import StepResponse, create_step, create_workflow, parallelize, transform
from workflows_app.testing import advance

pytestmark = pytest.mark.django_db

calls: list[tuple[str, int]] = []


@pytest.fixture(autouse=True)
def _clear_calls():
    calls.clear()
    yield
    calls.clear()


def queued() -> list[tuple]:
    """The resume tasks waiting for a worker (ORM broker)."""
    return [(t.task["func"], t.task["args"]) for t in OrmQ.objects.all()]


def attempts(transaction_id: str) -> list[tuple[str, int, str]]:
    rows = StepExecution.objects.filter(
        execution__transaction_id=transaction_id, handler_type="invoke"
    ).order_by("id")
    return [(r.step_id.rsplit("-", 1)[-1], r.attempt, r.status) for r in rows]


def tracked(name: str, *, returns=None, **options):
    """A step that records ``(name, thread id)`` and returns ``returns(value)``."""

    def invoke(value, ctx):
        calls.append((name.rsplit("-", 1)[-1], threading.get_ident()))
        if returns is not None:
            return returns(value)
        return StepResponse(value, name)

    def compensate(data, ctx):
        calls.append((f"undo {name.rsplit('-', 1)[-1]}", threading.get_ident()))

    return create_step(name, invoke, compensate, **options)


def approval_workflow(**options) -> str:
    """``first`` -> ``ask`` (async: returns nothing, so it waits) -> ``last``."""
    name = uname("ms-approval")
    first = tracked(f"{name}-first")
    ask = tracked(f"{name}-ask", returns=lambda value: None, async_=True)
    last = tracked(f"{name}-last", returns=lambda value: StepResponse({"approved": value}))
    options.setdefault("retention_time", 3600)
    create_workflow(name, lambda input: last(ask(first(input))), **options)
    return name


# 1. Async steps run where run() is called


def test_an_async_step_waits_when_run_returns_and_is_answered_at_once_without_a_worker(
    django_q_backend,
):
    name = approval_workflow()
    here = threading.get_ident()

    res = workflow_engine.run(name, input=7)

    tx_id = res.transaction.transaction_id
    assert str(res.transaction.state) == "invoking"
    assert res.result is None
    assert res.acknowledgement["has_finished"] is False
    # The async handler ran here, inside run(); the attempt row waits.
    assert calls == [("first", here), ("ask", here)]
    assert attempts(tx_id) == [("first", 1, "COMPLETED"), ("ask", 1, "WAITING")]
    assert str(res.transaction.get_step(f"{name}-ask").status) == "waiting_response"
    if not uses_redis():
        assert queued() == []

    done = workflow_engine.set_step_success(
        workflow_id=name, transaction_id=tx_id, step_id=f"{name}-ask", response="yes"
    )

    # Accepted at once, and the caller ran the step that follows.
    assert str(done.transaction.state) == "done"
    assert done.result == {"approved": "yes"}
    assert calls[-1] == ("last", here)
    assert attempts(tx_id) == [
        ("first", 1, "COMPLETED"),
        ("ask", 1, "COMPLETED"),
        ("last", 1, "COMPLETED"),
    ]
    row = WorkflowExecution.objects.get(transaction_id=tx_id)
    assert (row.state, row.output_payload) == ("done", {"approved": "yes"})
    if not uses_redis():
        assert queued() == []


def test_an_immediate_failure_answer_compensates_in_the_caller(django_q_backend):
    name = approval_workflow()
    res = workflow_engine.run(name, input=1)

    failed = workflow_engine.set_step_failure(
        f"{name}:{res.transaction.transaction_id}:{name}-ask:invoke",
        error={"message": "rejected"},
    )

    assert str(failed.transaction.state) == "reverted"
    assert [step for step, _thread in calls] == ["first", "ask", "undo ask", "undo first"]
    assert failed.errors[0].error["message"] == "rejected"
    if not uses_redis():
        assert queued() == []


def test_the_api_answers_a_step_right_after_the_run(django_q_backend, admin_user):
    name = approval_workflow()
    client = APIClient()
    client.force_authenticate(admin_user)

    started = client.post(f"/api/workflows/{name}/run/", {"input": 3}, format="json")
    assert started.status_code == 202, started.content
    tx_id = started.json()["acknowledgement"]["transaction_id"]
    answered = client.post(
        f"/api/workflows/{name}/steps/success/",
        {"transaction_id": tx_id, "step_id": f"{name}-ask", "response": "ok"},
        format="json",
    )

    assert answered.status_code == 200, answered.content
    assert WorkflowExecution.objects.get(transaction_id=tx_id).state == "done"


def test_a_background_step_is_still_queued_for_a_worker(django_q_backend):
    name = uname("ms-bg")
    first = tracked(f"{name}-first")
    work = tracked(f"{name}-work", async_=True, background_execution=True)
    create_workflow(name, lambda input: work(first(input)), retention_time=3600)

    res = workflow_engine.run(name, input=1)

    tx_id = res.transaction.transaction_id
    assert str(res.transaction.state) == "invoking"
    assert [step for step, _thread in calls] == ["first"]
    assert attempts(tx_id) == [("first", 1, "COMPLETED")]
    if not uses_redis():
        assert queued() == [("workflows_app.tasks.resume", (name, tx_id))]
    assert tasks.resume(name, tx_id) == "done"
    assert [step for step, _thread in calls] == ["first", "work"]


def test_an_async_step_that_returns_a_step_response_completes_here_and_a_worker_goes_on(
    django_q_backend,
):
    name = uname("ms-auto")
    auto = tracked(f"{name}-auto", async_=True)
    last = tracked(f"{name}-last")
    create_workflow(name, lambda input: last(auto(input)), retention_time=3600)

    res = workflow_engine.run(name, input=1)

    tx_id = res.transaction.transaction_id
    assert str(res.transaction.state) == "invoking"
    assert attempts(tx_id) == [("auto", 1, "COMPLETED")]
    if not uses_redis():
        assert queued() == [("workflows_app.tasks.resume", (name, tx_id))]
    assert tasks.resume(name, tx_id) == "done"
    assert attempts(tx_id) == [("auto", 1, "COMPLETED"), ("last", 1, "COMPLETED")]


def test_retry_step_hands_the_new_attempt_to_a_worker(django_q_backend):
    name = approval_workflow()
    res = workflow_engine.run(name, input=2)
    tx_id = res.transaction.transaction_id

    retried = workflow_engine.retry_step(f"{name}:{tx_id}:{name}-ask:invoke")

    # As in Medusa (a retry scheduled at once), the worker invokes the step again.
    assert str(retried.transaction.state) == "invoking"
    assert attempts(tx_id) == [("first", 1, "COMPLETED"), ("ask", 1, "WAITING")]
    if not uses_redis():
        assert queued() == [("workflows_app.tasks.resume", (name, tx_id))]
    assert tasks.resume(name, tx_id) == "invoking"
    assert attempts(tx_id) == [
        ("first", 1, "COMPLETED"),
        ("ask", 1, "WAITING"),
        ("ask", 2, "WAITING"),
    ]
    done = workflow_engine.set_step_success(f"{name}:{tx_id}:{name}-ask:invoke", response=1)
    assert str(done.transaction.state) == "done"


def test_responses_in_background_hands_the_following_steps_to_a_worker(django_q_backend, settings):
    settings.WORKFLOWS = {**settings.WORKFLOWS, "RESPONSES_IN_BACKGROUND": True}
    assert runtime.responses_in_background is True
    name = approval_workflow()
    res = workflow_engine.run(name, input=2)
    tx_id = res.transaction.transaction_id

    answered = workflow_engine.set_step_success(
        workflow_id=name, transaction_id=tx_id, step_id=f"{name}-ask", response="later"
    )

    assert str(answered.transaction.state) == "invoking"
    assert attempts(tx_id) == [("first", 1, "COMPLETED"), ("ask", 1, "COMPLETED")]
    if not uses_redis():
        assert queued() == [("workflows_app.tasks.resume", (name, tx_id))]
    assert tasks.resume(name, tx_id) == "done"
    assert WorkflowExecution.objects.get(transaction_id=tx_id).output_payload == {
        "approved": "later"
    }


# 2. A waiting attempt keeps its wait


def test_the_attempt_row_of_a_waiting_step_spans_the_wait(admin_client):
    name = approval_workflow()
    res = workflow_engine.run(name, input=1)
    tx_id = res.transaction.transaction_id
    waiting = StepExecution.objects.get(step_id=f"{name}-ask")
    started = waiting.started_at

    advance(42)
    workflow_engine.set_step_success(
        workflow_id=name, transaction_id=tx_id, step_id=f"{name}-ask", response=1
    )

    answered = StepExecution.objects.get(step_id=f"{name}-ask")
    assert answered.status == "COMPLETED"
    assert answered.started_at == started
    assert answered.ended_at - started >= timedelta(seconds=42)
    assert 42_000 <= answered.duration_ms < 60_000
    # The admin's Gantt chart draws the wait, not 0 ms.
    row = WorkflowExecution.objects.get(transaction_id=tx_id)
    page = admin_client.get(reverse("admin:workflows_app_workflowexecution_change", args=[row.pk]))
    assert page.status_code == 200
    assert re.search(rf"{name}-ask #1: completed, 4\d(\.\d)? s", page.content.decode())


# 3. The transaction timeout blames the steps that overran


def _slow(seconds: float):
    """A handler that takes ``seconds`` on the orchestrator's clock."""

    def invoke(value, ctx):
        calls.append((ctx.step_name.rsplit("-", 1)[-1], 0))
        clock.advance(seconds)
        return StepResponse(value, ctx.step_name)

    return invoke


def _undo(data, ctx):
    calls.append((f"undo {ctx.step_name.rsplit('-', 1)[-1]}", 0))


def timeout_workflow() -> str:
    """``start`` -> parallel ``quick``, ``slow`` and ``lenient`` (continue on failure);
    the workflow's timeout passes while ``slow`` and ``lenient`` run."""
    name = uname("ms-timeout")
    start = create_step(f"{name}-start", _slow(0), _undo)
    quick = create_step(f"{name}-quick", _slow(0), _undo)
    slow = create_step(f"{name}-slow", _slow(5), _undo)
    lenient = create_step(f"{name}-lenient", _slow(0), _undo, continue_on_permanent_failure=True)
    after = create_step(f"{name}-after", _slow(0), _undo)

    def compose(input):
        begun = start(input)
        parallelize(quick(begun), slow(begun), lenient(begun))
        return after(begun)

    create_workflow(name, compose, timeout=2, retention_time=3600)
    return name


def test_the_transaction_timeout_marks_each_overrunning_step_of_the_batch(settings):
    settings.WORKFLOWS = {**settings.WORKFLOWS, "PARALLEL_THREADS": 1}
    name = timeout_workflow()

    res = workflow_engine.run(name, input=1, throw_on_error=False)

    tx = res.transaction
    assert tx.get_state() == "reverted"
    assert [step for step, _ in calls[:4]] == ["start", "quick", "slow", "lenient"]
    assert "after" not in [step for step, _ in calls]
    states = {s: str(tx.get_step(f"{name}-{s}").invoke_state) for s in ("quick", "slow", "lenient")}
    assert states == {"quick": "done", "slow": "timeout", "lenient": "timeout"}
    assert [(e.step_id, e.error["name"]) for e in res.errors] == [
        (f"{name}-slow", "TransactionTimeoutError"),
        (f"{name}-lenient", "TransactionTimeoutError"),
    ]
    assert f"step {name}-slow" in res.errors[0].error["message"]
    undone = sorted(step for step, _ in calls if step.startswith("undo"))
    assert undone == ["undo lenient", "undo quick", "undo slow", "undo start"]
    row = WorkflowExecution.objects.get(transaction_id=tx.transaction_id)
    assert (row.state, row.status) == ("reverted", "TIMED_OUT")
    assert row.error.startswith(f"Transaction {tx.transaction_id} exceeded its timeout")
    assert attempts(tx.transaction_id) == [
        ("start", 1, "COMPLETED"),
        ("quick", 1, "COMPLETED"),
        ("slow", 1, "TIMED_OUT"),
        ("lenient", 1, "TIMED_OUT"),
    ]
    timed_out = StepExecution.objects.get(step_id=f"{name}-slow", handler_type="invoke")
    assert timed_out.error["name"] == "TransactionTimeoutError"


# 4. The result of a run that did not finish done


def test_a_reverted_run_returns_and_stores_the_result_built_from_what_completed():
    name = uname("ms-result")
    first = tracked(f"{name}-first", returns=lambda value: StepResponse({"n": value}))

    def explode(value, ctx):
        raise ValueError("second exploded")

    second = create_step(f"{name}-second", explode)

    def compose(input):
        one = first(input)
        two = second(one)
        return {"first": one, "second": two}

    create_workflow(name, compose, retention_time=3600)

    res = workflow_engine.run(name, input=4, throw_on_error=False)

    assert res.transaction.get_state() == "reverted"
    assert res.result == {"first": {"n": 4}, "second": None}
    assert [e.step_id for e in res.errors] == [f"{name}-second"]
    row = WorkflowExecution.objects.get(transaction_id=res.transaction.transaction_id)
    assert row.output_payload == {"first": {"n": 4}, "second": None}


def test_a_result_transform_that_raises_after_a_failure_is_reported_next_to_the_step_error():
    name = uname("ms-result-raises")
    first = tracked(f"{name}-first")

    def explode(value, ctx):
        raise ValueError("second exploded")

    second = create_step(f"{name}-second", explode)

    def compose(input):
        return transform(second(first(input)), lambda value: value["total"] * 2)

    create_workflow(name, compose, retention_time=3600)

    with pytest.raises(WorkflowError, match="second exploded") as raised:
        workflow_engine.run(name, input=4)

    errors = raised.value.errors
    assert [e.step_id for e in errors] == [f"{name}-second", "_result"]
    assert errors[1].error["name"] == "TypeError"
    row = WorkflowExecution.objects.get(workflow_id=name)
    assert row.error == "second exploded"
    assert [e["stepId"] for e in row.context["errors"]] == [f"{name}-second", "_result"]
