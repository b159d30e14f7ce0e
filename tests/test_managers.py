"""The execution queryset: the queries the engine, the admin and the API share."""

from datetime import timedelta

import pytest
from django.utils import timezone

from workflows_app.models import EXECUTION_ID_PREFIX, StepExecution, WorkflowExecution

pytestmark = pytest.mark.django_db


def make(transaction_id, state="invoking", **fields):
    values = {
        "workflow_id": fields.pop("workflow_id", "wf"),
        "transaction_id": transaction_id,
        "run_id": f"run-{transaction_id}",
        "state": state,
    }
    values.update(fields)
    return WorkflowExecution.objects.create(**values)


def test_unfinished_and_finished_split_the_table():
    running = make("a")
    done = make("b", state="done")
    make("c", state="reverted")
    assert list(WorkflowExecution.objects.unfinished()) == [running]
    assert done in WorkflowExecution.objects.finished()
    assert WorkflowExecution.objects.finished().count() == 2


def test_lease_expired_and_held_on_host():
    now = timezone.now()
    late = make("late", lease_expires_at=now - timedelta(seconds=1))
    make("fresh", lease_expires_at=now + timedelta(seconds=60), owner="host-a:1:x")
    make("done", state="done", lease_expires_at=now - timedelta(seconds=1))
    assert list(WorkflowExecution.objects.lease_expired(now)) == [late]
    held = WorkflowExecution.objects.held_on_host("host-a", now)
    assert [row.transaction_id for row in held] == ["fresh"]
    assert not WorkflowExecution.objects.held_on_host("host-b", now).exists()


def test_search_is_a_substring_match_and_matching_is_exact():
    order = make("order-42", workflow_id="checkout")
    make("refund-7", workflow_id="refunds")
    assert list(WorkflowExecution.objects.search("ORDER-4")) == [order]
    assert list(WorkflowExecution.objects.search("")) == list(WorkflowExecution.objects.all())
    assert list(WorkflowExecution.objects.matching("order-42")) == [order]
    assert not WorkflowExecution.objects.matching("order-4").exists()
    bare = order.pk.removeprefix(EXECUTION_ID_PREFIX)
    assert list(WorkflowExecution.objects.matching(bare, EXECUTION_ID_PREFIX)) == [order]
    assert list(WorkflowExecution.objects.matching("checkout")) == [order]


def test_of_run_finds_the_row_of_an_acknowledgement():
    first = make("order-1", run_id="r1", state="done")
    make("order-1", run_id="r2")
    ack = {"workflow_id": "wf", "transaction_id": "order-1", "run_id": "r1", "state": "done"}
    assert list(WorkflowExecution.objects.of_run(ack)) == [first]
    assert not WorkflowExecution.objects.of_run({**ack, "run_id": "r3"}).exists()
    assert not WorkflowExecution.objects.of_run({}).exists()


def test_newest_of_lists_a_workflows_runs_newest_first():
    older, newer = make("a"), make("b")
    make("c", workflow_id="other")
    assert list(WorkflowExecution.objects.newest_of("wf")) == [newer, older]


def test_step_log_order_puts_attempts_not_started_last_on_every_database():
    execution = make("log")
    now = timezone.now()

    def attempt(step_id, started_at):
        return StepExecution.objects.create(
            execution=execution,
            step_id=step_id,
            step_path=f"_root.{step_id}",
            started_at=started_at,
        )

    pending = attempt("pending", None)
    second = attempt("second", now)
    first = attempt("first", now - timedelta(seconds=1))
    tie = attempt("tie", now)
    ordered = list(execution.step_executions.in_log_order())
    assert ordered == [first, second, tie, pending]
    assert [entry["stepId"] for entry in execution.steps_log()] == [a.step_id for a in ordered]


def test_list_count_is_exact_then_capped():
    for i in range(3):
        make(f"t{i}")
    rows = WorkflowExecution.objects.filter(workflow_id="wf")
    assert rows.list_count(cap=5, estimate_from=1).count == 3
    capped = rows.list_count(cap=2, estimate_from=1)
    assert (capped.count, capped.capped, capped.estimated) == (2, True, False)


def test_light_leaves_the_run_data_in_the_database():
    make("a", execution={"steps": {}}, context={"data": 1})
    row = WorkflowExecution.objects.light().get()
    assert {"execution", "context", "input_payload"} <= row.get_deferred_fields()


def test_count_up_to_stops_at_the_cap():
    for i in range(5):
        make(f"t{i}")
    assert WorkflowExecution.objects.count_up_to(3) == 4
    assert WorkflowExecution.objects.count_up_to(10) == 5


def test_with_progress_counts_done_steps_in_the_database(is_postgres):
    steps = {"_root": {}, "_root.a": {"invoke": {"state": "done"}}, "_root.a.b": {"invoke": {}}}
    make("a", execution={"steps": steps})
    row = WorkflowExecution.objects.with_progress().get()
    assert (row.progress_done, row.progress_total) == (1, 2)


def test_datetimes_probes_buckets_like_djangos_own():
    now = timezone.now()
    for days in (0, 1, 40, 400):
        make(f"d{days}", created_at=now - timedelta(days=days))
    for kind in ("year", "month", "day"):
        ours = list(WorkflowExecution.objects.datetimes("created_at", kind))
        stock = list(WorkflowExecution.objects.all()._chain().dates("created_at", kind))
        assert [moment.date() for moment in ours] == stock
