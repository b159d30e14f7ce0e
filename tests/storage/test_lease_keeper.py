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


def _wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_holding_a_run_wakes_the_keeper_only_when_the_lease_length_changed(settings):
    """Waking the keeper thread on every hold cost every run a thread switch; it is
    woken only when LEASE_SECONDS changed, so that it takes up the new pace at once."""
    from workflows_app.storage.leases import Handle, LeaseKeeper

    settings.WORKFLOWS = {**settings.WORKFLOWS, "LEASE_SECONDS": 30}
    keeper = LeaseKeeper()
    # No owner: the keeper has nothing to renew and never writes.
    handles = [Handle(f"pk-{i}", 0, "", 0.0) for i in range(50)]
    keeper.hold(handles[0])
    assert _wait_for(lambda: keeper._lease == 30.0 and not keeper._wake.is_set())

    for handle in handles[1:]:
        keeper.hold(handle)
    assert not keeper._wake.is_set()
    assert len(keeper._held) == 50

    settings.WORKFLOWS = {**settings.WORKFLOWS, "LEASE_SECONDS": 2}
    keeper.hold(handles[0])
    assert _wait_for(lambda: keeper._lease == 2.0)
