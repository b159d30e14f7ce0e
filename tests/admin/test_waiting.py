""" "Waiting for a response": one definition for the admin filter, the API and the command."""

from __future__ import annotations

from io import StringIO

from django.core.management import call_command
from django.urls import reverse

from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution

from . import workflows_for_tests as wf
from .conftest import run_stored

CHANGELIST = reverse("admin:workflows_app_workflowexecution_changelist")


def test_admin_api_and_command_list_the_same_waiting_runs(admin_client, token):
    waiting = [run_stored(wf.WAITING, {"ref": f"{token}-{i}"}) for i in range(3)]
    run_stored(wf.OK, {"ref": token})
    run_stored(wf.REVERTED, {"ref": token})
    answered = waiting.pop()
    workflow_engine.set_step_success(
        workflow_id=answered.workflow_id,
        transaction_id=answered.transaction_id,
        step_id="approve",
        response={"ok": True},
    )
    expected = {e.pk for e in waiting}

    assert set(WorkflowExecution.objects.waiting().values_list("pk", flat=True)) == expected

    # The admin: the filter's choice carries the count; the filtered list has the rows.
    page = admin_client.get(CHANGELIST).content.decode()
    assert "Waiting for a response (2)" in page
    response = admin_client.get(CHANGELIST + "?waiting=true")
    listed = {e.pk for e in response.context["cl"].result_list}
    assert listed == expected

    # The API.
    body = admin_client.get("/api/workflow-executions/?waiting=true").json()
    assert {row["id"] for row in body["results"]} == expected
    everything = admin_client.get("/api/workflow-executions/?waiting=false").json()
    assert len(everything["results"]) == 5
    assert admin_client.get("/api/workflow-executions/?waiting=perhaps").status_code == 400

    # The command.
    out = StringIO()
    call_command("workflows", "executions", "--waiting", stdout=out)
    printed = {line.split()[0] for line in out.getvalue().splitlines()[1:] if line.strip()}
    assert expected <= printed
    assert answered.pk not in out.getvalue()
    assert len([line for line in printed if line.startswith("wf_exec_")]) == 2
