"""django-q2's task timeout landing inside a step (issue 16, fault injection): it
interrupts the worker, not the step. The run is released, recovered and finishes
``done`` with every body run to its end once; a step that always outlives the
timeout ends its run ``failed`` after ``MAX_RECOVERY_FAILURES`` interruptions."""

from __future__ import annotations

import pytest

from tests.fault.faultapp.workflows import TIMEOUT, TIMEOUT_STEPS
from tests.fault.ledger import ends
from workflows_app.conf import workflows_settings
from workflows_app.models import StepExecution, WorkflowExecution

from .scenario import Scenario, assert_clean, finish_seconds, runs_per_scenario

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

# django-q2's timeout of the workers here; the slow step sleeps twice as long.
TASK_TIMEOUT = 2
SLOW_SECONDS = 2.0 * TASK_TIMEOUT
POISON_RUNS = 2


def starts(effects, tx: str, step: str) -> int:
    return sum(
        1 for e in effects if (e.tx, e.step, e.kind, e.event) == (tx, step, "invoke", "start")
    )


def test_a_step_interrupted_by_the_task_timeout_once_runs_again_and_finishes(
    fault_cluster, effects_dir
):
    runs = runs_per_scenario()
    cluster = fault_cluster(BG_Q_TIMEOUT=str(TASK_TIMEOUT), Q_WORKERS="4")
    scenario = Scenario("task-timeout-once", TIMEOUT, effects_dir)
    transaction_ids = scenario.start(runs, sleep=0.05, long=SLOW_SECONDS, slow="once")
    # The timeout is the fault: it hits whichever worker runs the slow body.
    scenario.fault(f"django-q2 timeout {TASK_TIMEOUT} s")

    scenario.drive(finish_seconds(runs, 2.0), live=[cluster])

    verdict = scenario.verdict()
    assert_clean(verdict, {"done/COMPLETED": runs})
    effects = scenario.effects()
    counts = ends(effects)
    for tx in transaction_ids:
        assert [counts[(tx, step, "invoke")] for step in TIMEOUT_STEPS] == [1, 1, 1], tx
        assert starts(effects, tx, "t2") == 2, tx
    assert not [e for e in effects if e.kind == "compensate"], verdict.line()
    assert verdict.interrupted == runs, verdict.line()
    attempts = StepExecution.objects.filter(execution__transaction_id__in=transaction_ids)
    # The interrupted attempt left no row: no failure, no second attempt.
    assert set(attempts.values_list("status", "attempt")) == {("COMPLETED", 1)}
    assert attempts.count() == runs * len(TIMEOUT_STEPS)
    assert "reincarnated worker" in cluster.log()


def test_a_step_that_always_outlives_the_task_timeout_fails_its_run(fault_cluster, effects_dir):
    limit = int(workflows_settings.MAX_RECOVERY_FAILURES)
    cluster = fault_cluster(BG_Q_TIMEOUT=str(TASK_TIMEOUT))
    scenario = Scenario("task-timeout-always", TIMEOUT, effects_dir)
    transaction_ids = scenario.start(POISON_RUNS, sleep=0.05, long=SLOW_SECONDS, slow="always")
    scenario.fault(f"django-q2 timeout {TASK_TIMEOUT} s")

    scenario.drive(finish_seconds(POISON_RUNS, limit * 10.0), live=[cluster])

    verdict = scenario.verdict()
    assert verdict.stuck == [] and verdict.lost == [], verdict.line()
    assert verdict.states == {"failed/FAILED": POISON_RUNS}, verdict.line()
    effects = scenario.effects()
    for row in WorkflowExecution.objects.filter(
        workflow_id=TIMEOUT, transaction_id__in=transaction_ids
    ):
        assert row.recovery_failures == limit
        assert f"while step {TIMEOUT}-t2 (invoke) ran" in row.error
        assert f"Task exceeded maximum timeout value ({TASK_TIMEOUT} seconds)" in row.error
        # Each resume ran t2 once more and was interrupted; nothing ran twice to its end.
        assert starts(effects, row.transaction_id, "t2") == limit
        assert starts(effects, row.transaction_id, "t3") == 0
    assert max(ends(effects).values()) == 1
    assert not [e for e in effects if e.kind == "compensate"]
