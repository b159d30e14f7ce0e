"""The OpenAPI schema (drf-spectacular) and the Swagger UI served from local files."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import override_settings
from django.urls import resolve
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.validation import validate_schema
from rest_framework.request import Request

from workflows_app.api.schema import build_schema

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


def test_schema_generates_valid_without_warnings(rf):
    # The app's own generator, as schema/ runs it: valid OpenAPI, no drf-spectacular
    # warning or error (the project sets no REST_FRAMEWORK nor SPECTACULAR_SETTINGS).
    request = rf.get("/api/schema/")
    request.resolver_match = resolve("/api/schema/")
    request = Request(request)
    GENERATOR_STATS.reset()
    schema = build_schema(request)
    validate_schema(schema)
    assert not GENERATOR_STATS
    assert schema["info"]["title"] == "workflows_app API"
    assert set(schema["paths"]) == set(ROUTES)


def test_project_sets_no_rest_framework_settings():
    assert not hasattr(settings, "REST_FRAMEWORK")
    assert not hasattr(settings, "SPECTACULAR_SETTINGS")
    assert "drf_spectacular" not in settings.INSTALLED_APPS
    assert "django_filters" not in settings.INSTALLED_APPS


def test_swagger_ui_falls_back_to_a_cdn_without_the_sidecar(anon_client):
    apps_without_sidecar = [a for a in settings.INSTALLED_APPS if a != "drf_spectacular_sidecar"]
    with override_settings(INSTALLED_APPS=apps_without_sidecar):
        response = anon_client.get("/api/docs/")
    assert response.status_code == 200
    assert "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js" in (
        response.content.decode()
    )


def test_swagger_ui_uses_local_sidecar_files(anon_client):
    response = anon_client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "jsdelivr" not in html.lower()
    assert "/api/schema/" in html
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css")


@override_settings(ROOT_URLCONF="tests.api.urls_prefixed")
def test_schema_root_and_docs_follow_the_hosts_prefix(anon_client):
    schema = anon_client.get("/ops/workflows-api/schema/", {"format": "json"}).json()
    # Only the app's routes, under the host's prefix; the host's own URLs stay out.
    assert set(schema["paths"]) == {
        path.replace("/api/", "/ops/workflows-api/", 1) for path in ROUTES
    }
    root = anon_client.get("/ops/workflows-api/").json()
    assert root["schema"] == "http://testserver/ops/workflows-api/schema/"
    docs = anon_client.get("/ops/workflows-api/docs/").content.decode()
    assert "/ops/workflows-api/schema/?format=json" in docs
