"""Who may use the API: staff by default, per WORKFLOWS["API_PERMISSION_CLASSES"]."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import override_settings
from rest_framework.test import APIClient

from workflows_app.conf import DEFAULTS
from workflows_app.models import WorkflowExecution

from .conftest import start, waiting_workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def waiting_execution() -> tuple[str, str]:
    name = waiting_workflow()
    start(name, 1, "perm-1")
    return name, WorkflowExecution.objects.get(workflow_id=name).pk


def routes(name: str, pk: str) -> list[tuple[str, str, dict | None]]:
    step = {"transaction_id": "perm-1", "step_id": f"{name}-approve"}
    return [
        ("get", "/api/workflows/", None),
        ("get", f"/api/workflows/{name}/", None),
        ("post", f"/api/workflows/{name}/run/", {}),
        ("post", f"/api/workflows/{name}/steps/success/", step),
        ("post", f"/api/workflows/{name}/steps/failure/", step),
        ("get", "/api/workflow-executions/", None),
        ("get", f"/api/workflow-executions/{pk}/", None),
        ("get", f"/api/workflow-executions/{pk}/events/", None),
        ("post", f"/api/workflow-executions/{pk}/cancel/", None),
        ("post", f"/api/workflow-executions/{pk}/retry/", {}),
        ("post", f"/api/workflow-executions/{pk}/rerun/", None),
    ]


def call(client: APIClient, method: str, url: str, data):
    if method == "get":
        return client.get(url)
    return client.post(url, data, format="json")


def test_anonymous_gets_401_and_no_data(anon_client, waiting_execution):
    name, pk = waiting_execution

    for method, url, data in routes(name, pk):
        response = call(anon_client, method, url, data)
        assert response.status_code == 401, url
        assert response["WWW-Authenticate"] == "Token"
        assert set(response.json()) == {"type", "message", "code"}
        assert response.json()["type"] == "unauthorized"
        assert name not in response.content.decode()

    assert WorkflowExecution.objects.get(pk=pk).state == "invoking"
    assert WorkflowExecution.objects.filter(workflow_id=name).count() == 1


def test_logged_in_non_staff_gets_403_and_no_data(user_client, waiting_execution):
    name, pk = waiting_execution

    for method, url, data in routes(name, pk):
        response = call(user_client, method, url, data)
        assert response.status_code == 403, url
        assert response.json()["type"] == "not_allowed"
        assert name not in response.content.decode()

    assert WorkflowExecution.objects.get(pk=pk).state == "invoking"


def test_bad_token_is_401(anon_client):
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = anon_client.get("/api/workflows/")

    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_staff_with_a_token_is_allowed(staff_client, waiting_execution):
    _, pk = waiting_execution

    assert staff_client.get("/api/workflows/").status_code == 200
    assert staff_client.get(f"/api/workflow-executions/{pk}/").status_code == 200


def test_staff_with_a_session_is_allowed_and_needs_csrf_for_writes(staff_user, waiting_execution):
    _, pk = waiting_execution
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff_user)

    read = client.get("/api/workflow-executions/")
    write = client.post(f"/api/workflow-executions/{pk}/cancel/")

    assert read.status_code == 200
    assert write.status_code == 403
    assert "CSRF" in write.json()["message"]


def test_host_rest_framework_defaults_do_not_apply(staff_client, user_client, waiting_execution):
    loose = {
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
        "PAGE_SIZE": 1,
        "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    }
    with override_settings(REST_FRAMEWORK=loose):
        denied = user_client.get("/api/workflow-executions/")
        listed = staff_client.get("/api/workflow-executions/")

    assert denied.status_code == 403
    assert listed.status_code == 200
    assert "next" in listed.json() and "count" not in listed.json()


@override_settings(
    WORKFLOWS={
        **DEFAULTS,
        "API_PERMISSION_CLASSES": ["workflows_app.api.permissions.WorkflowsModelPermissions"],
    }
)
def test_model_permissions_alternative(plain_user, waiting_execution):
    _, pk = waiting_execution
    client = APIClient()
    client.force_login(plain_user)

    assert client.get("/api/workflow-executions/").status_code == 403

    plain_user.user_permissions.add(Permission.objects.get(codename="view_workflowexecution"))
    plain_user = type(plain_user).objects.get(pk=plain_user.pk)
    client.force_login(plain_user)
    assert client.get("/api/workflow-executions/").status_code == 200
    assert client.post(f"/api/workflow-executions/{pk}/cancel/").status_code == 403

    plain_user.user_permissions.add(Permission.objects.get(codename="cancel_workflowexecution"))
    plain_user = type(plain_user).objects.get(pk=plain_user.pk)
    client.force_login(plain_user)
    assert client.post(f"/api/workflow-executions/{pk}/cancel/").status_code == 200
