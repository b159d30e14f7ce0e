"""Definitions, runs and step responses: /api/workflows/..."""

from __future__ import annotations

import pytest
from django.urls import reverse

from workflows_app.models import WorkflowExecution

from .conftest import chain_workflow, start, uname, waiting_workflow

pytestmark = pytest.mark.django_db

RUN_KEYS = {"acknowledgement", "result", "errors", "execution"}
ACK_KEYS = {"transaction_id", "workflow_id", "run_id", "has_finished", "has_failed"}


def run_url(name: str) -> str:
    return reverse("workflows_app:workflow-run", args=[name])


def step_url(name: str, outcome: str) -> str:
    return reverse(f"workflows_app:workflow-step-{outcome}", args=[name])


def test_urls_are_namespaced_and_mounted_at_api():
    assert reverse("workflows_app:workflow-list") == "/api/workflows/"
    assert reverse("workflows_app:workflow-detail", args=["w.x"]) == "/api/workflows/w.x/"
    assert run_url("w") == "/api/workflows/w/run/"
    assert step_url("w", "success") == "/api/workflows/w/steps/success/"
    assert step_url("w", "failure") == "/api/workflows/w/steps/failure/"
    assert reverse("workflows_app:execution-list") == "/api/workflow-executions/"
    assert reverse("workflows_app:execution-events", args=["x"]).endswith("/x/events/")


def test_list_definitions_includes_options_steps_hooks_and_graph(staff_client):
    name = waiting_workflow()

    response = staff_client.get("/api/workflows/")

    assert response.status_code == 200
    [entry] = [item for item in response.json() if item["name"] == name]
    assert entry["options"]["store"] is True
    assert entry["options"]["retention_time"] == 3600
    assert [s["step_id"] for s in entry["steps"]] == [f"{name}-first", f"{name}-approve"]
    assert entry["steps"][1]["depends_on"] == [entry["steps"][0]["id"]]
    assert entry["hooks"] == []
    assert entry["definition"]["next"]["stepId"] == f"{name}-first"
    assert len(entry["definition_hash"]) == 64


def test_retrieve_definition(staff_client):
    name = chain_workflow()

    response = staff_client.get(f"/api/workflows/{name}/")

    assert response.status_code == 200
    assert response.json()["name"] == name
    assert len(response.json()["steps"]) == 2


def test_retrieve_unknown_definition_is_404(staff_client):
    response = staff_client.get(f"/api/workflows/{uname('nope')}/")

    assert response.status_code == 404
    assert response.json()["type"] == "not_found"
    assert response.json()["code"] == "WorkflowNotFound"


