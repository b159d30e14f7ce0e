"""Answering a step of a run another worker holds: the API answers 202 with the
execution, the admin says the answer is recorded; the run finishes with it once the
holder releases it (issue 16 item 2)."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from workflows_app.models import WorkflowExecution
from workflows_app.orchestration import orchestrator, runtime
from workflows_app.sdk import get_workflow

from .conftest import start, waiting_workflow

pytestmark = pytest.mark.django_db(transaction=True)


def _held(name: str, transaction_id: str):
    """The waiting run, claimed by a second executor (a handle of its own)."""
    start(name, 1, transaction_id)
    return runtime.storage.load(get_workflow(name).definition, transaction_id)


def test_an_answer_to_a_held_run_is_202_and_the_run_finishes_with_it(staff_client):
    name = waiting_workflow()
    holder = _held(name, "tx-held")
    url = reverse("workflows_app:workflow-step-success", args=[name])
    body = {"transaction_id": "tx-held", "step_id": f"{name}-approve", "response": {"ok": 1}}

    response = staff_client.post(url, body, format="json")

    assert response.status_code == 202
    data = response.json()
    assert data["acknowledgement"]["answer_recorded"] is True
    assert data["acknowledgement"]["state"] == "invoking"
    row = WorkflowExecution.objects.get(workflow_id=name)
    assert data["execution"]["id"] == row.pk
    # A second answer while the first waits to be applied: refused as today.
    second = staff_client.post(url, {**body, "response": {"ok": 2}}, format="json")
    assert second.status_code == 409
    assert "already answered" in second.json()["message"]

    orchestrator.execute(holder)  # the holder goes on and releases the run

    row = WorkflowExecution.objects.get(workflow_id=name)
    assert row.state == "done"
    assert row.context["data"]["invoke"][f"{name}-approve"]["output"] == {"ok": 1}
    again = staff_client.post(url, body, format="json")
    assert again.status_code == 409


def test_a_failure_for_a_held_run_is_202(staff_client):
    name = waiting_workflow()
    holder = _held(name, "tx-fail")

    response = staff_client.post(
        reverse("workflows_app:workflow-step-failure", args=[name]),
        {"transaction_id": "tx-fail", "step_id": f"{name}-approve", "response": "denied"},
        format="json",
    )

    assert response.status_code == 202
    orchestrator.execute(holder)
    assert WorkflowExecution.objects.get(workflow_id=name).state == "reverted"


def test_the_admin_says_the_answer_is_recorded(admin_client):
    name = waiting_workflow()
    holder = _held(name, "tx-admin")
    row = WorkflowExecution.objects.get(workflow_id=name)

    page = admin_client.post(
        reverse("admin:workflows_app_workflowexecution_complete_step", args=[row.pk]),
        {
            "step_id": f"{name}-approve",
            "action": "invoke",
            "outcome": "success",
            "response": '{"ok": 3}',
        },
    )

    assert page.status_code == 302
    [message] = [str(m) for m in get_messages(page.wsgi_request)]
    assert "answer recorded" in message
    assert "applies when the run is free" in message
    orchestrator.execute(holder)
    assert WorkflowExecution.objects.get(workflow_id=name).state == "done"
