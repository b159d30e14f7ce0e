"""The Run form and "Mark succeeded" start from an example; the message after a run
says plainly whether it succeeded; input that is not JSON is a form error."""

from __future__ import annotations

import json

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import create_workflow
from workflows_app.sdk.workflows import CompositionError

from . import workflows_for_tests as wf
from .conftest import run_stored

pytestmark = pytest.mark.django_db(transaction=True)

DEFINITIONS_URL = reverse("admin:workflows_app_workflowdefinitionentry_changelist")
RUN_URL = reverse("admin:workflows_app_workflowdefinitionentry_run")


def run_form_value(page: str, name: str) -> str:
    section = page.split(f'id="workflow-{name}"')[1].split("</section>")[0]
    return section.split('name="input"')[1].split(">", 1)[1].split("</textarea>")[0]


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_run_form_shows_the_input_example_option_else_the_last_input(admin_client, token):
    page = admin_client.get(DEFINITIONS_URL).content.decode()
    assert "example-ref" in run_form_value(page, wf.WITH_EXAMPLE)
    assert "input_example option" in page

    assert run_form_value(page, wf.REVERTED).strip() == ""
    run_stored(wf.REVERTED, {"ref": token})
    page = admin_client.get(DEFINITIONS_URL).content.decode()
    assert token in run_form_value(page, wf.REVERTED)
    assert "the input of the last stored run" in page


def test_input_example_must_be_json():
    with pytest.raises(CompositionError):
        create_workflow("admin-tests-bad-example", lambda i: i, input_example={1, 2})


def test_the_message_says_whether_the_run_succeeded(admin_client, token):
    ok = admin_client.post(RUN_URL, {"workflow": wf.OK, "input": json.dumps({"ref": token})})
    # Messages pile up until a page shows them: the newest is last.
    assert texts(ok)[-1] == f"{wf.OK} ran and succeeded."

    failed = admin_client.post(RUN_URL, {"workflow": wf.REVERTED, "input": "{}"})
    assert texts(failed)[-1] == (
        f"{wf.REVERTED} failed: its steps were compensated (the run is reverted)."
    )
    waiting = admin_client.post(RUN_URL, {"workflow": wf.WAITING, "input": "{}"})
    assert "has not finished yet" in texts(waiting)[-1]


def test_input_that_is_not_json_is_a_form_error(admin_client):
    before = WorkflowExecution.objects.count()
    response = admin_client.post(RUN_URL, {"workflow": wf.OK, "input": "{ref: 1"})

    assert response.status_code == 200
    assert "Enter a valid JSON." in response.content.decode()
    assert WorkflowExecution.objects.count() == before


def test_mark_succeeded_starts_from_the_last_output_of_the_step(admin_client, token):
    first = run_stored(wf.WAITING, {"ref": token})
    workflow_engine.set_step_success(
        workflow_id=first.workflow_id,
        transaction_id=first.transaction_id,
        step_id="approve",
        response={"approved_by": "ops-example"},
    )
    second = run_stored(wf.WAITING, {"ref": token + "-2"})
    url = reverse("admin:workflows_app_workflowexecution_change", args=[second.pk])
    page = admin_client.get(url).content.decode()

    waiting = page.split('id="waiting"')[1].split("</section>")[0]
    assert "ops-example" in waiting.split('name="response"')[1].split("</textarea>")[0]
