"""Confirmation pages: GET on a destructive command's URL shows what it will do and
changes nothing; only the page's POST runs the command."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from workflows_app.models import StepExecution, WorkflowExecution

from . import workflows_for_tests as wf
from .conftest import run_stored

pytestmark = pytest.mark.django_db(transaction=True)


def url(name: str, execution: WorkflowExecution) -> str:
    return reverse(f"admin:workflows_app_workflowexecution_{name}", args=[execution.pk])


def snapshot() -> tuple:
    """Everything a command could change: every run row, every attempt, the admin log."""
    rows = tuple(
        WorkflowExecution.objects.order_by("pk").values_list(
            "pk", "state", "status", "version", "updated_at"
        )
    )
    attempts = tuple(StepExecution.objects.order_by("pk").values_list("pk", "status"))
    return rows, attempts, LogEntry.objects.count()


def mark_failed_url(execution: WorkflowExecution) -> str:
    return url("complete_step", execution) + "?step=approve&action=invoke&outcome=failure"


@pytest.fixture
def runs(db, token):
    return {
        "done": run_stored(wf.OK, {"ref": token}),
        "failed": run_stored(wf.FAILED, {"ref": token}),
        "waiting": run_stored(wf.WAITING, {"ref": token}),
    }


@pytest.mark.parametrize(
    ("name", "run", "expected"),
    [
        ("cancel", "done", "Are you sure you want to cancel"),
        ("cancel", "waiting", "The steps waiting for a response fail at once: approve."),
        ("retry_compensation", "failed", "retry the failed compensations"),
        ("rerun", "done", "A new transaction starts"),
        ("mark_failed", "waiting", "mark step approve"),
    ],
)
def test_get_on_a_command_url_shows_a_confirmation_and_changes_nothing(
    admin_client, runs, name, run, expected
):
    execution = runs[run]
    before = snapshot()
    target = mark_failed_url(execution) if name == "mark_failed" else url(name, execution)

    for method in (admin_client.get, admin_client.head):
        response = method(target)
        assert response.status_code == 200
    page = admin_client.get(target).content.decode()

    assert snapshot() == before
    assert "<h1>Are you sure?</h1>" in page
    assert expected in page
    assert '<input type="hidden" name="post" value="yes">' in page
    assert "No, take me back" in page


def test_cancel_of_a_done_run_lists_the_compensations_deepest_first(admin_client, runs):
    page = admin_client.get(url("cancel", runs["done"])).content.decode()
    order = page.split('<ol class="wf-compensation-order">')[1].split("</ol>")[0]
    # Only reserve has a compensation; charge and ship have nothing to undo.
    assert "admin-tests-reserve" in order
    assert "admin-tests-charge" not in order
    nothing = page.split('class="wf-nothing-to-undo"')[1].split("</p>")[0]
    assert "admin-tests-ship" in nothing and "admin-tests-charge" in nothing


def test_the_confirmation_form_posts_the_command(admin_client, runs):
    done = runs["done"]
    response = admin_client.post(url("cancel", done), {"post": "yes"})

    assert response.status_code == 302
    assert WorkflowExecution.objects.get(pk=done.pk).state == "reverted"
    assert StepExecution.objects.filter(
        execution=done, step_id="admin-tests-reserve", handler_type="compensate"
    ).exists()


def test_mark_failed_confirmation_keeps_the_form_and_its_errors(admin_client, runs):
    waiting = runs["waiting"]
    page = admin_client.get(mark_failed_url(waiting)).content.decode()
    assert 'name="outcome" value="failure"' in page
    assert 'name="force_permanent_failure"' in page

    response = admin_client.post(
        url("complete_step", waiting),
        {"step_id": "approve", "action": "invoke", "outcome": "failure", "response": "{nope"},
    )
    assert response.status_code == 200
    assert "Enter a valid JSON." in response.content.decode()
    assert "Are you sure?" in response.content.decode()
    assert WorkflowExecution.objects.get(pk=waiting.pk).state == "invoking"

    response = admin_client.post(
        url("complete_step", waiting),
        {
            "step_id": "approve",
            "action": "invoke",
            "outcome": "failure",
            "response": '{"message": "rejected"}',
            "force_permanent_failure": "on",
        },
    )
    assert response.status_code == 302
    assert WorkflowExecution.objects.get(pk=waiting.pk).state == "reverted"
