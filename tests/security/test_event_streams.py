"""Event streams are capped per user, and a closed stream frees its slot."""

from __future__ import annotations

from uuid import uuid4

import pytest
from django.contrib.auth import get_user_model
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from workflows_app.api.events import stream_slots
from workflows_app.conf import DEFAULTS
from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import create_step, create_workflow

pytestmark = pytest.mark.django_db


def close(response) -> None:
    """What the server does when a client goes away: close the response (without the
    end-of-request signal closing the test's database connection, as the test client
    does)."""
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def api_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def waiting_pk() -> str:
    name = f"sse-{uuid4().hex[:10]}"
    approve = create_step(f"{name}-approve", lambda i, c: None, async_=True)
    create_workflow(name, lambda n: approve(n), retention_time=3600)
    workflow_engine.run(name, input=1, throw_on_error=False)
    return WorkflowExecution.objects.get(workflow_id=name).pk


@override_settings(WORKFLOWS={**DEFAULTS, "API_EVENT_STREAMS_PER_USER": 2})
def test_a_user_may_hold_only_the_configured_number_of_streams(waiting_pk):
    model = get_user_model()
    ann = model.objects.create_superuser(f"ann-{uuid4().hex[:6]}", password="pw")
    bob = model.objects.create_superuser(f"bob-{uuid4().hex[:6]}", password="pw")
    url = f"/api/workflow-executions/{waiting_pk}/events/?timeout=1"
    open_streams = []
    try:
        for _ in range(2):
            response = api_for(ann).get(url)
            assert response.status_code == 200
            open_streams.append(response)
        refused = api_for(ann).get(url)
        other = api_for(bob).get(url)
        open_streams.append(other)

        assert refused.status_code == 429
        assert refused.json()["type"] == "throttled"
        assert other.status_code == 200
        assert stream_slots.count(ann.pk) == 2

        close(open_streams.pop(0))  # a client that goes away frees its slot
        assert stream_slots.count(ann.pk) == 1
        again = api_for(ann).get(url)
        assert again.status_code == 200
        body = b"".join(again.streaming_content)  # runs to its 1 s timeout, then frees
        assert b"stream_timeout" in body
        assert stream_slots.count(ann.pk) == 1
    finally:
        for response in open_streams:
            close(response)
    assert stream_slots.count(ann.pk) == 0
    assert stream_slots.count(bob.pk) == 0
