"""Two processes answer one waiting step at the same moment (issue 16, fault
injection): one answer takes effect, the run goes on once. An answer given while a
worker holds the run, busy in another branch, is recorded and applied when that
worker releases the run."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.fault.faultapp.workflows import APPROVE, APPROVE_BUSY, APPROVE_STEPS
from tests.fault.ledger import ends, in_flight
from tests.support import PYTHON, REPO_ROOT, database_url
from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution

from .scenario import Scenario, assert_clean, finish_seconds, runs_per_scenario

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

READY_SECONDS = 60.0
# Answers planned this far apart; the first one this long after the plan is written.
ANSWER_SPACING = 0.25
ANSWER_LEAD = 2.0


def _answerer(name: str, plan: Path, out: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.fault.settings",
        "DATABASE_URL": database_url(),
        "WORKFLOWS_BACKGROUND": "django_q",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("REDIS_URL", None)
    return subprocess.Popen(
        [str(PYTHON), "-m", "tests.fault.answer", name, str(plan), str(out)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=out.with_suffix(".log").open("wb"),
    )


def _wait_for(what: str, predicate, seconds: float, processes=()) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"an answering process exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(0.1)


def test_two_processes_answer_one_waiting_step(fault_cluster, effects_dir, tmp_path):
    runs = runs_per_scenario()
    cluster = fault_cluster()
    scenario = Scenario("two-answers", APPROVE, effects_dir)
    transaction_ids = scenario.start(runs, sleep=0.05)
    plan = tmp_path / "plan.json"
    outs = {name: tmp_path / f"answers-{name}.txt" for name in ("A", "B")}
    waiting = StepExecution.objects.filter(
        execution__workflow_id=APPROVE,
        execution__transaction_id__in=transaction_ids,
        step_id=f"{APPROVE}-approve",
        status="WAITING",
    )
    ready_seconds = READY_SECONDS + runs * 0.5
    _wait_for("every run to wait", lambda: waiting.count() == runs, ready_seconds)
    answerers = [_answerer(name, plan, out) for name, out in outs.items()]
    try:
        ready = [out.with_suffix(".ready") for out in outs.values()]
        _wait_for("the answering processes", lambda: all(map(Path.exists, ready)), 60, answerers)
        first = time.time() + ANSWER_LEAD
        moments = [
            [first + i * ANSWER_SPACING, APPROVE, tx, f"{APPROVE}-approve"]
            for i, tx in enumerate(transaction_ids)
        ]
        plan.with_suffix(".tmp").write_text(json.dumps(moments))
        plan.with_suffix(".tmp").rename(plan)
        scenario.drive(finish_seconds(runs, 2.0), live=[cluster])
        for process in answerers:
            process.wait(timeout=60)
    finally:
        for process in answerers:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    verdict = scenario.verdict()
    assert_clean(verdict, {"done/COMPLETED": runs})
    assert [p.returncode for p in answerers] == [0, 0]
    outcomes = {name: {} for name in outs}
    for name, out in outs.items():
        for line in out.read_text().splitlines():
            tx, outcome, _at = line.split()
            outcomes[name][tx] = outcome
    # "recorded": a worker held the run (still storing the wait); the answer waited on
    # the row. Never "TransactionAlreadyStarted": an answer is no longer turned away.
    won = {"ok", "recorded"}
    allowed = {*won, "InvalidStepStateError"}
    rows = dict(
        WorkflowExecution.objects.filter(
            workflow_id=APPROVE, transaction_id__in=transaction_ids
        ).values_list("transaction_id", "output_payload")
    )
    counts = ends(scenario.effects())
    for tx in transaction_ids:
        given = {name: outcomes[name][tx] for name in outs}
        assert set(given.values()) <= allowed, (tx, given)
        # Exactly one answer won; the other was told the step was already answered.
        assert sorted(outcome in won for outcome in given.values()) == [False, True], given
        # The answer that took effect is the one told so; the run went on once.
        assert given[rows[tx]["answer"]["by"]] in won, (tx, given, rows[tx])
        assert [counts[(tx, step, "invoke")] for step in APPROVE_STEPS] == [1, 1, 1], tx


BUSY_SECONDS = 3.0
START_BATCH = 5


def test_an_answer_while_the_worker_is_busy_in_another_branch_is_applied(
    fault_cluster, effects_dir
):
    runs = runs_per_scenario()
    cluster = fault_cluster()
    scenario = Scenario("answer-busy", APPROVE_BUSY, effects_dir)
    answered: dict[str, tuple[float, bool]] = {}

    def answer_runs_whose_worker_is_busy() -> None:
        for busy in in_flight(scenario.effects()):
            if busy.step != "hold" or busy.attempt != 2 or busy.tx in answered:
                continue
            at = time.time()
            result = workflow_engine.set_step_success(
                workflow_id=APPROVE_BUSY,
                transaction_id=busy.tx,
                step_id=f"{APPROVE_BUSY}-answer",
                response={"by": busy.tx},
            )
            answered[busy.tx] = (at, bool(result.acknowledgement.get("answer_recorded")))

    # Starting many runs takes longer than one "hold": answer between small batches of
    # starts, so that no run's hold ends before anyone looked for it.
    transaction_ids: list[str] = []
    while len(transaction_ids) < runs:
        batch = min(START_BATCH, runs - len(transaction_ids))
        transaction_ids += scenario.start(batch, long=BUSY_SECONDS)
        answer_runs_whose_worker_is_busy()
    scenario.drive(finish_seconds(runs, 2.0), answer_runs_whose_worker_is_busy, live=[cluster])

    verdict = scenario.verdict()
    assert_clean(verdict, {"done/COMPLETED": runs})
    assert sorted(answered) == sorted(transaction_ids), verdict.line()
    effects = scenario.effects()
    hold_ended = {e.tx: e.at for e in effects if (e.step, e.attempt, e.event) == ("hold", 2, "end")}
    for tx, (at, recorded) in answered.items():
        # Answered while the worker ran "hold" for the run: recorded, not applied here.
        assert at < hold_ended[tx] and recorded, (tx, at, hold_ended[tx], recorded)
    counts = ends(effects)
    for tx in transaction_ids:
        assert [counts[(tx, step, "invoke")] for step in ("answer", "hold", "close")] == [1, 1, 1]
    outputs = dict(
        WorkflowExecution.objects.filter(
            workflow_id=APPROVE_BUSY, transaction_id__in=transaction_ids
        ).values_list("transaction_id", "output_payload")
    )
    assert {tx: out["answer"] for tx, out in outputs.items()} == {
        tx: {"by": tx} for tx in transaction_ids
    }
