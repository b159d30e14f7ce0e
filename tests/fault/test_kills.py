"""kill -9 of a qcluster worker child, and of whole clusters, while runs of a
four-step background chain execute (issue 16, fault injection)."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.fault.faultapp.workflows import CHAIN
from tests.fault.ledger import in_flight

from .scenario import (
    CHAIN_STEP_SECONDS,
    Scenario,
    assert_clean,
    chain_states,
    failing,
    finish_seconds,
    runs_per_scenario,
    wait_for_progress,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_kill_9_of_worker_children_mid_step(fault_cluster, effects_dir):
    runs = runs_per_scenario()
    cluster = fault_cluster()
    scenario = Scenario("kill-worker", CHAIN, effects_dir)
    scenario.start(runs, sleep=CHAIN_STEP_SECONDS, fail=failing)
    rng = random.Random(runs)
    most = max(2, runs // 4)
    next_kill = time.monotonic() + rng.uniform(0.5, 1.5)

    def kill_a_busy_worker() -> None:
        nonlocal next_kill
        if len(scenario.faults) >= most or time.monotonic() < next_kill:
            return
        busy = [e for e in in_flight(scenario.effects()) if group_of(e.pid) == cluster.pgid]
        if not busy:
            return
        victim = rng.choice(busy)
        os.kill(victim.pid, signal.SIGKILL)
        scenario.fault(f"kill -9 worker {victim.pid} in {victim.tx} {victim.step}", [victim.pid])
        next_kill = time.monotonic() + rng.uniform(0.5, 2.0)

    scenario.drive(finish_seconds(runs, 2.0), kill_a_busy_worker, live=[cluster])

    verdict = scenario.verdict()
    assert_clean(verdict, chain_states(runs))
    # The faults happened, and landed inside step bodies.
    assert len(scenario.faults) >= 1, verdict.line()
    assert verdict.interrupted >= 1, verdict.line()


def test_kill_9_of_whole_clusters_mid_run(fault_cluster, effects_dir):
    runs = runs_per_scenario()
    scenario = Scenario("kill-cluster", CHAIN, effects_dir)
    scenario.start(runs, sleep=CHAIN_STEP_SECONDS, fail=failing)
    cluster = fault_cluster()
    for share in (0.25, 0.5):
        wait_for_progress(scenario, share, cluster)
        cluster.kill()
        scenario.fault(f"kill -9 of {cluster.name}")
        cluster = fault_cluster()

    scenario.drive(finish_seconds(runs, 2.0), live=[cluster])

    verdict = scenario.verdict()
    assert_clean(verdict, chain_states(runs))
    assert len(scenario.faults) == 2
