"""Server-Sent Events: GET /api/workflow-executions/{id}/events/."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.db import connection

from workflows_app.api.views import WorkflowExecutionViewSet
from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution

from .conftest import chain_workflow, start, waiting_workflow

pytestmark = pytest.mark.django_db(transaction=True)


def events_url(pk: str) -> str:
    return f"/api/workflow-executions/{pk}/events/"


def parse(chunks: list[bytes]) -> list[tuple[str, dict]]:
    """(event, data) pairs of an SSE body; comments are skipped."""
    messages = []
    for block in b"".join(chunks).decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        messages.append((fields["event"], json.loads(fields["data"])))
    return messages


def in_thread(function, delay: float = 0.3) -> threading.Thread:
    def target():
        try:
            time.sleep(delay)
            function()
        finally:
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def subscribers(name: str) -> dict:
    return workflow_engine._subscribers.get(name, {})


def test_finished_execution_streams_its_final_event_and_closes(staff_client):
    name = chain_workflow(store=True, retention_time=3600)
    start(name, 1, "sse-done")
    pk = WorkflowExecution.objects.get(workflow_id=name).pk

    started = time.monotonic()
    response = staff_client.get(events_url(pk), HTTP_ACCEPT="text/event-stream")
    chunks = list(response.streaming_content)

    assert time.monotonic() - started < 5
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    [(event, data)] = parse(chunks)
    assert event == "on_finish"
    assert data["state"] == "done"
    assert data["result"] == 3
    assert data["stored"] is True
    assert data["execution_id"] == pk
    assert data["transaction_id"] == "sse-done"
    assert not subscribers(name)


def test_waiting_execution_streams_step_success_and_finish(staff_client):
    name = waiting_workflow()
    start(name, 1, "sse-wait")
    pk = WorkflowExecution.objects.get(workflow_id=name).pk

    response = staff_client.get(events_url(pk))
    assert response.status_code == 200
    thread = in_thread(
        lambda: workflow_engine.set_step_success(
            workflow_id=name,
            transaction_id="sse-wait",
            step_id=f"{name}-approve",
            response={"approved": True, "token": "s3cret"},
        )
    )
    chunks = list(response.streaming_content)
    thread.join(10)

    messages = parse(chunks)
    events = [event for event, _ in messages]
    assert "on_step_success" in events
    assert events[-1] == "on_finish"
    success = dict(messages)["on_step_success"]
    assert success["step"] == f"{name}-approve"
    assert success["response"] == {"approved": True, "token": "[REDACTED]"}
    assert success["execution_id"] == pk
    assert dict(messages)["on_finish"]["state"] == "done"
    assert not subscribers(name)


def test_stream_ends_when_another_process_finishes_the_run(staff_client, monkeypatch):
    monkeypatch.setattr(WorkflowExecutionViewSet, "events_poll_seconds", 0.2)
    name = waiting_workflow()
    start(name, 1, "sse-other")
    pk = WorkflowExecution.objects.get(workflow_id=name).pk

    response = staff_client.get(events_url(pk))
    # A write without in-process events, as a worker in another process would make.
    thread = in_thread(lambda: WorkflowExecution.objects.filter(pk=pk).update(state="done"))
    chunks = list(response.streaming_content)
    thread.join(10)

    [(event, data)] = parse(chunks)
    assert event == "on_finish"
    assert data["stored"] is True
    assert data["state"] == "done"


def test_keep_alive_comments_and_bounded_duration(staff_client, monkeypatch):
    monkeypatch.setattr(WorkflowExecutionViewSet, "events_keepalive_seconds", 0.2)
    name = waiting_workflow()
    start(name, 1, "sse-idle")
    pk = WorkflowExecution.objects.get(workflow_id=name).pk

    started = time.monotonic()
    response = staff_client.get(events_url(pk), {"timeout": 1})
    chunks = list(response.streaming_content)

    assert 0.9 < time.monotonic() - started < 5
    assert b": keep-alive\n\n" in b"".join(chunks)
    [(event, data)] = parse(chunks)
    assert event == "stream_timeout"
    assert data["execution_id"] == pk
    assert not subscribers(name)


def test_closing_the_response_unsubscribes(staff_client):
    name = waiting_workflow()
    start(name, 1, "sse-close")
    pk = WorkflowExecution.objects.get(workflow_id=name).pk

    response = staff_client.get(events_url(pk))
    assert subscribers(name)
    next(iter(response.streaming_content))
    response.close()

    assert not subscribers(name)


@pytest.mark.parametrize("timeout", ["0", "601", "soon"])
def test_bad_timeout_is_400(staff_client, timeout):
    name = waiting_workflow()
    start(name, 1, "sse-bad")
    pk = WorkflowExecution.objects.get(workflow_id=name).pk

    response = staff_client.get(events_url(pk), {"timeout": timeout})

    assert response.status_code == 400
    assert response.json()["details"]["timeout"]
    assert not subscribers(name)


def test_unknown_execution_asked_as_event_stream_gets_an_error_event(staff_client):
    response = staff_client.get(events_url("wf_exec_nope"), HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 404
    [(event, data)] = parse([response.content])
    assert event == "error"
    assert data["type"] == "not_found"
