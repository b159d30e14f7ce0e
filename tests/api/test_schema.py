"""The OpenAPI schema (drf-spectacular) and the Swagger UI served from local files."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command

pytestmark = pytest.mark.django_db

ROUTES = {
    "/api/workflows/": {"get"},
    "/api/workflows/{workflow_id}/": {"get"},
    "/api/workflows/{workflow_id}/run/": {"post"},
    "/api/workflows/{workflow_id}/steps/success/": {"post"},
    "/api/workflows/{workflow_id}/steps/failure/": {"post"},
    "/api/workflow-executions/": {"get"},
    "/api/workflow-executions/{id}/": {"get"},
    "/api/workflow-executions/{id}/cancel/": {"post"},
    "/api/workflow-executions/{id}/retry/": {"post"},
    "/api/workflow-executions/{id}/rerun/": {"post"},
    "/api/workflow-executions/{id}/events/": {"get"},
}


@pytest.fixture
def schema(anon_client) -> dict:
    response = anon_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_schema_has_every_route(schema):
    paths = {path: set(ops) - {"parameters"} for path, ops in schema["paths"].items()}
    assert {p: ops for p, ops in paths.items() if p.startswith("/api/w")} == ROUTES


def test_schema_documents_run_statuses_and_errors(schema):
    run = schema["paths"]["/api/workflows/{workflow_id}/run/"]["post"]
    assert {"201", "202", "400", "401", "403", "404", "409"} <= set(run["responses"])
    assert run["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "RunRequest"
    )
    error = schema["components"]["schemas"]["Error"]
    assert {"type", "message"} <= set(error["required"])


def test_schema_documents_filters_and_cursor(schema):
    listing = schema["paths"]["/api/workflow-executions/"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {
        "workflow_id",
        "transaction_id",
        "state",
        "created_after",
        "created_before",
        "q",
        "cursor",
        "page_size",
    } <= names
    state = next(p for p in listing["parameters"] if p["name"] == "state")
    assert state["schema"]["type"] == "array"
    assert "offset" not in names and "limit" not in names


def test_schema_security_is_token_and_session(schema):
    schemes = schema["components"]["securitySchemes"]
    assert set(schemes) == {"tokenAuth", "cookieAuth"}


def test_schema_generates_without_warnings(tmp_path):
    # --fail-on-warn turns any drf-spectacular warning or error into a failure.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))
    assert (tmp_path / "s.yml").read_text().startswith("openapi: 3")


def test_swagger_ui_uses_local_sidecar_files(anon_client):
    response = anon_client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
    assert "/api/schema/" in html
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css")
