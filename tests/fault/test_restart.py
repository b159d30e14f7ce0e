"""The whole PostgreSQL server stopped and started again while runs of a four-step
background chain execute (issue 16, fault injection): once it is back, the workers
reconnect and every run finishes without anyone acting.

The server is a private one (``private_postgres``); the ledger lives in files, so it
keeps counting while the database is down."""

from __future__ import annotations

import time

from django.db import connection

from tests.support import database_url

from .scenario import SCENARIO_MARKS

pytestmark = SCENARIO_MARKS

# Leases short enough that the workers renew them (``LeaseKeeper``) across the
# restart and that the longer outage outlasts every lease held when it began.
LEASE_SECONDS = 4
# A clean shutdown (sessions terminated) a quarter of the way, a crash at half.
OUTAGES = ((0.25, "fast", 3.0), (0.5, "immediate", LEASE_SECONDS + 2.0))


def test_postgresql_server_stopped_and_restarted_mid_run(private_postgres, fault_cluster, chain):
    assert f":{private_postgres.port}/" in database_url()
    cluster = fault_cluster(DATABASE_URL=database_url(), BG_LEASE_SECONDS=str(LEASE_SECONDS))
    scenario = chain("pg-restart")
    for share, mode, down in OUTAGES:
        scenario.wait_for_progress(share, cluster)
        private_postgres.stop(mode)
        scenario.fault(f"PostgreSQL stopped (-m {mode}) for {down:g} s")
        time.sleep(down)
        private_postgres.start()
        # This process's own session died with the server.
        connection.close()

    scenario.finish_chain(live=[cluster])
