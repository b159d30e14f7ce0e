"""The admin's commands: POST + CSRF, permissions, the admin log, engine errors as messages."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from workflows_app.models import StepExecution, WorkflowExecution

from . import workflows_for_tests as wf
from .conftest import make_staff

pytestmark = pytest.mark.django_db(transaction=True)

DEFINITIONS_URL = reverse("admin:workflows_app_workflowdefinitionentry_changelist")
RUN_URL = reverse("admin:workflows_app_workflowdefinitionentry_run")


def url(name: str, execution: WorkflowExecution) -> str:
    return reverse(f"admin:workflows_app_workflowexecution_{name}", args=[execution.pk])


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def refreshed(execution: WorkflowExecution) -> WorkflowExecution:
    return WorkflowExecution.objects.get(pk=execution.pk)


def logged(execution: WorkflowExecution) -> list[str]:
    return list(
        LogEntry.objects.filter(object_id=execution.pk, action_flag=CHANGE).values_list(
            "change_message", flat=True
        )
    )


# Completing a waiting step


def test_mark_waiting_step_succeeded(admin_client, waiting_execution):
    response = admin_client.post(
        url("complete_step", waiting_execution),
        {"step_id": "approve", "action": "invoke", "outcome": "success", "response": '{"ok": 1}'},
    )

    assert response.status_code == 302
    assert response["Location"] == url("change", waiting_execution)
    execution = refreshed(waiting_execution)
    assert execution.state == "done"
    assert execution.context["data"]["invoke"]["approve"]["output"] == {"ok": 1}
    assert any("approve marked succeeded" in t and "Done" in t for t in texts(response))
    assert any("approve marked succeeded" in m for m in logged(execution))


def test_mark_waiting_step_failed(admin_client, waiting_execution):
    response = admin_client.post(
        url("complete_step", waiting_execution),
        {
            "step_id": "approve",
            "action": "invoke",
            "outcome": "failure",
            "response": '{"message": "rejected by a human"}',
            "force_permanent_failure": "on",
        },
    )

    assert response.status_code == 302
    execution = refreshed(waiting_execution)
    assert execution.state == "reverted"
    assert any(e["error"]["message"] == "rejected by a human" for e in execution.context["errors"])
    assert any("approve marked failed" in m for m in logged(execution))


def test_invalid_json_re_renders_the_form_with_an_error(admin_client, waiting_execution):
    response = admin_client.post(
        url("complete_step", waiting_execution),
        {"step_id": "approve", "action": "invoke", "outcome": "success", "response": "{oops"},
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "Enter a valid JSON." in page
    assert "{oops" in page  # what was typed is kept
    assert refreshed(waiting_execution).state == "invoking"
    assert not logged(waiting_execution)


def test_complete_step_form_page_renders_on_get(admin_client, waiting_execution):
    response = admin_client.get(url("complete_step", waiting_execution), {"step": "approve"})

    assert response.status_code == 200
    assert 'name="step_id" value="approve"' in response.content.decode()


def test_completing_a_step_that_is_not_waiting_is_an_error_message(admin_client, waiting_execution):
    response = admin_client.post(
        url("complete_step", waiting_execution),
        {"step_id": "admin-tests-reserve", "action": "invoke", "outcome": "success"},
        follow=True,
    )

    assert response.status_code == 200
    assert any("failed" in t for t in texts(response)) or "errornote" in (response.content.decode())
    assert refreshed(waiting_execution).state == "invoking"


def test_retry_a_waiting_step(admin_client, waiting_execution):
    before = StepExecution.objects.filter(execution=waiting_execution, step_id="approve").count()

    response = admin_client.post(
        url("retry_step", waiting_execution), {"step_id": "approve", "action": "invoke"}
    )

    assert response.status_code == 302
    assert any("Retry of step approve" in t for t in texts(response))
    after = StepExecution.objects.filter(execution=waiting_execution, step_id="approve").count()
    assert after == before + 1
    assert refreshed(waiting_execution).state == "invoking"


# Cancel, retry compensation, run again


def test_cancel_a_waiting_execution(admin_client, waiting_execution):
    response = admin_client.post(url("cancel", waiting_execution))

    assert response.status_code == 302
    assert refreshed(waiting_execution).state == "reverted"
    assert any(m.startswith("Cancel") for m in logged(waiting_execution))


def test_cancel_in_the_wrong_state_is_an_error_message_not_a_500(admin_client, reverted_execution):
    response = admin_client.post(url("cancel", reverted_execution), follow=True)

    assert response.status_code == 200
    assert any("Cancel failed" in t and "reverted" in t for t in texts(response))
    assert refreshed(reverted_execution).state == "reverted"
    assert not logged(reverted_execution)


def test_retry_compensation_of_a_failed_execution(admin_client, failed_execution):
    assert failed_execution.state == "failed"

    response = admin_client.post(url("retry_compensation", failed_execution))

    assert response.status_code == 302
    assert refreshed(failed_execution).state == "reverted"
    assert any("Retry of the compensation" in m for m in logged(failed_execution))


def test_retry_compensation_in_the_wrong_state_is_an_error_message(admin_client, done_execution):
    response = admin_client.post(url("retry_compensation", done_execution), follow=True)

    assert response.status_code == 200
    assert any("failed" in t for t in texts(response))


def test_run_again_redirects_to_the_new_execution(admin_client, done_execution):
    response = admin_client.post(url("rerun", done_execution))

    assert response.status_code == 302
    new = WorkflowExecution.objects.exclude(pk=done_execution.pk).get(workflow_id=wf.OK)
    assert response["Location"] == url("change", new)
    assert new.input_payload == done_execution.input_payload
    assert new.transaction_id != done_execution.transaction_id
    assert any("Run again" in m for m in logged(done_execution))


# HTTP method, CSRF and permissions


def test_retry_step_refuses_get(admin_client, waiting_execution):
    # The destructive commands answer GET with a confirmation page (test_confirm.py).
    assert admin_client.get(url("retry_step", waiting_execution)).status_code == 405


def test_commands_need_a_csrf_token(admin_user, waiting_execution):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    response = client.post(url("cancel", waiting_execution))

    assert response.status_code == 403
    assert refreshed(waiting_execution).state == "invoking"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("cancel", {}),
        ("retry_step", {"step_id": "approve"}),
        ("complete_step", {"step_id": "approve", "outcome": "success", "response": "1"}),
        ("retry_compensation", {}),
        ("rerun", {}),
    ],
)
def test_staff_without_the_custom_permission_gets_403(viewer_client, waiting_execution, name, data):
    response = viewer_client.post(url(name, waiting_execution), data)

    assert response.status_code == 403
    assert refreshed(waiting_execution).state == "invoking"


def test_staff_with_the_permissions_may_complete_a_step(operator_client, waiting_execution):
    response = operator_client.post(
        url("complete_step", waiting_execution),
        {"step_id": "approve", "action": "invoke", "outcome": "success", "response": "{}"},
    )

    assert response.status_code == 302
    assert refreshed(waiting_execution).state == "done"


def test_cancel_permission_alone_does_not_allow_completing(client, waiting_execution):
    client.force_login(
        make_staff("canceller", "view_workflowexecution", "cancel_workflowexecution")
    )

    assert client.post(url("complete_step", waiting_execution), {}).status_code == 403
    assert client.post(url("cancel", waiting_execution)).status_code == 302
    assert refreshed(waiting_execution).state == "reverted"


def test_command_on_unknown_execution_is_404(admin_client):
    response = admin_client.post(
        reverse("admin:workflows_app_workflowexecution_cancel", args=["wf_exec_missing"])
    )

    assert response.status_code == 404


# Running from the definitions page


def test_run_a_stored_workflow_lands_on_its_execution(admin_client, token):
    response = admin_client.post(
        RUN_URL, {"workflow": wf.OK, "input": f'{{"ref": "{token}"}}', "transaction_id": ""}
    )

    assert response.status_code == 302
    execution = WorkflowExecution.objects.get(workflow_id=wf.OK)
    assert response["Location"] == url("change", execution)
    assert execution.state == "done"
    assert execution.input_payload == {"ref": token}
    assert any(f"Ran workflow {wf.OK}" in m for m in logged(execution))


def test_run_with_a_chosen_transaction_id(admin_client):
    admin_client.post(RUN_URL, {"workflow": wf.WAITING, "input": "{}", "transaction_id": "order-7"})

    assert WorkflowExecution.objects.get(workflow_id=wf.WAITING).transaction_id == "order-7"


def test_run_an_in_memory_workflow_shows_the_result(admin_client):
    response = admin_client.post(RUN_URL, {"workflow": wf.IN_MEMORY, "input": '{"n": 5}'})

    assert response.status_code == 302
    assert response["Location"].startswith(DEFINITIONS_URL)
    [message] = texts(response)
    assert "not stored" in message and "Done" in message
    assert "{&quot;echo&quot;: {&quot;n&quot;: 5}}" in message
    assert not WorkflowExecution.objects.filter(workflow_id=wf.IN_MEMORY).exists()


def test_run_with_invalid_json_re_renders_the_page_with_an_error(admin_client):
    response = admin_client.post(RUN_URL, {"workflow": wf.OK, "input": "[1, 2"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "Enter a valid JSON." in page
    assert "[1, 2" in page
    assert not WorkflowExecution.objects.filter(workflow_id=wf.OK).exists()


def test_run_an_unknown_workflow_is_an_error_message(admin_client):
    response = admin_client.post(
        RUN_URL, {"workflow": "no-such-workflow", "input": ""}, follow=True
    )

    assert response.status_code == 200
    assert any("Running no-such-workflow failed" in t for t in texts(response))


def test_run_needs_the_run_permission(viewer_client):
    response = viewer_client.post(RUN_URL, {"workflow": wf.OK, "input": "{}"})

    assert response.status_code == 403
    assert not WorkflowExecution.objects.filter(workflow_id=wf.OK).exists()


def test_run_with_the_run_permission(client):
    client.force_login(make_staff("runner", "run_workflow"))

    assert client.get(DEFINITIONS_URL).status_code == 200
    response = client.post(RUN_URL, {"workflow": wf.OK, "input": "{}"})

    assert response.status_code == 302
    assert WorkflowExecution.objects.filter(workflow_id=wf.OK).exists()


def test_run_url_refuses_get_by_redirecting(admin_client):
    response = admin_client.get(RUN_URL)

    assert response.status_code == 302
    assert response["Location"] == DEFINITIONS_URL


def test_anonymous_run_is_sent_to_login(client):
    response = client.post(RUN_URL, {"workflow": wf.OK, "input": "{}"})

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert not WorkflowExecution.objects.filter(workflow_id=wf.OK).exists()
