"""The dashboard on the Workflows list: per workflow, counts by state over the last
24 hours and the failure rate, from one aggregate query on the created_at index."""

from __future__ import annotations

import datetime

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from workflows_app.admin import dashboard
from workflows_app.models import WorkflowExecution

from . import workflows_for_tests as wf
from .conftest import run_stored

LIST_URL = reverse("admin:workflows_app_workflowexecution_changelist")


def test_counts_and_failure_rate_of_the_last_24_hours(admin_client, token):
    for i in range(3):
        run_stored(wf.OK, {"ref": f"{token}-{i}"})
    run_stored(wf.REVERTED, {"ref": token})
    run_stored(wf.WAITING, {"ref": token})
    old = run_stored(wf.FAILED, {"ref": token})
    WorkflowExecution.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - datetime.timedelta(hours=25)
    )

    with CaptureQueriesContext(connection) as queries:
        _since, rows = dashboard.summary()
    assert len(queries.captured_queries) == 1
    assert "GROUP BY" in queries.captured_queries[0]["sql"]
    by_name = {row.workflow_id: row for row in rows}
    assert set(by_name) == {wf.OK, wf.REVERTED, wf.WAITING}  # the old failure is out
    assert by_name[wf.OK].cells == [("done", 3), ("running", 0), ("reverted", 0), ("failed", 0)]
    assert by_name[wf.OK].failure_rate_text == "0%"
    assert by_name[wf.REVERTED].failure_rate_text == "100%"
    assert by_name[wf.WAITING].failure_rate is None
    assert by_name[wf.WAITING].column("running") == 1

    page = admin_client.get(LIST_URL).content.decode()
    table = page.split('class="wf-dashboard-table"')[1].split("</table>")[0]
    assert f'data-workflow="{wf.OK}"' in table
    assert f"?workflow_id={wf.REVERTED}&amp;state__exact=reverted" in table
