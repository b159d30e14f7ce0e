"""A step that runs longer than the lease keeps its run: the lease keeper renews the
lease while the handler runs, so a recovery sweep meanwhile finds nothing to take."""

import threading
import time

import pytest
from django.db import connection

from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import StepResponse, create_step, create_workflow

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

runs: list[int] = []
sweeps: list[int] = []


def _long(value, ctx):
    runs.append(value)

    def sweep():
        try:
            sweeps.append(workflow_engine.recover())
        finally:
            connection.close()

    # While this handler still runs, past two lease lengths, a sweep looks for
    # expired leases.
    time.sleep(2.2)
    thread = threading.Thread(target=sweep)
    thread.start()
    thread.join(10)
    return StepResponse(value)


long_step = create_step("lease-long-step", _long)


@create_workflow("lease-keeper-flow", store=True, retention_time=3600)
def lease_keeper_flow(input):
    return long_step(input)


def test_a_long_step_keeps_its_lease(settings):
    settings.WORKFLOWS = {**settings.WORKFLOWS, "LEASE_SECONDS": 1}
    runs.clear()
    sweeps.clear()

    res = workflow_engine.run("lease-keeper-flow", input=7)

    assert res.result == 7
    assert sweeps == [0]
    assert runs == [7]
    assert WorkflowExecution.objects.get(workflow_id="lease-keeper-flow").state == "done"
