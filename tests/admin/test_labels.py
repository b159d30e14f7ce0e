"""Labels that read right: status and state agree; steps without compensation are not
"Reverted"; the list's title and count name what they list."""

from __future__ import annotations

import re

from django.urls import reverse

from workflows_app.engine import workflow_engine

from . import workflows_for_tests as wf
from .conftest import run_stored

LIST_URL = reverse("admin:workflows_app_workflowexecution_changelist")


def detail(client, execution) -> str:
    url = reverse("admin:workflows_app_workflowexecution_change", args=[execution.pk])
    return client.get(url).content.decode()


def outcome(page: str) -> str:
    return re.search(r'<dd class="wf-outcome">([^<]*)</dd>', page).group(1)


def history_state(page: str, step: str) -> str:
    entry = page.split(f'id="step-{step}"')[1]
    return re.search(r'class="wf-step-state[^"]*">([^<]*)<', entry).group(1)


def test_status_and_state_agree(admin_client, token):
    reverted = run_stored(wf.REVERTED, {"ref": token})
    failed = run_stored(wf.FAILED, {"ref": token})
    waiting = run_stored(wf.WAITING, {"ref": token})
    done = run_stored(wf.OK, {"ref": token})

    assert outcome(detail(admin_client, reverted)).startswith("Failed, then reverted")
    assert "compensation failed too" in outcome(detail(admin_client, failed))
    assert outcome(detail(admin_client, waiting)) == "Running, waiting for a response"
    assert outcome(detail(admin_client, done)) == "Completed"


def test_steps_without_compensation_are_not_reverted(admin_client, token):
    done = run_stored(wf.OK, {"ref": token})
    workflow_engine.cancel(done.workflow_id, done.transaction_id)
    page = detail(admin_client, done)

    assert outcome(page).startswith("Canceled, then reverted")
    assert history_state(page, "admin-tests-reserve") == "Reverted"
    assert history_state(page, "admin-tests-charge") == "Done"
    assert history_state(page, "admin-tests-ship") == "Done"
    # One reverted node in each drawing of the graph (a wide and a narrow one).
    drawings = page.count('class="wf-graph"')
    assert drawings >= 1
    assert page.count('data-state="reverted" data-colour') == drawings


def test_list_title_and_count(admin_client, token):
    run_stored(wf.OK, {"ref": token})
    page = admin_client.get(LIST_URL).content.decode()

    assert "<h1>Workflows</h1>" in page
    assert "Select workflow execution to view" not in page
    assert re.search(r"\b1 run\b", page)
