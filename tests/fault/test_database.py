"""The workers' database connections terminated from outside
(``pg_terminate_backend``) while runs of a four-step background chain execute
(issue 16, fault injection)."""

from __future__ import annotations

import random

from django.db import connection

from tests.fault.ledger import in_flight

from .scenario import SCENARIO_MARKS

pytestmark = SCENARIO_MARKS


def terminate_other_backends() -> int:
    """``pg_terminate_backend`` of every other session on the test database: the
    workers', the pusher's and the monitor's (not this process's own)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        return cursor.fetchone()[0]


def test_worker_database_connections_terminated_mid_run(fault_cluster, chain):
    cluster = fault_cluster()
    scenario = chain("pg-terminate")
    terminated: list[int] = []

    def cut_connections_during_a_step(_rng: random.Random) -> bool:
        if not in_flight(scenario.effects()):
            return False
        terminated.append(terminate_other_backends())
        scenario.fault("pg_terminate_backend of every worker session")
        return True

    verdict = scenario.finish_chain(scenario.paced(cut_connections_during_a_step), live=[cluster])
    assert sum(terminated) >= 1, verdict.line()
