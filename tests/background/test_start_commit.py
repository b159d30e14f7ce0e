"""A run handed over before its first step waits for the disk once: its start's
INSERT commits without waiting, and the hand-over's synchronous commit (which
PostgreSQL flushes in WAL order, the INSERT included) makes both durable before
``run()`` returns. A run whose first step runs here keeps a synchronous start."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from workflows_app.engine import workflow_engine
from workflows_app.sdk import StepResponse, WorkflowResponse, create_step, create_workflow

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ASYNC = "SET LOCAL SYNCHRONOUS_COMMIT TO OFF"
INSERT = 'INSERT INTO "WORKFLOW_EXECUTION"'
UPDATE = 'UPDATE "WORKFLOW_EXECUTION"'


def _workflow(name: str, **options) -> str:
    step = create_step(f"{name}-step", lambda value, ctx: StepResponse(value + 1), **options)
    create_workflow(name, lambda input: WorkflowResponse(step(input)), store=True)
    return name


def _writes(captured: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"].upper()
        for q in captured.captured_queries
        if q["sql"].upper().lstrip().startswith(("INSERT", "UPDATE", "SET", "COMMIT"))
        or ASYNC in q["sql"].upper()
    ]


def test_a_run_handed_over_at_once_commits_its_start_with_the_hand_over(django_q_backend):
    from django_q.models import OrmQ

    name = _workflow("start-commit-bg", async_=True, background_execution=True)
    with CaptureQueriesContext(connection) as captured:
        result = workflow_engine.run(name, input=1, transaction_id="handed-over")
    assert str(result.transaction.state) == "invoking"
    writes = _writes(captured)
    [insert] = [sql for sql in writes if INSERT in sql]
    assert insert.startswith(ASYNC), writes
    # The hand-over (the row's UPDATE and the queued task) commits synchronously.
    handover = [sql for sql in writes if UPDATE in sql]
    assert handover and not any(sql.startswith(ASYNC) for sql in handover), writes
    assert "COMMIT" in writes
    assert OrmQ.objects.count() == 1


def test_a_worker_claims_the_run_it_resumes_without_waiting_for_the_disk(django_q_backend):
    name = _workflow("start-commit-claim", async_=True, background_execution=True)
    workflow_engine.run(name, input=1, transaction_id="claimed")
    with CaptureQueriesContext(connection) as captured:
        tx = workflow_engine.resume(name, "claimed")
    assert tx is not None and str(tx.state) == "done"
    [claim] = [
        q["sql"].upper()
        for q in captured.captured_queries
        if UPDATE in q["sql"].upper()
        and '"LEASE_EXPIRES_AT" = ' in q["sql"].upper()
        and '"VERSION" + 1' in q["sql"].upper()
    ]
    assert claim.startswith(ASYNC)


def test_a_run_whose_first_step_runs_here_waits_for_its_start(django_q_backend):
    name = _workflow("start-commit-inline")
    with CaptureQueriesContext(connection) as captured:
        result = workflow_engine.run(name, input=1, transaction_id="inline")
    assert result.result == 2
    [insert] = [q["sql"].upper() for q in captured.captured_queries if INSERT in q["sql"].upper()]
    assert not insert.startswith(ASYNC)
