"""The API root and the browsable API: HTML for logged-in staff, JSON for everyone else."""

from __future__ import annotations

import pytest

from workflows_app.models import WorkflowExecution

from .conftest import start, waiting_workflow

pytestmark = pytest.mark.django_db

HTML = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"}


def test_root_lists_every_endpoint_with_absolute_links(anon_client):
    response = anon_client.get("/api/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "workflows": "http://testserver/api/workflows/",
        "workflow-executions": "http://testserver/api/workflow-executions/",
        "schema": "http://testserver/api/schema/",
        "docs": "http://testserver/api/docs/",
    }


@pytest.mark.parametrize("path", ["/api/", "/api/workflows/", "/api/workflow-executions/"])
def test_browsable_api_renders_for_staff(staff_client, path):
    response = staff_client.get(path, **HTML)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Django REST framework" in page


def test_browsable_execution_list_has_the_filter_form(staff_client):
    page = staff_client.get("/api/workflow-executions/", **HTML).content.decode()

    assert "Filters" in page
    assert 'name="workflow_id"' in page


@pytest.mark.parametrize("path", ["/api/", "/api/workflows/", "/api/workflow-executions/"])
def test_browsers_of_anonymous_and_non_staff_users_get_json(anon_client, user_client, path):
    for client in (anon_client, user_client):
        response = client.get(path, **HTML)
        assert response["Content-Type"] == "application/json"
        assert response.status_code in (200, 401, 403)


def test_browsable_detail_pages_render_for_staff(staff_client):
    name = waiting_workflow()
    start(name, 1)
    pk = WorkflowExecution.objects.get(workflow_id=name).pk
    for path in (
        f"/api/workflows/{name}/",
        f"/api/workflow-executions/{pk}/",
        f"/api/workflows/{name}/run/",
        f"/api/workflow-executions/{pk}/cancel/",
    ):
        response = staff_client.get(path, **HTML)
        assert response.status_code in (200, 405), path
        assert response["Content-Type"].startswith("text/html"), path
