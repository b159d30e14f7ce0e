"""Each input that used to answer 500 is a form error or a JSON 4xx, with nothing written."""

from __future__ import annotations

import time
from base64 import b64encode
from urllib.parse import urlencode
from uuid import uuid4

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from workflows_app import jsoninput
from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.sdk import create_step, create_workflow

pytestmark = pytest.mark.django_db

ADMIN = "/admin/workflows_app/workflowexecution"
RUN_URL = "/admin/workflows_app/workflowdefinitionentry/run/"

#: JSON texts no database can store or the engine should not recurse over.
BAD_JSON = {
    "NUL": '{"note": "a\\u0000b"}',
    "NUL in a key": '{"a\\u0000": 1}',
    "NaN": '{"amount": NaN}',
    "Infinity": "[Infinity]",
    "-Infinity": "-Infinity",
    "nested 500 levels": "[" * 500 + "]" * 500,
    "nested 990 levels": "[" * 990 + "]" * 990,
    "nested 100000 levels": "[" * 100_000 + "]" * 100_000,
}


@pytest.fixture
def superuser():
    return get_user_model().objects.create_superuser(f"su-{uuid4().hex[:8]}", password="pw")


@pytest.fixture
def admin(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def api(superuser) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=superuser).key}")
    return client


@pytest.fixture
def waiting() -> WorkflowExecution:
    name = f"bad-{uuid4().hex[:10]}"
    first = create_step(f"{name}-first", lambda n, c: {"n": n})
    approve = create_step(f"{name}-approve", lambda i, c: None, async_=True)
    create_workflow(name, lambda n: approve(first(n)), retention_time=3600)
    workflow_engine.run(name, input=1, transaction_id="bad-tx", throw_on_error=False)
    return WorkflowExecution.objects.get(workflow_id=name)


def snapshot(execution: WorkflowExecution) -> tuple:
    row = WorkflowExecution.objects.get(pk=execution.pk)
    steps = list(StepExecution.objects.filter(execution=row).values_list("id", "status"))
    return row.state, row.version, row.owner, row.lease_expires_at, steps


@pytest.mark.parametrize("text", BAD_JSON.values(), ids=BAD_JSON.keys())
@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_admin_mark_step_with_bad_json_is_a_form_error(admin, waiting, outcome, text):
    before = snapshot(waiting)

    response = admin.post(
        f"{ADMIN}/{waiting.pk}/complete-step/",
        {
            "step_id": f"{waiting.workflow_id}-approve",
            "action": "invoke",
            "outcome": outcome,
            "response": text,
        },
    )

    assert response.status_code == 200
    assert response.context["form"].errors["response"]
    after = snapshot(waiting)
    assert after == before
    assert after[2] == ""  # not held by anyone: it can still be answered
    ok = admin.post(
        f"{ADMIN}/{waiting.pk}/complete-step/",
        {
            "step_id": f"{waiting.workflow_id}-approve",
            "action": "invoke",
            "outcome": "success",
            "response": "{}",
        },
    )
    assert ok.status_code == 302
    assert WorkflowExecution.objects.get(pk=waiting.pk).state == "done"


@pytest.mark.parametrize("text", BAD_JSON.values(), ids=BAD_JSON.keys())
def test_admin_run_with_bad_json_is_a_form_error(admin, text):
    name = f"bad-run-{uuid4().hex[:10]}"
    create_workflow(name, lambda n: create_step(f"{name}-only", lambda v, c: v)(n), store=True)

    response = admin.post(RUN_URL, {"workflow": name, "input": text})

    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert not WorkflowExecution.objects.filter(workflow_id=name).exists()


@pytest.mark.parametrize("depth", [500, 990, 5000])
def test_api_refuses_deep_json_before_anything_recurses(api, depth):
    name = f"bad-api-{uuid4().hex[:10]}"
    create_workflow(name, lambda n: create_step(f"{name}-only", lambda v, c: v)(n), store=True)
    body = '{"input": ' + "[" * depth + "]" * depth + "}"

    started = time.monotonic()
    response = api.post(f"/api/workflows/{name}/run/", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["type"] == "invalid_data"
    assert "nested" in response.json()["message"]
    assert time.monotonic() - started < 5  # a safety cap: refused before any work
    assert not WorkflowExecution.objects.filter(workflow_id=name).exists()


def test_api_accepts_json_at_the_depth_limit(api):
    name = f"ok-api-{uuid4().hex[:10]}"
    create_workflow(name, lambda n: create_step(f"{name}-only", lambda v, c: v)(n), store=True)
    depth = jsoninput.MAX_DEPTH - 1  # plus the body's own object
    body = '{"input": ' + "[" * depth + "]" * depth + "}"

    response = api.post(f"/api/workflows/{name}/run/", body, content_type="application/json")

    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    "query",
    [
        {"q": "a\x00b"},
        {"workflow_id": "\x00"},
        {"state": "done\x00"},
        {"created_at__year": "\x00"},
        {"o\x00": "1"},
    ],
)
def test_nul_in_admin_list_filters_is_400(admin, waiting, query):
    response = admin.get(f"{ADMIN}/?{urlencode(query)}")

    assert response.status_code == 400


def tampered_cursor(position: str) -> str:
    raw = urlencode({"o": 0, "r": 0, "p": position}, doseq=True)
    return b64encode(raw.encode()).decode()


@pytest.mark.parametrize(
    "position",
    ["2100-01-01T00:00:00+20:00", "2100-01-01T00:00:00-23:59", "9999-12-31T23:59:00-23:00"],
)
def test_tampered_cursor_with_an_out_of_range_offset_is_not_a_500(api, waiting, position):
    response = api.get("/api/workflow-executions/", {"cursor": tampered_cursor(position)})

    assert response.status_code == 200, response.content
    assert waiting.pk in [row["id"] for row in response.json()["results"]]


def test_tampered_cursor_that_is_not_a_date_is_404(api):
    response = api.get("/api/workflow-executions/", {"cursor": tampered_cursor("yesterday")})

    assert response.status_code == 404
