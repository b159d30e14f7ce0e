"""The execution row's top-level error (SQLite or PostgreSQL, as DATABASE_URL says):
``error`` is the message of the first invoke error and ``error_stack`` its stack, as in
the execution-log schema; the structured error stays in the context and the step log.
Migration 0002 turned the JSON errors stored before into messages."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from rest_framework.test import APIClient

from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import create_step, create_workflow

from .helpers import uname

pytestmark = pytest.mark.django_db


def test_the_top_level_error_is_the_message_and_its_stack(admin_user):
    name = uname("ms-error")

    def explode(value, ctx):
        raise ValueError("card declined")

    create_workflow(
        name,
        lambda input: create_step(f"{name}-pay", explode)(input),
        store=True,
        retention_time=3600,
    )
    res = workflow_engine.run(name, input=1, throw_on_error=False)

    row = WorkflowExecution.objects.get(transaction_id=res.transaction.transaction_id)
    assert row.error == "card declined"
    assert "ValueError: card declined" in row.error_stack
    assert row.top_error()["name"] == "ValueError"
    client = APIClient()
    client.force_authenticate(admin_user)
    body = client.get(f"/api/workflow-executions/{row.pk}/").json()
    assert body["error"] == "card declined"
    assert "ValueError" in body["error_stack"]
    assert body["context"]["errors"][0]["error"]["name"] == "ValueError"


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_stored_json_errors_into_messages_and_back():
    executor = MigrationExecutor(connection)
    before = [("workflows_app", "0001_initial")]
    after = [("workflows_app", "0002_execution_error_message")]
    executor.migrate(before)
    apps = executor.loader.project_state(before).apps
    Old = apps.get_model("workflows_app", "WorkflowExecution")
    structured = {"message": "card declined", "name": "ValueError", "stack": "Traceback"}
    Old.objects.create(
        id="wf_exec_failed",
        workflow_id="w",
        transaction_id="t1",
        run_id="r1",
        state="reverted",
        error=structured,
        error_stack="Traceback",
        context={"errors": [{"action": "pay", "handlerType": "invoke", "error": structured}]},
    )
    Old.objects.create(
        id="wf_exec_done", workflow_id="w", transaction_id="t2", run_id="r2", state="done"
    )
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        apps = executor.loader.project_state(after).apps
        New = apps.get_model("workflows_app", "WorkflowExecution")
        assert dict(New.objects.values_list("id", "error")) == {
            "wf_exec_failed": "card declined",
            "wf_exec_done": "",
        }
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        apps = executor.loader.project_state(before).apps
        Old = apps.get_model("workflows_app", "WorkflowExecution")
        assert dict(Old.objects.values_list("id", "error")) == {
            "wf_exec_failed": structured,
            "wf_exec_done": None,
        }
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes("workflows_app"))