def test_run_not_stored_workflow_gives_201_with_result_and_acknowledgement(staff_client):
    name = chain_workflow()

    response = staff_client.post(run_url(name), {"input": 1}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == RUN_KEYS
    assert body["result"] == 3
    assert body["errors"] == []
    assert body["execution"] is None
    assert set(body["acknowledgement"]) >= ACK_KEYS
    assert body["acknowledgement"]["has_finished"] is True
    assert body["acknowledgement"]["has_failed"] is False
    assert not WorkflowExecution.objects.filter(workflow_id=name).exists()


def test_run_stored_workflow_gives_201_with_the_execution_and_steps_log(staff_client):
    name = chain_workflow(store=True, retention_time=3600)

    response = staff_client.post(
        run_url(name), {"input": 5, "transaction_id": "kept-1"}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["result"] == 7
    execution = body["execution"]
    assert execution["id"].startswith("wf_exec_")
    assert execution["transaction_id"] == "kept-1"
    assert execution["state"] == "done"
    assert execution["output_payload"] == 7
    assert execution["execution"]["state"] == "done"
    assert "data" in execution["context"]
    assert [e["stepId"] for e in execution["steps_log"]] == [f"{name}-one", f"{name}-two"]
    assert execution["steps_log"][0]["status"] == "COMPLETED"


def test_run_with_failure_is_201_with_errors(staff_client):
    name = uname("api-fail")
    from workflows_app.sdk import create_step, create_workflow

    def explode(value, ctx):
        raise ValueError("boom")

    step = create_step(f"{name}-x", explode)
    create_workflow(name, lambda n: step(n))

    response = staff_client.post(run_url(name), {}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["acknowledgement"]["has_failed"] is True
    assert body["errors"][0]["stepId"] == f"{name}-x"
    assert body["errors"][0]["error"]["message"] == "boom"


def test_non_serialisable_step_output_fails_the_run_without_a_500(staff_client):
    name = uname("api-nonser")
    from workflows_app.sdk import create_step, create_workflow

    step = create_step(f"{name}-obj", lambda n, c: object())
    create_workflow(name, lambda n: step(n), store=True, retention_time=60)

    response = staff_client.post(run_url(name), {}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["acknowledgement"]["has_failed"] is True
    assert body["errors"][0]["error"]["name"] == "NonSerializableCheckpointError"
    assert f"{name}-obj" in body["errors"][0]["error"]["message"]


def test_run_waiting_workflow_gives_202_with_acknowledgement(staff_client):
    name = waiting_workflow()

    response = staff_client.post(
        run_url(name), {"input": 1, "transaction_id": "wait-1"}, format="json"
    )

    assert response.status_code == 202
    body = response.json()
    ack = body["acknowledgement"]
    assert ack["transaction_id"] == "wait-1"
    assert ack["workflow_id"] == name
    assert ack["has_finished"] is False
    assert ack["has_failed"] is False
    assert ack["run_id"]
    row = WorkflowExecution.objects.get(workflow_id=name)
    assert body["execution_id"] == row.pk
    assert row.state == "invoking"


def test_step_success_completes_a_waiting_step(staff_client):
    name = waiting_workflow()
    start(name, 1, "tx-ok")

    response = staff_client.post(
        step_url(name, "success"),
        {"transaction_id": "tx-ok", "step_id": f"{name}-approve", "response": {"ok": True}},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["acknowledgement"]["has_finished"] is True
    assert body["execution"]["state"] == "done"
    approve = [e for e in body["execution"]["steps_log"] if e["stepId"] == f"{name}-approve"]
    assert approve[-1]["status"] == "COMPLETED"
    assert approve[-1]["output"] == {"ok": True}


def test_step_failure_fails_a_waiting_step_and_compensates(staff_client):
    name = waiting_workflow()
    start(name, 1, "tx-bad")

    response = staff_client.post(
        step_url(name, "failure"),
        {"transaction_id": "tx-bad", "step_id": f"{name}-approve", "response": "denied"},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["acknowledgement"]["has_failed"] is True
    assert body["execution"]["state"] == "reverted"


def test_step_response_on_a_step_that_is_not_waiting_is_409(staff_client):
    name = waiting_workflow()
    start(name, 1, "tx-nw")

    response = staff_client.post(
        step_url(name, "success"),
        {"transaction_id": "tx-nw", "step_id": f"{name}-first"},
        format="json",
    )

    assert response.status_code == 409
    assert response.json()["type"] == "conflict"
    assert response.json()["code"] == "InvalidStepStateError"


def test_step_response_on_a_finished_transaction_is_409(staff_client):
    name = waiting_workflow()
    start(name, 1, "tx-fin")
    body = {"transaction_id": "tx-fin", "step_id": f"{name}-approve"}
    assert staff_client.post(step_url(name, "success"), body, format="json").status_code == 200

    response = staff_client.post(step_url(name, "success"), body, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "TransactionFinishedError"


def test_step_response_on_an_unknown_transaction_is_404(staff_client):
    name = waiting_workflow()

    response = staff_client.post(
        step_url(name, "success"),
        {"transaction_id": "never", "step_id": f"{name}-approve"},
        format="json",
    )

    assert response.status_code == 404
    assert response.json()["type"] == "not_found"


def test_step_response_with_an_unknown_step_is_400(staff_client):
    name = waiting_workflow()
    start(name, 1, "tx-us")

    response = staff_client.post(
        step_url(name, "success"),
        {"transaction_id": "tx-us", "step_id": "nope"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["details"]["step_id"]


def test_step_response_needs_transaction_and_step(staff_client):
    name = waiting_workflow()

    response = staff_client.post(step_url(name, "success"), {}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "invalid_data"
    assert set(body["details"]) == {"transaction_id", "step_id"}
