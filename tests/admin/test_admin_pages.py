"""The admin pages through Django's test client: index, list, detail, definitions."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from workflows_app.admin import EstimatedCountPaginator
from workflows_app.models import WorkflowExecution

from . import workflows_for_tests as wf
from .conftest import make_staff

pytestmark = pytest.mark.django_db

LIST_URL = reverse("admin:workflows_app_workflowexecution_changelist")
DEFINITIONS_URL = reverse("admin:workflows_app_workflowdefinitionentry_changelist")


def change_url(execution: WorkflowExecution) -> str:
    return reverse("admin:workflows_app_workflowexecution_change", args=[execution.pk])


def test_index_has_settings_section_with_both_entries(admin_client):
    page = admin_client.get(reverse("admin:index")).content.decode()

    assert re.search(r'class="section"[^>]*>\s*Settings', page)
    assert f'href="{LIST_URL}"' in page
    assert ">Workflows<" in page
    assert f'href="{DEFINITIONS_URL}"' in page
    assert ">Workflow definitions<" in page
    # Read-only: no "Add" links for either entry.
    assert "workflowexecution/add/" not in page
    assert "workflowdefinitionentry/add/" not in page


@pytest.mark.parametrize("url", [LIST_URL, DEFINITIONS_URL])
def test_anonymous_is_sent_to_login(client, url):
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_anonymous_detail_and_commands_are_sent_to_login(client, reverted_execution):
    for url in (
        change_url(reverted_execution),
        reverse("admin:workflows_app_workflowexecution_cancel", args=[reverted_execution.pk]),
    ):
        response = client.post(url) if url.endswith("cancel/") else client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_non_staff_user_is_refused(client, reverted_execution):
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("customer", password="pw"))

    for url in (LIST_URL, change_url(reverted_execution), DEFINITIONS_URL):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_view_permission_gets_403(client, reverted_execution):
    client.force_login(make_staff("nobody"))

    assert client.get(LIST_URL).status_code == 403
    assert client.get(change_url(reverted_execution)).status_code == 403
    assert client.get(DEFINITIONS_URL).status_code == 403


def test_list_columns_badges_and_progress(
    admin_client, done_execution, reverted_execution, waiting_execution
):
    page = admin_client.get(LIST_URL).content.decode()

    for header in ("Transaction ID", "Workflow ID", "State", "Progress", "Duration", "Created"):
        assert header in page
    assert done_execution.transaction_id in page
    assert 'class="wf-badge wf-green" data-state="done"' in page
    assert 'class="wf-badge wf-red" data-state="reverted"' in page
    assert 'class="wf-badge wf-orange" data-state="invoking"' in page
    assert "3 of 3 steps" in page  # done
    assert "1 of 3 steps" in page  # waiting at approve
    assert "1 of 2 steps" in page  # reverted: reserve done, charge failed
    assert "so far" in page  # the waiting run's running duration
    # Read-only list: no action checkboxes, no add button.
    assert 'name="_selected_action"' not in page
    assert "workflowexecution/add/" not in page
    # Newest first.
    assert page.index(waiting_execution.transaction_id) < page.index(done_execution.transaction_id)


def test_list_filters_on_state_and_workflow(admin_client, done_execution, reverted_execution):
    page = admin_client.get(LIST_URL, {"state__exact": "reverted"}).content.decode()
    assert reverted_execution.transaction_id in page
    assert done_execution.transaction_id not in page

    page = admin_client.get(LIST_URL, {"workflow_id": wf.OK}).content.decode()
    assert done_execution.transaction_id in page
    assert reverted_execution.transaction_id not in page
    # The workflow filter offers the registered workflows.
    assert f"?workflow_id={wf.WAITING}" in page


@pytest.mark.parametrize("field", ["pk", "short_id", "transaction_id", "workflow_id"])
def test_list_search_by_exact_ids(admin_client, done_execution, reverted_execution, field):
    term = {
        "pk": done_execution.pk,
        "short_id": done_execution.pk.removeprefix("wf_exec_"),
        "transaction_id": done_execution.transaction_id,
        "workflow_id": done_execution.workflow_id,
    }[field]

    page = admin_client.get(LIST_URL, {"q": term}).content.decode()

    assert done_execution.transaction_id in page
    assert reverted_execution.transaction_id not in page


def test_list_date_hierarchy_and_page_size(admin_client, done_execution):
    response = admin_client.get(LIST_URL)
    cl = response.context["cl"]

    assert cl.date_hierarchy == "created_at"
    assert cl.list_per_page == 20
    assert "created_at__day=" in response.content.decode()


def test_list_never_counts_the_whole_table(admin_client, done_execution, reverted_execution):
    for params in ({}, {"state__exact": "done"}, {"q": done_execution.transaction_id}):
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(LIST_URL, params).status_code == 200
        counts = [
            q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT COUNT(")
        ]
        assert counts, "the paginator should count (bounded)"
        for sql in counts:
            # The list's count, and the waiting filter's count of its choice.
            assert "LIMIT 10001" in sql or "LIMIT 1000)" in sql, sql
        # The list reads neither the flow JSON nor the payload columns.
        select = next(
            q["sql"]
            for q in queries.captured_queries
            if q["sql"].startswith('SELECT "workflow_execution"."id"')
        )
        head = select.split(" FROM ")[0]
        for column in ('"execution"', '"context"', '"input_payload"', '"error_stack"'):
            assert f'"workflow_execution".{column}' not in head


def test_paginator_caps_the_count():
    class Small(EstimatedCountPaginator):
        cap = 2

    for _ in range(3):
        WorkflowExecution.objects.create(workflow_id="x", transaction_id=f"t{_}", run_id="r")
    paginator = Small(WorkflowExecution.objects.filter(workflow_id="x"), 1)

    assert paginator.count == 2
    assert paginator.count_is_capped


@pytest.mark.postgres
def test_paginator_uses_the_planner_estimate_when_unfiltered():
    class Eager(EstimatedCountPaginator):
        estimate_from = 1

    for i in range(5):
        WorkflowExecution.objects.create(workflow_id="x", transaction_id=f"t{i}", run_id="r")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE workflow_execution")
    paginator = Eager(WorkflowExecution.objects.all(), 20)

    with CaptureQueriesContext(connection) as queries:
        count = paginator.count
    assert paginator.count_is_estimate
    assert count >= 1
    assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)


def test_detail_of_failed_execution(admin_client, failed_execution):
    response = admin_client.get(change_url(failed_execution))
    page = response.content.decode()

    assert response.status_code == 200
    for section in ("General", "Timeline", "Gantt", "Payload", "History", "JSON"):
        assert f">{section}</h2>" in page
    assert failed_execution.run_id in page
    assert 'data-state="failed"' in page
    # The graph: one node per step, arrows, links to the history entries.
    assert page.count('class="wf-node ') == 2
    assert 'class="wf-edge"' in page
    assert 'href="#step-admin-tests-charge-declined"' in page
    assert 'id="step-admin-tests-charge-declined"' in page
    # Gantt: invoke and compensate bars and the legend.
    assert "wf-bar-invoke" in page and "wf-bar-compensate" in page
    assert ">Compensate</text>" in page
    # History: errors with their stacks; the redacted values stay masked.
    assert "card declined by the bank" in page
    assert "refund service unavailable" in page
    assert "Traceback" in page
    assert "[REDACTED]" in page
    assert "hunter2" not in page
    # Read-only: no Save buttons.
    assert 'name="_save"' not in page
    assert 'name="_continue"' not in page
    # A failed transaction offers "Retry compensation" and "Run again" to a superuser.
    assert "Retry compensation" in page
    assert "Run again" in page


def test_detail_of_waiting_execution_offers_the_step_form(admin_client, waiting_execution):
    page = admin_client.get(change_url(waiting_execution)).content.decode()

    assert "Waiting for a response" in page
    assert 'name="step_id" value="approve"' in page
    assert 'value="success"' in page
    # "Mark failed" opens its confirmation page.
    assert "complete-step/?step=approve&amp;action=invoke&amp;outcome=failure" in page
    assert "Retry step" in page
    assert 'data-state="waiting"' in page


def test_viewer_sees_no_command_buttons(viewer_client, waiting_execution):
    response = viewer_client.get(change_url(waiting_execution))
    page = response.content.decode()

    assert response.status_code == 200
    assert "Run again" not in page
    assert "Mark succeeded" not in page
    assert ">Cancel</button>" not in page
    assert "You do not have permission to complete or retry steps." in page


def test_unknown_execution_redirects_with_message(admin_client):
    response = admin_client.get(
        reverse("admin:workflows_app_workflowexecution_change", args=["wf_exec_nope"]),
        follow=True,
    )

    assert response.status_code == 200
    assert "doesn\u2019t exist" in response.content.decode()


def test_definitions_page_lists_registered_workflows(admin_client):
    page = admin_client.get(DEFINITIONS_URL).content.decode()

    for name in (wf.OK, wf.WAITING, wf.IN_MEMORY):
        assert f'id="workflow-{name}"' in page
    assert 'class="wf-graph"' in page
    assert "&quot;retention_time&quot;: 3600" in page
    assert f'<button type="submit" class="button default">Run {wf.OK}</button>' in page


def test_definitions_page_hides_the_run_form_without_permission(viewer_client):
    response = viewer_client.get(DEFINITIONS_URL)

    assert response.status_code == 200
    assert "wf-run-form" not in response.content.decode()
