"""Canary: secrets of a run never appear anywhere the run is stored or shown.

One value of each kind of secret: a ``REDACT_KEYS`` input key (``password``), a
``sensitive`` step output passed on to the next step (``otp``), and both repeated
inside an exception message and in values under ordinary keys. The steps must still
receive the real values.
"""

from __future__ import annotations

import json
from io import StringIO
from uuid import uuid4

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.forms.models import model_to_dict
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.sdk import create_step, create_workflow

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "canary-pw-7f3a9c41"
OTP = "canary-otp-5b8e2160"
SECRETS = (PASSWORD, OTP)
ADMIN = "/admin/workflows_app/workflowexecution/"


def canary_workflow(*, store: bool = True) -> tuple[str, list]:
    """``issue`` returns the OTP (sensitive) and repeats the password under ``ref``;
    ``send`` gets them and, when asked to, fails with both in its message."""
    name = f"canary-{uuid4().hex[:10]}"
    received: list = []

    def issue(data, ctx):
        received.append(("issue", data))
        return {"otp": OTP, "ref": data["password"], "fail": data["fail"]}

    def send(issued, ctx):
        received.append(("send", issued))
        if issued["fail"]:
            raise ValueError(f"gateway refused {issued['otp']} for {issued['ref']}")
        return {"sent": True, "echo": issued["otp"], "ref": issued["ref"]}

    first = create_step(f"{name}-issue", issue, lambda data, ctx: None, sensitive=["output.otp"])
    second = create_step(f"{name}-send", send)
    options = {"store": True, "retention_time": 3600} if store else {}
    create_workflow(name, lambda data: second(first(data)), **options)
    return name, received


def secret_input(fail: bool) -> dict:
    return {"user": "ann", "password": PASSWORD, "fail": fail}


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} shown in {where}"


def stored_text(name: str) -> str:
    rows = [model_to_dict(row) for row in WorkflowExecution.objects.filter(workflow_id=name)]
    steps = [
        model_to_dict(step) for step in StepExecution.objects.filter(execution__workflow_id=name)
    ]
    assert rows and steps
    return json.dumps([rows, steps], default=str, ensure_ascii=False)


@pytest.fixture
def superuser():
    return get_user_model().objects.create_superuser("canary-admin", password="pw")


@pytest.fixture
def api(superuser) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=superuser).key}")
    return client


def test_the_secrets_of_a_run_never_leave_it(api, client, superuser):
    name, received = canary_workflow()
    events: list[dict] = []
    workflow_engine.subscribe(name, events.append, subscriber_id=f"canary-{name}")

    url = f"/api/workflows/{name}/run/"
    finished = api.post(url, {"input": secret_input(False)}, format="json")
    failed = api.post(url, {"input": secret_input(True)}, format="json")

    # The steps got the real values.
    assert received[0] == ("issue", secret_input(False))
    assert received[1] == ("send", {"otp": OTP, "ref": PASSWORD, "fail": False})
    assert received[3] == ("send", {"otp": OTP, "ref": PASSWORD, "fail": True})
    assert finished.status_code == 201 and failed.status_code == 201
    assert finished.json()["result"]["sent"] is True
    assert "[REDACTED]" in failed.json()["errors"][0]["error"]["message"]
    for response, where in ((finished, "run response"), (failed, "failed run response")):
        assert_clean(response.content.decode(), where)

    # Every stored column.
    assert_clean(stored_text(name), "the stored rows")
    executions = list(WorkflowExecution.objects.filter(workflow_id=name).order_by("created_at"))
    assert [e.state for e in executions] == ["done", "reverted"]
    assert "[REDACTED]" in executions[1].error_stack

    # Events sent to subscribers (the SSE stream's source) and the SSE stream itself.
    assert any(e["event_type"] == "on_step_success" for e in events)
    assert_clean(json.dumps(events), "engine events")
    for execution in executions:
        stream = api.get(f"/api/workflow-executions/{execution.pk}/events/")
        assert_clean(b"".join(stream.streaming_content).decode(), "the SSE stream")

    # API reads and re-runs.
    assert_clean(api.get("/api/workflow-executions/").content.decode(), "the API list")
    for execution in executions:
        detail = api.get(f"/api/workflow-executions/{execution.pk}/")
        assert detail.status_code == 200
        assert_clean(detail.content.decode(), "the API detail")
    rerun = api.post(f"/api/workflow-executions/{executions[0].pk}/rerun/")
    assert rerun.status_code == 201
    assert_clean(rerun.content.decode(), "the API re-run")

    # Admin pages, Run again and the messages cookie.
    client.force_login(superuser)
    assert_clean(client.get(ADMIN).content.decode(), "the admin list")
    for execution in executions:
        page = client.get(f"{ADMIN}{execution.pk}/change/")
        assert page.status_code == 200
        assert_clean(page.content.decode(), "the admin detail page")
        again = client.post(f"{ADMIN}{execution.pk}/rerun/", follow=True)
        assert again.status_code == 200
        assert_clean(again.content.decode(), "the page after Run again")
        assert_clean(str(client.cookies.get("messages", "")), "the messages cookie")

    # The command line.
    for execution in WorkflowExecution.objects.filter(workflow_id=name):
        out = StringIO()
        call_command("workflows", "show", execution.pk, stdout=out)
        assert_clean(out.getvalue(), "workflows show")
    for fail in (False, True):
        out = StringIO()
        try:
            call_command(
                "workflows", "run", name, "--input", json.dumps(secret_input(fail)), stdout=out
            )
        except CommandError as exc:
            assert fail
            assert_clean(str(exc), "workflows run's error")
        assert_clean(out.getvalue(), "workflows run")
    assert_clean(stored_text(name), "the stored rows after the re-runs")


@pytest.mark.parametrize("fail", [False, True])
def test_admin_run_of_an_unstored_workflow_shows_no_secret(client, superuser, fail):
    name, received = canary_workflow(store=False)
    client.force_login(superuser)

    response = client.post(
        "/admin/workflows_app/workflowdefinitionentry/run/",
        {"workflow": name, "input": json.dumps(secret_input(fail))},
    )
    cookie = str(response.cookies.get("messages", ""))
    page = client.get(response["Location"]).content.decode()

    assert received[0] == ("issue", secret_input(fail))
    assert "[REDACTED]" in page
    assert_clean(cookie, "the messages cookie")
    assert_clean(page, "the definitions page")
