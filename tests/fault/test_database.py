"""The workers' database connections terminated from outside
(``pg_terminate_backend``) while runs of a four-step background chain execute
(issue 16, fault injection)."""

from __future__ import annotations

import random
import time

import pytest
from django.db import connection

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
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


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


def test_worker_database_connections_terminated_mid_run(fault_cluster, effects_dir):
    runs = runs_per_scenario()
    cluster = fault_cluster()
    scenario = Scenario("pg-terminate", CHAIN, effects_dir)
    scenario.start(runs, sleep=CHAIN_STEP_SECONDS, fail=failing)
    rng = random.Random(runs)
    most = max(2, runs // 4)
    next_cut = time.monotonic() + rng.uniform(0.5, 1.5)
    terminated: list[int] = []

    def cut_connections_during_a_step() -> None:
        nonlocal next_cut
        if len(scenario.faults) >= most or time.monotonic() < next_cut:
            return
        if not in_flight(scenario.effects()):
            return
        terminated.append(terminate_other_backends())
        scenario.fault("pg_terminate_backend of every worker session")
        next_cut = time.monotonic() + rng.uniform(0.5, 2.0)

    scenario.drive(finish_seconds(runs, 2.0), cut_connections_during_a_step, live=[cluster])

    verdict = scenario.verdict()
    assert_clean(verdict, chain_states(runs))
    assert sum(terminated) >= 1, verdict.line()
