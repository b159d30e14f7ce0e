"""Poison runs: a run whose recovery fails with the same error N times in a row is
marked failed with that error (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from workflows_app.conf import workflows_settings
from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import StepResponse, create_step, create_workflow

from .helpers import uname

pytestmark = pytest.mark.django_db(transaction=True)


def _waiting_run(calls: list[str]) -> WorkflowExecution:
    """A stored run that waits for an answer, then loses its executor."""
    name = uname("poison")

    def first(value, ctx):
        calls.append("first")
        return StepResponse(value + 1)

    def answer(value, ctx):
        calls.append("answer")

    one = create_step(f"{name}-first", first)
    two = create_step(f"{name}-answer", answer, async_=True)
    create_workflow(name, lambda n: two(one(n)), store=True, retention_time=600)
    workflow_engine.run(name, input=1, transaction_id="poisoned")
    row = WorkflowExecution.objects.get(workflow_id=name)
    assert row.state == "invoking"
    return row


def _corrupt(row: WorkflowExecution, flow) -> None:
    """A stored flow the current code cannot rebuild: every resumption fails alike."""
    past = timezone.now() - timedelta(seconds=5)
    WorkflowExecution.objects.filter(pk=row.pk).update(execution=flow, lease_expires_at=past)


def _sweep() -> int:
    return workflow_engine.recover(now=timezone.now() + timedelta(seconds=1))


def test_default_is_five_recoveries():
    assert workflows_settings.MAX_RECOVERY_FAILURES == 5


@override_settings(WORKFLOWS={"BACKGROUND": "immediate", "MAX_RECOVERY_FAILURES": 3})
def test_same_error_on_consecutive_recoveries_marks_the_run_failed():
    calls: list[str] = []
    row = _waiting_run(calls)
    _corrupt(row, ["not", "a", "flow"])

    for attempt in (1, 2):
        assert _sweep() == 0
        row.refresh_from_db()
        assert row.state == "invoking"
        assert row.recovery_failures == attempt
        assert row.recovery_error.startswith("AttributeError: ")
        # The failed recovery let go of the run: the next sweep may take it.
        assert row.owner == ""

    assert _sweep() == 0
    row.refresh_from_db()
    assert row.state == "failed"
    assert row.status == "FAILED"
    assert "has no attribute" in row.error
    assert "AttributeError" in row.error_stack
    assert row.recovery_failures == 3
    assert row.ended_at is not None
    assert row.expires_at == row.ended_at + timedelta(seconds=600)
    # A failed run is not recovered again.
    assert _sweep() == 0
    assert calls == ["first", "answer"]


@override_settings(WORKFLOWS={"BACKGROUND": "immediate", "MAX_RECOVERY_FAILURES": 2})
def test_another_error_starts_the_count_again_and_a_recovery_clears_it():
    calls: list[str] = []
    row = _waiting_run(calls)
    flow = row.execution
    _corrupt(row, ["not", "a", "flow"])
    assert _sweep() == 0
    _corrupt(row, 42)
    assert _sweep() == 0
    row.refresh_from_db()
    assert row.state == "invoking"
    assert row.recovery_failures == 1
    assert row.recovery_error.startswith("AttributeError: 'int'")

    # The stored flow is repaired: the next recovery goes through and the count resets.
    _corrupt(row, flow)
    assert _sweep() == 1
    row.refresh_from_db()
    assert row.state == "invoking"
    assert (row.recovery_failures, row.recovery_error) == (0, "")
