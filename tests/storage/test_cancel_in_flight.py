"""Cancel in flight, as Medusa does: a cancel of a run another thread executes is
recorded and answered at once; the executor starts no further step and compensates
in reverse; a run released with a pending request is compensated by recovery."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.sdk import StepResponse, create_step, create_workflow
from workflows_app.storage.cancels import CANCEL_POLL_SECONDS

from .helpers import Calls, uname

pytestmark = pytest.mark.django_db(transaction=True)
WAIT_SECONDS = 30


def _held_run(calls: Calls):
    """A run whose first step blocks until ``go`` is set, in a thread of its own."""
    name = uname("inflight")
    started, go = threading.Event(), threading.Event()

    def step(label: str, block: bool = False):
        def invoke(value, ctx):
            calls.hit("invoke", label)
            if block:
                started.set()
                assert go.wait(WAIT_SECONDS)
            return StepResponse(value + 1, label)

        def compensate(data, ctx):
            calls.hit("compensate", data)

        return create_step(f"{name}-{label}", invoke, compensate)

    first, second, third = step("first"), step("slow", block=True), step("third")
    create_workflow(name, lambda n: third(second(first(n))), store=True, retention_time=600)

    def run() -> None:
        try:
            workflow_engine.run(name, input=0, transaction_id="inflight", throw_on_error=False)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(WAIT_SECONDS)
    return name, go, thread


def _finish(name: str, go: threading.Event, thread: threading.Thread) -> WorkflowExecution:
    # The executor reads the request at most every CANCEL_POLL_SECONDS.
    time.sleep(CANCEL_POLL_SECONDS + 0.2)
    go.set()
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive()
    return WorkflowExecution.objects.get(workflow_id=name)


def _assert_canceled(row: WorkflowExecution, calls: Calls) -> None:
    assert (row.state, row.status) == ("reverted", "CANCELED")
    assert row.cancel_requested_at is None
    # The step in flight finished; nothing after it started; compensation in reverse.
    assert calls.invoked("third") == 0
    assert [calls.invoked("first"), calls.invoked("slow")] == [1, 1]
    assert calls.compensated("slow") == 1 and calls.compensated("first") == 1
    order = list(
        StepExecution.objects.filter(execution=row, handler_type="compensate")
        .order_by("id")
        .values_list("step_id", flat=True)
    )
    assert [step.rsplit("-", 1)[-1] for step in order] == ["slow", "first"]


def test_cancel_of_a_run_executed_elsewhere_is_requested_and_applied_at_the_next_step():
    calls = Calls()
    name, go, thread = _held_run(calls)

    answer = workflow_engine.cancel(name, "inflight")

    assert answer.acknowledgement["cancel_requested"] is True
    assert answer.acknowledgement["state"] == "invoking"
    assert WorkflowExecution.objects.get(workflow_id=name).cancel_requested_at is not None
    _assert_canceled(_finish(name, go, thread), calls)


def test_the_api_answers_202_and_the_admin_says_the_cancel_was_requested(admin_client):
    calls = Calls()
    name, go, thread = _held_run(calls)
    row = WorkflowExecution.objects.get(workflow_id=name)

    response = admin_client.post(reverse("workflows_app:execution-cancel", args=[row.pk]))
    assert response.status_code == 202
    assert response.json()["execution"]["id"] == row.pk
    page = admin_client.post(reverse("admin:workflows_app_workflowexecution_cancel", args=[row.pk]))
    assert page.status_code == 302
    [message] = [str(m) for m in get_messages(page.wsgi_request)]
    assert "Cancel requested" in message

    _assert_canceled(_finish(name, go, thread), calls)


def test_a_released_run_with_a_pending_cancel_is_compensated_by_recovery():
    calls = Calls()
    name = uname("pending")
    first = create_step(
        f"{name}-first",
        lambda value, ctx: StepResponse(value + 1, "first"),
        lambda data, ctx: calls.hit("compensate", data),
    )
    answer = create_step(f"{name}-answer", lambda value, ctx: None, async_=True)
    create_workflow(name, lambda n: answer(first(n)), store=True, retention_time=600)
    workflow_engine.run(name, input=0, transaction_id="pending")
    # The request reached the row while the run was held; the holder released it.
    WorkflowExecution.objects.filter(workflow_id=name).update(cancel_requested_at=timezone.now())

    assert workflow_engine.recover(now=timezone.now() + timedelta(seconds=1)) == 1

    row = WorkflowExecution.objects.get(workflow_id=name)
    assert (row.state, row.status) == ("reverted", "CANCELED")
    assert calls.compensated("first") == 1
