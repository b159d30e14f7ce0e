"""A private Redis broker killed and restarted while runs of a four-step background
chain execute (issue 16, fault injection)."""

from __future__ import annotations

import time

from .scenario import SCENARIO_MARKS

pytestmark = SCENARIO_MARKS

REDIS_DOWN_SECONDS = 3.0


def test_private_redis_broker_killed_and_restarted_mid_run(private_redis, fault_cluster, chain):
    cluster = fault_cluster(REDIS_URL=private_redis.url)
    scenario = chain("redis-restart")
    for share in (0.25, 0.5):
        scenario.wait_for_progress(share, cluster)
        private_redis.stop()
        scenario.fault("redis-server killed")
        time.sleep(REDIS_DOWN_SECONDS)
        private_redis.start()

    scenario.finish_chain(live=[cluster])
