"""Kept and not-kept executions, re-runs, idempotency and the retention sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution

from .helpers import Calls, chain_workflow, rows, step_rows

pytestmark = pytest.mark.django_db(transaction=True)

FLOW_KEYS = {
    "state",
    "steps",
    "modelId",
    "options",
    "metadata",
    "startedAt",
    "definition",
    "timedOutAt",
    "cancelledAt",
    "transactionId",
    "runId",
    "hasAsyncSteps",
    "hasFailedSteps",
    "hasSkippedSteps",
    "hasWaitingSteps",
    "hasRevertedSteps",
    "hasSkippedOnFailureSteps",
}
STEP_KEYS = {
    "invoke",
    "compensate",
    "attempts",
    "failures",
    "lastAttempt",
    "startedAt",
    "definition",
    "depth",
    "next",
}


def test_kept_execution_row_has_final_state_output_and_camelcase_json():
    calls = Calls()
    name, steps = chain_workflow(3, calls, store=True, retention_time=3600)

    res = workflow_engine.run(name, input=10, transaction_id="kept-1")

    assert res.result == 13
    assert res.acknowledgement["has_finished"] is True
    [row] = rows(name)
    assert row.transaction_id == "kept-1"
    assert row.run_id == res.acknowledgement["run_id"]
    assert row.id.startswith("wf_exec_")
    assert row.state == "done"
    assert row.status == "COMPLETED"
    assert row.retention_time == 3600
    assert row.input_payload == 10
    assert row.output_payload == 13
    assert row.error == ""
    assert row.owner == ""
    assert row.lease_expires_at is None
    assert row.ended_at is not None and row.started_at is not None
    assert row.duration_ms is not None and row.duration_ms >= 0
    assert row.definition_hash

    execution = row.execution
    assert set(execution) >= FLOW_KEYS, FLOW_KEYS - set(execution)
    assert execution["state"] == "done"
    assert execution["transactionId"] == "kept-1"
    assert execution["runId"] == row.run_id
    assert execution["modelId"] == name
    assert execution["options"]["retention_time"] == 3600 or (
        execution["options"].get("retentionTime") == 3600
    )
    step_entries = {k: v for k, v in execution["steps"].items() if k != "_root"}
    assert len(step_entries) == 3
    for entry in step_entries.values():
        assert set(entry) >= STEP_KEYS, STEP_KEYS - set(entry)
        assert entry["invoke"] == {"state": "done", "status": "ok"}
        assert entry["attempts"] == 1
    assert execution["steps"]["_root"]["next"]

    context = row.context
    assert set(context) == {"data", "errors"}
    assert set(context["data"]) == {"payload", "invoke", "compensate"}
    assert context["data"]["payload"] == 10
    assert context["errors"] == []
    assert set(context["data"]["invoke"]) == set(steps)
    assert context["data"]["invoke"][steps[0]]["output"] == 11
    assert context["data"]["invoke"][steps[0]]["compensateInput"] == {"undo": steps[0]}
    assert context["data"]["compensate"] == {}

    log = step_rows(row)
    assert [(s.step_id, s.handler_type, s.status, s.attempt) for s in log] == [
        (step, "invoke", "COMPLETED", 1) for step in steps
    ]
    assert [s.output for s in log] == [11, 12, 13]


def test_not_kept_execution_leaves_no_rows():
    calls = Calls()
    name, steps = chain_workflow(3, calls, store=True)

    res = workflow_engine.run(name, input=1, transaction_id="gone-1")

    assert res.result == 4
    assert calls.total() == 3
    assert not WorkflowExecution.objects.filter(workflow_id=name).exists()
    assert not StepExecution.objects.filter(step_id__in=steps).exists()


def test_not_kept_failed_execution_leaves_no_rows():
    calls = Calls()
    name, steps = chain_workflow(3, calls, fail_last=True, store=True)

    res = workflow_engine.run(name, transaction_id="gone-2", throw_on_error=False)

    assert res.acknowledgement["has_failed"] is True
    assert calls.compensated(steps[0]) == 1
    assert not WorkflowExecution.objects.filter(workflow_id=name).exists()
    assert not StepExecution.objects.filter(step_id__in=steps).exists()


def test_two_runs_of_one_transaction_id_keep_two_rows():
    calls = Calls()
    name, _steps = chain_workflow(2, calls, store=True, retention_time=3600)

    first = workflow_engine.run(name, input=0, transaction_id="twice")
    second = workflow_engine.run(name, input=5, transaction_id="twice")

    assert calls.total() == 4
    kept = rows(name)
    assert len(kept) == 2
    assert {r.transaction_id for r in kept} == {"twice"}
    assert kept[0].run_id != kept[1].run_id
    assert {r.run_id for r in kept} == {
        first.acknowledgement["run_id"],
        second.acknowledgement["run_id"],
    }
    assert sorted(r.output_payload for r in kept) == [2, 7]
    assert all(r.state == "done" for r in kept)


def test_idempotent_workflow_returns_stored_result_without_running_steps():
    calls = Calls()
    name, _steps = chain_workflow(3, calls, idempotent=True, retention_time=60)

    first = workflow_engine.run(name, input=1, transaction_id="idem-1")
    assert first.result == 4
    assert calls.total() == 3
    started = rows(name)[0].execution["startedAt"]

    second = workflow_engine.run(name, input=100, transaction_id="idem-1")

    assert second.result == 4
    assert calls.total() == 3, calls.counter
    assert second.acknowledgement["run_id"] == first.acknowledgement["run_id"]
    assert second.transaction.started_at == started
    [row] = rows(name)
    assert row.state == "done"
    assert len(step_rows(row)) == 3


def _expire(workflow_id: str, seconds: int = 10) -> None:
    """Move the rows' last write ``seconds`` into the past, with their expiry."""
    past = timezone.now() - timedelta(seconds=seconds)
    for row in WorkflowExecution.objects.filter(workflow_id=workflow_id):
        expires = None if row.expires_at is None else past + timedelta(seconds=row.retention_time)
        WorkflowExecution.objects.filter(pk=row.pk).update(updated_at=past, expires_at=expires)


