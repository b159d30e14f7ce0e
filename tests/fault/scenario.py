"""One fault-injection scenario: start runs, inject faults while they progress, wait
(bounded) until every run finished, then judge them (``ledger.audit``)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.background.conftest import POLL_SECONDS, Cluster
from tests.fault.faultapp.workflows import CHAIN, CHAIN_STEPS
from tests.fault.ledger import Effect, Fault, Verdict, audit, read_effects
from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.status import FINISHED_STATES

RUNS_ENV = "FAULT_RUNS"
DEFAULT_RUNS = 20
# Seconds each step body of the chain sleeps, so that faults land inside bodies.
CHAIN_STEP_SECONDS = 0.3
PROGRESS_SECONDS = 120.0
# Seconds a run may take in a scenario's deadline (``finish_seconds``).
PER_RUN_SECONDS = 2.0

# Every scenario module: real qcluster processes on PostgreSQL see committed rows only.
SCENARIO_MARKS = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def runs_per_scenario() -> int:
    """How many runs each scenario starts: ``FAULT_RUNS`` (20 by default, for CI)."""
    return max(int(os.environ.get(RUNS_ENV, DEFAULT_RUNS)), 1)


class Scenario:
    """The runs of one workflow started by a test, the faults it injected, the verdict."""

    def __init__(self, name: str, workflow_id: str, effects_dir: Path) -> None:
        self.name = name
        self.workflow_id = workflow_id
        self.effects_dir = effects_dir
        self.transaction_ids: list[str] = []
        self.faults: list[Fault] = []
        self.began = time.monotonic()

    def start(self, count: int, **input: Any) -> list[str]:
        """Start ``count`` runs from this process (handed to the workers at once);
        ``input`` values that are callables get the run's number."""
        started = []
        for number in range(count):
            transaction_id = f"{self.name}-{len(self.transaction_ids):04d}"
            values = {k: (v(number) if callable(v) else v) for k, v in input.items()}
            result = workflow_engine.run(
                self.workflow_id,
                input={"dir": str(self.effects_dir), **values},
                transaction_id=transaction_id,
            )
            assert result.acknowledgement["has_finished"] is False, transaction_id
            self.transaction_ids.append(transaction_id)
            started.append(transaction_id)
        return started

    def fault(self, what: str, pids: Iterable[int] | None = None) -> Fault:
        fault = Fault(time.time(), what, None if pids is None else frozenset(pids))
        self.faults.append(fault)
        return fault

    def effects(self) -> list[Effect]:
        return read_effects(self.effects_dir)

    def unfinished(self) -> int:
        return (
            WorkflowExecution.objects.filter(
                workflow_id=self.workflow_id, transaction_id__in=self.transaction_ids
            )
            .exclude(state__in=FINISHED_STATES)
            .count()
        )

    def drive(
        self,
        seconds: float,
        tick: Callable[[], None] | None = None,
        live: Iterable[Cluster] = (),
    ) -> None:
        """Call ``tick`` (the fault injector) every poll until every run finished or
        ``seconds`` passed; fails at once if a cluster in ``live`` died."""
        live = list(live)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if tick is not None:
                tick()
            if not self.unfinished():
                return
            for cluster in live:
                if not cluster.alive():
                    pytest.fail(f"{cluster.name} died:\n{cluster.log()[-5000:]}")
            time.sleep(POLL_SECONDS * 4)

    def finish(
        self,
        expected_states: dict[str, int],
        tick: Callable[[], None] | None = None,
        live: Iterable[Cluster] = (),
    ) -> Verdict:
        """Drive (``tick`` every poll) until every run finished or the deadline of
        this many runs passed, then judge them: ``assert_clean`` with the expected
        final states."""
        self.drive(finish_seconds(len(self.transaction_ids), PER_RUN_SECONDS), tick, live)
        verdict = self.verdict()
        assert_clean(verdict, expected_states)
        return verdict

    def verdict(self) -> Verdict:
        verdict = audit(
            self.name,
            self.workflow_id,
            self.transaction_ids,
            self.effects(),
            self.faults,
            time.monotonic() - self.began,
        )
        verdict.publish()
        return verdict


class ChainScenario(Scenario):
    """``FAULT_RUNS`` runs of the four-step chain (``CHAIN_STEP_SECONDS`` a step; every
    fifth run fails in its last step and compensates)."""

    def __init__(self, name: str, effects_dir: Path) -> None:
        super().__init__(name, CHAIN, effects_dir)
        self.runs = runs_per_scenario()

    def start_runs(self) -> list[str]:
        return self.start(self.runs, sleep=CHAIN_STEP_SECONDS, fail=failing)

    def wait_for_progress(self, share: float, cluster: Cluster) -> None:
        """Block until ``share`` of the chain's invoke bodies ran to their end."""
        target = int(len(self.transaction_ids) * len(CHAIN_STEPS) * share)
        deadline = time.monotonic() + PROGRESS_SECONDS
        while self.ended_invokes() < target:
            if time.monotonic() > deadline:
                pytest.fail(f"no progress to {target} steps:\n{cluster.log()[-5000:]}")
            time.sleep(0.1)

    def ended_invokes(self) -> int:
        return sum(1 for e in self.effects() if e.kind == "invoke" and e.event == "end")

    def paced(self, inject: Callable[[random.Random], bool]) -> Callable[[], None]:
        """A tick for ``finish_chain`` that calls ``inject`` (which says whether it
        injected a fault) every 0.5-2 s, seeded by the run count, until a quarter of
        the runs (at least two) faults were injected."""
        rng = random.Random(self.runs)
        most = max(2, self.runs // 4)
        next_at = time.monotonic() + rng.uniform(0.5, 1.5)

        def tick() -> None:
            nonlocal next_at
            if len(self.faults) >= most or time.monotonic() < next_at:
                return
            if inject(rng):
                next_at = time.monotonic() + rng.uniform(0.5, 2.0)

        return tick

    def finish_chain(
        self, tick: Callable[[], None] | None = None, live: Iterable[Cluster] = ()
    ) -> Verdict:
        """``finish`` expecting every run done, except the failing ones reverted."""
        return self.finish(chain_states(self.runs), tick, live)


def failing(number: int) -> bool:
    """Every fifth run of the chain fails in its last step and compensates."""
    return number % 5 == 4


def chain_states(runs: int) -> dict[str, int]:
    """The final states of ``runs`` chain runs started with ``fail=failing``."""
    failed = sum(failing(number) for number in range(runs))
    states = {"done/COMPLETED": runs - failed, "reverted/FAILED": failed}
    return {key: count for key, count in states.items() if count}


def finish_seconds(runs: int, per_run: float) -> float:
    """A deadline for ``runs`` runs: room for one recovery sweep (a minute) and a
    lease, plus ``per_run`` seconds a run."""
    return 150.0 + runs * per_run


def assert_clean(verdict: Verdict, expected_states: dict[str, int]) -> None:
    """Every run finished in the expected states; no completed step or compensation
    ran again; every body that ran twice was hit by a fault."""
    assert verdict.lost == [], verdict.line()
    assert verdict.stuck == [], verdict.line()
    assert verdict.states == expected_states, verdict.line()
    assert verdict.completed_reruns == [], verdict.line()
    assert verdict.stored_twice == [], verdict.line()
    assert verdict.uncompensated == [], verdict.line()
    assert verdict.stray_compensations == [], verdict.line()
    assert verdict.unexplained == [], verdict.line()
