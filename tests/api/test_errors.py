"""Bad input gets a JSON {"type", "message"} error with a 4xx status, never a 500."""

from __future__ import annotations

import datetime
import json

import pytest
from django.test import override_settings
from django.utils import timezone

from workflows_app.api.exceptions import api_exception_handler
from workflows_app.conf import DEFAULTS
from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.orchestration import (
    InvalidTransactionStateError,
    NonSerializableCheckpointError,
    PayloadTooLargeError,
    TransactionAlreadyStarted,
)

from .conftest import chain_workflow, start, uname, waiting_workflow

pytestmark = pytest.mark.django_db


def run_url(name: str) -> str:
    return f"/api/workflows/{name}/run/"


def assert_error(response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["type"] == type_
    assert isinstance(body["message"], str) and body["message"]
    return body


def test_malformed_json_is_400(staff_client):
    name = chain_workflow()

    response = staff_client.post(run_url(name), "{not json", content_type="application/json")

    assert_error(response, 400, "invalid_data")


def test_json_that_is_not_an_object_is_400(staff_client):
    name = chain_workflow()

    response = staff_client.post(run_url(name), [1, 2], format="json")

    assert_error(response, 400, "invalid_data")


def test_nan_is_refused(staff_client):
    name = chain_workflow()

    response = staff_client.post(run_url(name), '{"input": NaN}', content_type="application/json")

    assert_error(response, 400, "invalid_data")


def test_too_deeply_nested_json_is_400(staff_client):
    name = chain_workflow()
    body = '{"input": ' + "[" * 100_000 + "]" * 100_000 + "}"

    response = staff_client.post(run_url(name), body, content_type="application/json")

    assert_error(response, 400, "invalid_data")


def test_form_data_is_415(staff_client):
    name = chain_workflow()

    response = staff_client.post(run_url(name), {"input": "1"})

    assert_error(response, 415, "unsupported")


@pytest.mark.parametrize("field", ["transaction_id"])
def test_ids_with_colon_are_400(staff_client, field):
    name = waiting_workflow()

    run = staff_client.post(run_url(name), {field: "a:b"}, format="json")
    step = staff_client.post(
        f"/api/workflows/{name}/steps/success/",
        {"transaction_id": "a:b", "step_id": f"{name}-approve"},
        format="json",
    )

    assert "transaction_id" in assert_error(run, 400, "invalid_data")["details"]
    assert "transaction_id" in assert_error(step, 400, "invalid_data")["details"]


@pytest.mark.parametrize("value", ["nul\x00byte", "lone \ud800 surrogate"])
def test_strings_the_database_cannot_store_are_400(staff_client, value):
    name = waiting_workflow()

    def post(body):
        # json.dumps escapes both as \\u sequences, as a client would send them.
        return staff_client.post(run_url(name), json.dumps(body), content_type="application/json")

    by_input = post({"input": {"k": value}})
    by_key = post({"input": {value: 1}})
    by_id = post({"transaction_id": value})

    assert_error(by_input, 400, "invalid_data")
    assert_error(by_key, 400, "invalid_data")
    assert_error(by_id, 400, "invalid_data")
    assert not WorkflowExecution.objects.filter(workflow_id=name).exists()


def test_nul_in_query_and_path_is_not_a_500(staff_client):
    listed = staff_client.get("/api/workflow-executions/", {"workflow_id": "a\x00b"})
    detail = staff_client.get("/api/workflow-executions/wf_exec_%00x/")

    assert_error(listed, 400, "invalid_data")
    assert_error(detail, 404, "not_found")


@override_settings(WORKFLOWS={**DEFAULTS, "MAX_PAYLOAD_BYTES": 200})
@pytest.mark.parametrize("stored", [True, False])
def test_oversize_input_is_400(staff_client, stored):
    name = chain_workflow(store=stored, retention_time=60) if stored else chain_workflow()

    response = staff_client.post(run_url(name), {"input": "x" * 500}, format="json")

    body = assert_error(response, 400, "invalid_data")
    assert "MAX_PAYLOAD_BYTES" in body["message"]
    assert not WorkflowExecution.objects.filter(workflow_id=name).exists()


def test_engine_payload_too_large_is_400(staff_client, monkeypatch):
    name = chain_workflow()

    def refuse(*args, **kwargs):
        raise PayloadTooLargeError("The input is 9 bytes, more than 8.")

    monkeypatch.setattr(workflow_engine, "run", refuse)
    response = staff_client.post(run_url(name), {"input": 1}, format="json")

    body = assert_error(response, 400, "invalid_data")
    assert body["code"] == "PayloadTooLargeError"


def test_engine_non_serialisable_error_is_400(staff_client, monkeypatch):
    name = chain_workflow()

    def refuse(*args, **kwargs):
        raise NonSerializableCheckpointError("The input cannot be stored as JSON.")

    monkeypatch.setattr(workflow_engine, "run", refuse)
    response = staff_client.post(run_url(name), {"input": 1}, format="json")

    assert assert_error(response, 400, "invalid_data")["code"] == "NonSerializableCheckpointError"


def test_unknown_workflow_is_404_for_every_workflow_route(staff_client):
    name = uname("missing")
    body = {"transaction_id": "t", "step_id": "s"}

    responses = [
        staff_client.get(f"/api/workflows/{name}/"),
        staff_client.post(run_url(name), {}, format="json"),
        staff_client.post(f"/api/workflows/{name}/steps/success/", body, format="json"),
        staff_client.post(f"/api/workflows/{name}/steps/failure/", body, format="json"),
    ]

    for response in responses:
        assert assert_error(response, 404, "not_found")["code"] == "WorkflowNotFound"


def test_unknown_execution_is_404_for_every_execution_route(staff_client):
    base = "/api/workflow-executions/wf_exec_unknown"

    responses = [
        staff_client.get(f"{base}/"),
        staff_client.get(f"{base}/events/"),
        staff_client.post(f"{base}/cancel/"),
        staff_client.post(f"{base}/retry/", {}, format="json"),
        staff_client.post(f"{base}/rerun/"),
    ]

    for response in responses:
        assert assert_error(response, 404, "not_found")["code"] == "ExecutionNotFound"


def test_transaction_held_by_a_live_worker_is_409(staff_client):
    name = waiting_workflow()
    start(name, 1, "held")
    WorkflowExecution.objects.filter(workflow_id=name).update(
        owner="elsewhere:1:abc", lease_expires_at=timezone.now() + datetime.timedelta(hours=1)
    )

    response = staff_client.post(run_url(name), {"transaction_id": "held"}, format="json")

    body = assert_error(response, 409, "conflict")
    assert body["code"] == "TransactionAlreadyStarted"
    assert body["message"] == "Transaction already started for transaction_id: held"


def test_wrong_method_is_405_json(staff_client):
    response = staff_client.get(run_url(chain_workflow()))

    assert_error(response, 405, "not_allowed")


def test_handler_maps_engine_errors():
    conflict = api_exception_handler(InvalidTransactionStateError("finished"), {})
    started = api_exception_handler(TransactionAlreadyStarted("t"), {})
    other = api_exception_handler(RuntimeError("bug"), {})

    assert conflict.status_code == 409
    assert conflict.data == {
        "type": "conflict",
        "message": "finished",
        "code": "InvalidTransactionStateError",
    }
    assert started.status_code == 409
    assert other is None