def test_clear_expired_executions_deletes_only_finished_expired_rows():
    calls = Calls()
    done, _ = chain_workflow(2, calls, store=True, retention_time=1, prefix="exp-done")
    failed, _ = chain_workflow(
        2, calls, fail_last=True, store=True, retention_time=1, prefix="exp-rev"
    )
    fresh, _ = chain_workflow(2, calls, store=True, retention_time=1000, prefix="exp-fresh")
    running, _ = chain_workflow(2, calls, store=True, retention_time=1, prefix="exp-run")

    workflow_engine.run(done, transaction_id="a")
    workflow_engine.run(failed, transaction_id="b", throw_on_error=False)
    workflow_engine.run(fresh, transaction_id="c")
    workflow_engine.run(running, transaction_id="d")
    assert rows(failed)[0].state == "reverted"
    # An execution still in progress (as a killed worker would leave it).
    WorkflowExecution.objects.filter(workflow_id=running).update(state="invoking", status="RUNNING")
    for name in (done, failed, fresh, running):
        _expire(name)
    assert StepExecution.objects.filter(execution__workflow_id=done).count() == 2

    deleted = workflow_engine.clear_expired_executions()

    assert deleted == 2
    assert rows(done) == []
    assert rows(failed) == []
    assert StepExecution.objects.filter(execution__workflow_id__in=[done, failed]).count() == 0
    assert [r.state for r in rows(fresh)] == ["done"]
    assert [r.state for r in rows(running)] == ["invoking"]
    assert StepExecution.objects.filter(execution__workflow_id=running).count() == 2
    # A second sweep finds nothing more.
    assert workflow_engine.clear_expired_executions() == 0


def test_clear_expired_executions_not_yet_expired_rows_stay():
    calls = Calls()
    name, _ = chain_workflow(1, calls, store=True, retention_time=60)
    workflow_engine.run(name, transaction_id="x")
    _expire(name, seconds=30)

    assert workflow_engine.clear_expired_executions() == 0
    assert len(rows(name)) == 1

    _expire(name, seconds=61)
    assert workflow_engine.clear_expired_executions() == 1
    assert rows(name) == []


def test_clear_expired_executions_in_small_batches():
    calls = Calls()
    name, _ = chain_workflow(1, calls, store=True, retention_time=1)
    keep, _ = chain_workflow(1, calls, store=True, retention_time=1000)
    for i in range(5):
        workflow_engine.run(name, transaction_id=f"batch-{i}")
    workflow_engine.run(keep, transaction_id="keep")
    _expire(name)
    _expire(keep)
    progress: list[int] = []

    deleted = workflow_engine.clear_expired_executions(batch_size=2, progress=progress.append)

    assert deleted == 5
    assert rows(name) == []
    assert len(rows(keep)) == 1
    assert progress and progress[-1] == 5


