"""A private Redis broker killed and restarted while runs of a four-step background
chain execute (issue 16, fault injection)."""

from __future__ import annotations

import time

import pytest

from tests.fault.faultapp.workflows import CHAIN

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

REDIS_DOWN_SECONDS = 3.0


def test_private_redis_broker_killed_and_restarted_mid_run(
    private_redis, fault_cluster, effects_dir
):
    runs = runs_per_scenario()
    cluster = fault_cluster(REDIS_URL=private_redis.url)
    scenario = Scenario("redis-restart", CHAIN, effects_dir)
    scenario.start(runs, sleep=CHAIN_STEP_SECONDS, fail=failing)
    for share in (0.25, 0.5):
        wait_for_progress(scenario, share, cluster)
        private_redis.stop()
        scenario.fault("redis-server killed")
        time.sleep(REDIS_DOWN_SECONDS)
        private_redis.start()

    scenario.drive(finish_seconds(runs, 2.0), live=[cluster])

    verdict = scenario.verdict()
    assert_clean(verdict, chain_states(runs))
