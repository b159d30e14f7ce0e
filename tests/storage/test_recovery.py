"""Recovery of executions whose worker died (SPEC 5.4, 12)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.support import PYTHON, REPO_ROOT, database_url
from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import StepResponse, create_step, create_workflow

from . import crash_workflow
from .helpers import rows, step_rows, uname


class SimulatedCrash(BaseException):
    """Not an ``Exception``: it escapes the step like a dying process would."""


def _crashing_chain(side_effects: list[int]):
    """5 kept steps; step 3 'crashes' the process (escapes ``run``) on its first call."""
    name = uname("recover")

    def make(number: int):
        def invoke(value, ctx):
            before = side_effects.count(number)
            side_effects.append(number)
            if number == 3 and before == 0:
                raise SimulatedCrash()
            return StepResponse(value + 1)

        return create_step(f"{name}-step{number}", invoke)

    steps = [make(n) for n in range(1, 6)]

    def compose(inp):
        value = inp
        for step in steps:
            value = step(value)
        return value

    create_workflow(name, compose, store=True, retention_time=3600)
    return name


@pytest.mark.django_db(transaction=True)
def test_recover_resumes_an_abandoned_execution_without_rerunning_completed_steps():
    side_effects: list[int] = []
    name = _crashing_chain(side_effects)

    with pytest.raises(SimulatedCrash):
        workflow_engine.run(name, input=0, transaction_id="crashed-1")

    [row] = rows(name)
    assert row.state in ("invoking", "not_started")
    assert row.owner != ""
    assert row.lease_expires_at is not None and row.lease_expires_at > timezone.now()
    assert [s.status for s in step_rows(row)] == ["COMPLETED", "COMPLETED"]

    # The lease is still valid: nothing to recover yet.
    assert workflow_engine.recover() == 0
    assert side_effects == [1, 2, 3]

    recovered = workflow_engine.recover(now=timezone.now() + timedelta(seconds=3600))

    assert recovered == 1
    assert side_effects == [1, 2, 3, 3, 4, 5]
    [row] = rows(name)
    assert row.state == "done"
    assert row.status == "COMPLETED"
    assert row.output_payload == 5
    assert row.owner == ""
    assert [(s.step_id.rsplit("-", 1)[-1], s.attempt) for s in step_rows(row)] == [
        ("step1", 1),
        ("step2", 1),
        ("step3", 1),
        ("step4", 1),
        ("step5", 1),
    ]
    # Nothing left to recover.
    assert workflow_engine.recover(now=timezone.now() + timedelta(seconds=7200)) == 0


@pytest.mark.django_db(transaction=True)
def test_run_of_an_abandoned_execution_with_a_live_lease_is_refused():
    from workflows_app.sdk import TransactionAlreadyStarted

    side_effects: list[int] = []
    name = _crashing_chain(side_effects)
    with pytest.raises(SimulatedCrash):
        workflow_engine.run(name, input=0, transaction_id="crashed-2")
    # Another worker (a different owner) holds the lease.
    WorkflowExecution.objects.filter(workflow_id=name).update(owner="other-host:1:abcd")

    with pytest.raises(TransactionAlreadyStarted, match="crashed-2"):
        workflow_engine.run(name, transaction_id="crashed-2")

    assert side_effects == [1, 2, 3]


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"crash worker exited early ({process.returncode}):\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("crash worker never reached step 3")
        time.sleep(0.05)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_kill_9_mid_step_then_recover_runs_each_completed_step_once(tmp_path, monkeypatch):
    side_effects = tmp_path / "side-effects.txt"
    marker = tmp_path / "in-step-3"
    monkeypatch.setenv(crash_workflow.SIDE_EFFECTS_ENV, str(side_effects))
    monkeypatch.setenv(crash_workflow.MARKER_ENV, str(marker))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database_url(),
        "PYTHONPATH": str(REPO_ROOT),
        "WORKFLOWS_BACKGROUND": "immediate",
    }
    process = subprocess.Popen(
        [str(PYTHON), str(Path(__file__).with_name("crash_worker.py")), "killed-1"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(marker, process)
        assert int(marker.read_text()) == process.pid
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert side_effects.read_text().split() == ["1", "2", "3"]

    [row] = rows(crash_workflow.WORKFLOW_NAME)
    assert row.transaction_id == "killed-1"
    assert row.state not in ("done", "failed", "reverted")
    assert row.owner != ""
    assert [(s.step_id, s.status) for s in step_rows(row)] == [
        (f"{crash_workflow.WORKFLOW_NAME}-step1", "COMPLETED"),
        (f"{crash_workflow.WORKFLOW_NAME}-step2", "COMPLETED"),
    ]

    recovered = workflow_engine.recover(now=timezone.now() + timedelta(seconds=3600))

    assert recovered == 1
    [row] = rows(crash_workflow.WORKFLOW_NAME)
    assert row.state == "done"
    assert row.status == "COMPLETED"
    assert row.output_payload == 5
    runs = side_effects.read_text().split()
    assert {n: runs.count(n) for n in "12345"} == {"1": 1, "2": 1, "3": 2, "4": 1, "5": 1}
    assert runs == ["1", "2", "3", "3", "4", "5"]
    assert len(step_rows(row)) == 5


@pytest.mark.django_db(transaction=True)
def test_an_error_inside_a_command_releases_the_run():
    from workflows_app.orchestration import InvalidTransactionStateError
    from workflows_app.storage import lease_keeper

    name = uname("released")
    calls: list[str] = []

    def answer(value, ctx):
        calls.append("answer")

    waiting = create_step(f"{name}-answer", answer, async_=True)
    create_workflow(name, lambda n: waiting(n), store=True, retention_time=600)
    workflow_engine.run(name, input=1, transaction_id="busy")

    # The command claims the run, then the orchestrator refuses it.
    with pytest.raises(InvalidTransactionStateError):
        workflow_engine.retry_compensation(name, "busy")

    [row] = rows(name)
    assert row.owner == ""
    assert row.lease_expires_at is not None and row.lease_expires_at <= timezone.now()
    assert all(handle.pk != row.pk for handle in lease_keeper._held.values())
    # The run is not "already started" elsewhere: the answer goes through at once.
    result = workflow_engine.set_step_success(
        workflow_id=name, transaction_id="busy", step_id=f"{name}-answer", response=7
    )
    assert result.acknowledgement["state"] == "done"
    assert calls == ["answer"]
