"""Models: migrations in sync, ids, the database constraints and the step-log shape."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from ulid import ULID

from workflows_app.models import (
    StepExecution,
    WorkflowDefinitionEntry,
    WorkflowExecution,
    new_execution_id,
)
from workflows_app.status import (
    FINISHED_STATES,
    UNFINISHED_STATES,
    ExecutionStatus,
    HandlerType,
    StepLogStatus,
    TransactionState,
)

pytestmark = pytest.mark.django_db


def make_execution(**fields):
    values = {"workflow_id": "wf", "transaction_id": "trx-1", "run_id": "run-1"}
    values.update(fields)
    return WorkflowExecution.objects.create(**values)


def make_step(execution, **fields):
    values = {"step_id": "a", "step_path": "_root.a", "step_name": "a"}
    values.update(fields)
    return StepExecution.objects.create(execution=execution, **values)


def test_migrations_are_in_sync_with_the_models():
    call_command("makemigrations", "workflows_app", "--check", "--dry-run", verbosity=0)


def test_state_sets_partition_the_transaction_states():
    assert set(FINISHED_STATES) | set(UNFINISHED_STATES) == set(TransactionState.values)
    assert not set(FINISHED_STATES) & set(UNFINISHED_STATES)
    assert set(FINISHED_STATES) == {"done", "failed", "reverted"}


def test_choice_values():
    assert TransactionState.WAITING_TO_COMPENSATE == "waiting_to_compensate"
    assert TransactionState.NOT_STARTED.label == "Not started"
    assert ExecutionStatus.values == ["RUNNING", "COMPLETED", "FAILED", "TIMED_OUT", "CANCELED"]
    assert set(StepLogStatus.values) == set(ExecutionStatus.values) | {"SKIPPED", "WAITING"}
    assert HandlerType.values == ["invoke", "compensate"]


def test_execution_id_is_prefixed_ulid():
    value = new_execution_id()
    assert value.startswith("wf_exec_")
    ULID.from_str(value.removeprefix("wf_exec_"))
    assert len(value) <= WorkflowExecution._meta.get_field("id").max_length
    assert new_execution_id() != value


def test_new_execution_defaults():
    execution = make_execution()
    execution.refresh_from_db()
    assert execution.id.startswith("wf_exec_")
    assert execution.state == TransactionState.NOT_STARTED
    assert execution.status == ExecutionStatus.RUNNING
    assert execution.version == 0
    assert execution.error_stack == ""
    assert execution.owner == ""
    assert execution.created_at is not None
    assert execution.updated_at is not None
    assert not execution.is_finished
    assert "wf" in str(execution)
    assert "trx-1" in str(execution)


def test_created_at_can_be_set_by_the_caller():
    moment = timezone.now() - timedelta(days=3)
    execution = make_execution(created_at=moment, updated_at=moment)
    execution.refresh_from_db()
    assert execution.created_at == moment
    assert execution.updated_at == moment


@pytest.mark.parametrize("state", FINISHED_STATES)
def test_is_finished(state):
    assert WorkflowExecution(state=state).is_finished


def test_run_unique_constraint():
    make_execution(state="done")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_execution(state="failed")


def test_a_finished_transaction_can_run_again_under_a_new_run_id():
    make_execution(state="done", run_id="run-1")
    make_execution(state="reverted", run_id="run-2")
    make_execution(state="invoking", run_id="run-3")
    assert WorkflowExecution.objects.filter(transaction_id="trx-1").count() == 3


@pytest.mark.parametrize("second_state", UNFINISHED_STATES)
def test_one_unfinished_execution_per_transaction(second_state):
    make_execution(state="invoking", run_id="run-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_execution(state=second_state, run_id="run-2")


def test_unfinished_constraint_is_per_workflow_and_transaction():
    make_execution(state="invoking", run_id="run-1")
    make_execution(state="invoking", run_id="run-2", transaction_id="trx-2")
    make_execution(state="invoking", run_id="run-3", workflow_id="other")


def test_finishing_frees_the_transaction_id():
    first = make_execution(state="invoking", run_id="run-1")
    WorkflowExecution.objects.filter(pk=first.pk).update(state="done")
    make_execution(state="not_started", run_id="run-2")


def test_step_attempt_unique_constraint():
    execution = make_execution()
    make_step(execution, attempt=1)
    make_step(execution, attempt=2)
    make_step(execution, attempt=1, handler_type=HandlerType.COMPENSATE)
    make_step(execution, attempt=1, iteration=1)
    make_step(execution, attempt=1, step_path="_root.a.b")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_step(execution, attempt=1)
    assert execution.step_executions.count() == 5


def test_steps_are_deleted_with_their_execution():
    execution = make_execution()
    make_step(execution)
    execution.delete()
    assert not StepExecution.objects.exists()


def test_steps_log_shape_and_order():
    execution = make_execution()
    start = timezone.now()
    later = make_step(
        execution,
        step_id="charge",
        step_path="_root.reserve.charge",
        step_name="charge",
        status=StepLogStatus.FAILED,
        attempt=2,
        input={"amount": 5},
        error={"message": "boom", "name": "Error", "stack": "..."},
        started_at=start + timedelta(seconds=2),
        ended_at=start + timedelta(seconds=3),
        duration_ms=1000,
    )
    loop = make_step(
        execution,
        step_id="item",
        step_path="_root.loop.item",
        step_name="item",
        operation="builtin:loop",
        status=StepLogStatus.COMPLETED,
        output={"ok": True},
        compensate_input={"undo": 1},
        handler_type=HandlerType.COMPENSATE,
        started_at=start,
        iteration=2,
        total_items=3,
    )
    unstarted = make_step(execution, step_id="waiting", step_path="_root.w", status="WAITING")

    log = execution.steps_log()

    assert [entry["id"] for entry in log] == [loop.pk, later.pk, unstarted.pk]
    expected_keys = {
        "id",
        "stepId",
        "stepPath",
        "stepName",
        "handlerType",
        "operation",
        "status",
        "attempt",
        "input",
        "output",
        "compensateInput",
        "error",
        "startedAt",
        "endedAt",
        "durationMs",
        "iteration",
        "totalItems",
    }
    assert all(set(entry) == expected_keys for entry in log)

    loop_entry, charge_entry, waiting_entry = log
    assert loop_entry["iteration"] == 2
    assert loop_entry["totalItems"] == 3
    assert loop_entry["operation"] == "builtin:loop"
    assert loop_entry["handlerType"] == "compensate"
    assert loop_entry["compensateInput"] == {"undo": 1}
    assert loop_entry["output"] == {"ok": True}
    assert loop_entry["endedAt"] is None

    assert charge_entry == {
        "id": later.pk,
        "stepId": "charge",
        "stepPath": "_root.reserve.charge",
        "stepName": "charge",
        "handlerType": "invoke",
        "operation": "step",
        "status": "FAILED",
        "attempt": 2,
        "input": {"amount": 5},
        "output": None,
        "compensateInput": None,
        "error": {"message": "boom", "name": "Error", "stack": "..."},
        "startedAt": (start + timedelta(seconds=2)).isoformat(),
        "endedAt": (start + timedelta(seconds=3)).isoformat(),
        "durationMs": 1000,
        "iteration": None,
        "totalItems": None,
    }
    assert waiting_entry["startedAt"] is None
    assert waiting_entry["iteration"] is None


def test_steps_log_uses_prefetched_rows(django_assert_num_queries):
    execution = make_execution()
    make_step(execution)
    fetched = WorkflowExecution.objects.prefetch_related("step_executions").get(pk=execution.pk)
    with django_assert_num_queries(0):
        assert len(fetched.steps_log()) == 1


def test_meta_names_and_proxy():
    assert str(WorkflowExecution._meta.verbose_name_plural) == "Workflows"
    assert WorkflowExecution._meta.db_table == "workflow_execution"
    assert StepExecution._meta.db_table == "workflow_step_execution"
    assert WorkflowDefinitionEntry._meta.proxy
    assert str(WorkflowDefinitionEntry._meta.verbose_name_plural) == "Workflow definitions"
    assert WorkflowDefinitionEntry._meta.db_table == "workflow_execution"


def test_custom_permissions_exist():
    codenames = set(
        Permission.objects.filter(content_type__app_label="workflows_app").values_list(
            "codename", flat=True
        )
    )
    assert {
        "cancel_workflowexecution",
        "retry_workflowexecution",
        "complete_step_workflowexecution",
        "run_workflow",
        "view_workflowexecution",
    } <= codenames


def _constraints(table):
    with connection.cursor() as cursor:
        return connection.introspection.get_constraints(cursor, table)


def test_the_tables_have_exactly_the_named_indexes():
    execution = _constraints("workflow_execution")
    steps = _constraints("workflow_step_execution")

    # Nothing beyond these on the big table (on PostgreSQL the migration also drops
    # the varchar_pattern_ops index Django would add beside the primary key).
    assert {name for name, info in execution.items() if info["index"]} == {
        "workflow_execution_one_unfinished",
        "wf_exec_state_idx",
        "wf_exec_workflow_idx",
        "wf_exec_transaction_idx",
        "wf_exec_created_id_idx",
        "wf_exec_state_updated_idx",
        "wf_exec_expires_idx",
        "wf_exec_lease_idx",
    }
    assert execution["workflow_execution_run_unique"]["unique"]
    assert execution["workflow_execution_one_unfinished"]["unique"]
    # The FK has no index of its own: the attempt unique constraint starts with it.
    assert {name for name, info in steps.items() if info["index"]} == {
        "wf_step_waiting_idx",
        "wf_step_answer_pending_idx",
    }
    assert steps["wf_step_attempt_unique"]["columns"][0] == "execution_id"
    assert steps["wf_step_attempt_unique"]["unique"]