def test_idempotent_failed_workflow_gives_the_same_error_without_running_steps():
    calls = Calls()
    name, steps = chain_workflow(2, calls, fail_last=True, idempotent=True, retention_time=60)

    first = workflow_engine.run(name, input=1, transaction_id="idem-f", throw_on_error=False)
    assert first.acknowledgement["has_failed"] is True
    counts = dict(calls.counter)

    second = workflow_engine.run(name, input=1, transaction_id="idem-f", throw_on_error=False)

    assert dict(calls.counter) == counts
    assert second.acknowledgement["has_failed"] is True
    assert [e.error["message"] for e in second.errors] == [f"{steps[1]} exploded"]
    assert [r.state for r in rows(name)] == ["reverted"]


def _finished_row(transaction_id: str, expires_at, state: str = "done", **fields):
    values = {
        "workflow_id": "retention-rows",
        "transaction_id": transaction_id,
        "run_id": f"run-{transaction_id}",
        "state": state,
        "retention_time": 60,
        "expires_at": expires_at,
    }
    values.update(fields)
    row = WorkflowExecution.objects.create(**values)
    StepExecution.objects.create(execution=row, step_id="a", step_path="_root.a")
    return row


def test_finishing_sets_expires_at_from_the_retention():
    calls = Calls()
    name, _ = chain_workflow(1, calls, store=True, retention_time=3600)
    workflow_engine.run(name, transaction_id="expiry")
    [row] = rows(name)
    assert row.expires_at == row.updated_at + timedelta(seconds=3600)


def test_ties_larger_than_a_batch_do_not_stop_the_sweep():
    now = timezone.now()
    # More unexpired rows than a batch share one last write and one expiry...
    same = now - timedelta(seconds=30)
    for i in range(5):
        _finished_row(f"keep-{i}", now + timedelta(seconds=30), updated_at=same)
    # ...and more expired rows than a batch share one expiry.
    for i in range(5):
        _finished_row(f"old-{i}", now - timedelta(seconds=1), updated_at=same)
    progress: list[int] = []

    deleted = workflow_engine.clear_expired_executions(batch_size=2, progress=progress.append)

    assert deleted == 5
    assert progress == [2, 4, 5]
    left = WorkflowExecution.objects.filter(workflow_id="retention-rows")
    assert sorted(left.values_list("transaction_id", flat=True)) == [f"keep-{i}" for i in range(5)]
    assert StepExecution.objects.filter(execution__workflow_id="retention-rows").count() == 5


def test_sweep_is_a_few_statements_per_batch_and_reads_no_row_into_python():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    past = timezone.now() - timedelta(seconds=1)
    for i in range(5):
        _finished_row(f"old-{i}", past)

    with CaptureQueriesContext(connection) as captured:
        deleted = workflow_engine.clear_expired_executions(batch_size=2)

    assert deleted == 5
    control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")
    work = [q["sql"] for q in captured.captured_queries if not q["sql"].upper().startswith(control)]
    # Three batches (2, 2, 1): one statement each on PostgreSQL; elsewhere the batch's
    # last key, then the step rows and the executions.
    per_batch = 1 if connection.vendor == "postgresql" else 3
    assert len(work) == 3 * per_batch, "\n".join(work)
    assert not any('"execution"' in sql or '"context"' in sql for sql in work)
    assert StepExecution.objects.filter(execution__workflow_id="retention-rows").count() == 0


def test_running_and_unexpired_rows_are_never_deleted():
    past = timezone.now() - timedelta(days=1)
    # A run re-opened (or left by a killed worker) keeps no claim to expiry.
    _finished_row("running", past, state="compensating")
    _finished_row("invoking", past, state="invoking")
    _finished_row("fresh", timezone.now() + timedelta(days=1))
    _finished_row("no-retention", None, retention_time=None)

    assert workflow_engine.clear_expired_executions(batch_size=1) == 0
    assert WorkflowExecution.objects.filter(workflow_id="retention-rows").count() == 4
    assert StepExecution.objects.filter(execution__workflow_id="retention-rows").count() == 4


def test_migration_backfills_expires_at_from_updated_at_and_retention():
    from importlib import import_module

    from django.apps import apps
    from django.db import connection

    backfill = import_module("workflows_app.migrations.0003_expires_at").backfill_expires_at
    moment = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    kept = _finished_row("kept", None, updated_at=moment, retention_time=90)
    running = _finished_row("running", None, state="invoking", updated_at=moment)
    gone = _finished_row("no-retention", None, updated_at=moment, retention_time=None)

    with connection.schema_editor() as editor:
        backfill(apps, editor)

    kept.refresh_from_db()
    assert kept.expires_at == moment + timedelta(seconds=90)
    running.refresh_from_db()
    gone.refresh_from_db()
    assert running.expires_at is None and gone.expires_at is None
