"""SQL statements per stored run (SPEC 11: at most 1 per step and 3 per workflow)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution

from .helpers import Calls, chain_workflow, rows, step_rows

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = 5


def _run_counted(name: str, transaction_id: str) -> CaptureQueriesContext:
    with CaptureQueriesContext(connection) as captured:
        res = workflow_engine.run(name, input=0, transaction_id=transaction_id)
    assert res.result == STEPS
    return captured


def _sql(captured: CaptureQueriesContext) -> str:
    return "\n".join(f"{i + 1}. {q['sql']}" for i, q in enumerate(captured.captured_queries))


CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


def _assert_at_most(captured: CaptureQueriesContext, limit: int) -> None:
    """Every statement CaptureQueriesContext sees counts, transaction control included
    (each is a round trip to the database)."""
    count = len(captured.captured_queries)
    control = sum(q["sql"].upper().startswith(CONTROL) for q in captured.captured_queries)
    assert count <= limit, (
        f"{count} SQL statements, {control} of them transaction control "
        f"(limit {limit}):\n{_sql(captured)}"
    )


def test_kept_run_in_step_durability_issues_at_most_one_statement_per_step_plus_three():
    calls = Calls()
    name, _ = chain_workflow(STEPS, calls, store=True, retention_time=3600)
    workflow_engine.run(name, input=0, transaction_id="warm-up")

    captured = _run_counted(name, "counted-step")

    _assert_at_most(captured, STEPS + 3)
    [row] = [r for r in rows(name) if r.transaction_id == "counted-step"]
    assert len(step_rows(row)) == STEPS


@override_settings(WORKFLOWS={"DURABILITY": "boundary"})
def test_kept_run_in_boundary_durability_issues_at_most_three_statements():
    calls = Calls()
    name, _ = chain_workflow(STEPS, calls, store=True, retention_time=3600)
    workflow_engine.run(name, input=0, transaction_id="warm-up")

    captured = _run_counted(name, "counted-boundary")

    _assert_at_most(captured, 3)
    [row] = [r for r in rows(name) if r.transaction_id == "counted-boundary"]
    assert row.state == "done"
    assert [s.status for s in step_rows(row)] == ["COMPLETED"] * STEPS


def test_not_kept_run_issues_at_most_one_statement_per_step_plus_three():
    calls = Calls()
    name, steps = chain_workflow(STEPS, calls, store=True)
    workflow_engine.run(name, input=0, transaction_id="warm-up")

    captured = _run_counted(name, "counted-gone")

    _assert_at_most(captured, STEPS + 3)
    assert rows(name) == []
    assert not StepExecution.objects.filter(step_id__in=steps).exists()


@override_settings(WORKFLOWS={"DURABILITY": "boundary"})
def test_not_kept_run_in_boundary_durability_issues_at_most_three_statements():
    calls = Calls()
    name, _ = chain_workflow(STEPS, calls, store=True)
    workflow_engine.run(name, input=0, transaction_id="warm-up")

    captured = _run_counted(name, "counted-gone-b")

    _assert_at_most(captured, 3)
    assert rows(name) == []


def test_not_stored_run_issues_no_statement():
    calls = Calls()
    name, _ = chain_workflow(STEPS, calls)

    captured = _run_counted(name, "counted-memory")

    assert captured.captured_queries == []


@pytest.mark.postgres
def test_handed_over_run_resumes_with_one_statement_plus_one_per_step_plus_one():
    """A worker's resume claims the run, reads it and reads its step rows in one
    statement, then writes one row per step and ends the run (here the immediate
    backend runs the worker's task in this process, after the two statements that
    start the run and hand it over)."""
    calls = Calls()
    background = {"async_": True, "background_execution": True}
    name, _ = chain_workflow(STEPS, calls, step_options=background, store=True, retention_time=3600)
    workflow_engine.run(name, input=0, transaction_id="warm-up")

    with CaptureQueriesContext(connection) as captured:
        workflow_engine.run(name, input=0, transaction_id="counted-bg")

    _assert_at_most(captured, 2 + 1 + STEPS + 1)
    [row] = [r for r in rows(name) if r.transaction_id == "counted-bg"]
    assert row.state == "done" and row.output_payload == STEPS
    assert len(step_rows(row)) == STEPS
