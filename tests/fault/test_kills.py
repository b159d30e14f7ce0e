"""kill -9 of a qcluster worker child, and of whole clusters, while runs of a
four-step background chain execute (issue 16, fault injection)."""

from __future__ import annotations

import os
import random
import signal

from tests.fault.ledger import in_flight

from .scenario import SCENARIO_MARKS

pytestmark = SCENARIO_MARKS


def group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_kill_9_of_worker_children_mid_step(fault_cluster, chain):
    cluster = fault_cluster()
    scenario = chain("kill-worker")

    def kill_a_busy_worker(rng: random.Random) -> bool:
        busy = [e for e in in_flight(scenario.effects()) if group_of(e.pid) == cluster.pgid]
        if not busy:
            return False
        victim = rng.choice(busy)
        os.kill(victim.pid, signal.SIGKILL)
        scenario.fault(f"kill -9 worker {victim.pid} in {victim.tx} {victim.step}", [victim.pid])
        return True

    verdict = scenario.finish_chain(scenario.paced(kill_a_busy_worker), live=[cluster])
    # The faults happened, and landed inside step bodies.
    assert len(scenario.faults) >= 1, verdict.line()
    assert verdict.interrupted >= 1, verdict.line()


def test_kill_9_of_whole_clusters_mid_run(fault_cluster, chain):
    scenario = chain("kill-cluster")
    cluster = fault_cluster()
    for share in (0.25, 0.5):
        scenario.wait_for_progress(share, cluster)
        cluster.kill()
        scenario.fault(f"kill -9 of {cluster.name}")
        cluster = fault_cluster()

    verdict = scenario.finish_chain(live=[cluster])
    assert len(scenario.faults) == 2, verdict.line()
