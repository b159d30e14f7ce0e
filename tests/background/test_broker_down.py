"""The Redis broker is down when a run is handed over: ``run()`` returns the stored
run instead of raising, and the recovery sweep finishes it later (SQLite and
PostgreSQL; no worker needed)."""

from __future__ import annotations

import datetime
import logging
import socket
from typing import Any

import pytest
from django.utils import timezone

from tests.support import uname
from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import StepResponse, create_step, create_workflow

pytestmark = pytest.mark.django_db(transaction=True)


def closed_port() -> int:
    """A local TCP port nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def dead_redis(settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    from django_q.conf import Conf

    url = f"redis://127.0.0.1:{closed_port()}/0"
    conf = {key: value for key, value in settings.Q_CLUSTER.items() if key != "orm"}
    settings.Q_CLUSTER = {**conf, "redis": url}
    # get_broker() reads django-q2's Conf, set once at import.
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "BROKER_CLASS", None)
    monkeypatch.setattr(Conf, "REDIS", url)
    settings.WORKFLOWS = {**settings.WORKFLOWS, "BACKGROUND": "django_q"}
    return url


def test_run_returns_the_committed_run_when_the_broker_is_down(dead_redis, caplog):
    from workflows_app.background import uses_redis

    assert uses_redis()
    name = uname("broker-down")
    calls: list[str] = []

    def first(value, ctx):
        calls.append("first")
        return StepResponse(value + 1)

    def later(value, ctx):
        calls.append("later")
        return StepResponse(value * 10)

    step1 = create_step(f"{name}-first", first)
    step2 = create_step(f"{name}-later", later, async_=True, background_execution=True)
    create_workflow(name, lambda n: step2(step1(n)), store=True, retention_time=3600)

    with caplog.at_level(logging.ERROR, logger="workflows_app"):
        result = workflow_engine.run(name, input=1, transaction_id="committed")

    assert result.acknowledgement["state"] == "invoking"
    assert "The broker did not take" in caplog.text
    row = WorkflowExecution.objects.get(workflow_id=name)
    assert row.state == "invoking" and row.owner == ""
    assert row.lease_expires_at is not None
    assert calls == ["first"]

    # Recovery takes the run once its hand-over deadline has passed.
    assert workflow_engine.recover(now=timezone.now()) == 0
    later_now = row.lease_expires_at + datetime.timedelta(seconds=1)
    assert workflow_engine.recover(now=later_now) == 1
    row.refresh_from_db()
    assert row.state == "done"
    assert row.output_payload == 20
    assert calls == ["first", "later"]
    assert WorkflowExecution.objects.filter(workflow_id=name).count() == 1
