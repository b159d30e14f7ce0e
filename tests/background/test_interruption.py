"""An interruption of the executor (django-q2's task timeout) is not an outcome of the
step it lands in, and recovery hands runs over to the workers (issue 16): on the
immediate backend, where a handed-over task runs at once, on SQLite and PostgreSQL.
The same with real qcluster processes is in tests/fault/test_timeout.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from tests.storage.test_long_running import _child_ends_while_the_parent_is_busy, calls, latest
from tests.support import uname
from workflows_app import tasks
from workflows_app.background import worker_interruptions
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.orchestration import ExecutorInterrupted, runtime
from workflows_app.sdk import StepResponse, create_step, create_workflow

pytestmark = pytest.mark.django_db(transaction=True)


class TaskTimeout(SystemExit):
    """Stands for django-q2's ``TimeoutException`` (also a ``SystemExit``)."""


@pytest.fixture
def interruptions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "interruptions", (TaskTimeout,))


def _chain(effects: list[str], interrupt: int | None) -> str:
    """Three stored steps with compensations; ``slow`` is interrupted by the task
    timeout on its first ``interrupt`` calls (every call if ``None``)."""
    name = uname("interrupted")

    def step(label: str):
        def invoke(value, ctx):
            effects.append(f"{label} start")
            if label == "slow" and (interrupt is None or effects.count("slow start") <= interrupt):
                raise TaskTimeout("Task exceeded maximum timeout value (2 seconds)")
            effects.append(f"{label} end")
            return StepResponse(value + 1, label)

        def compensate(data, ctx):
            effects.append(f"undo {label}")

        return create_step(f"{name}-{label}", invoke, compensate)

    fast, slow, last = step("fast"), step("slow"), step("last")
    create_workflow(name, lambda n: last(slow(fast(n))), store=True, retention_time=600)
    return name


def _interrupted_run(name: str) -> WorkflowExecution:
    with pytest.raises(ExecutorInterrupted) as raised:
        _run(name)
    assert raised.value.step_id == f"{name}-slow"
    assert isinstance(raised.value.cause, TaskTimeout)
    row = latest(name)
    # Released at once (not held until the lease runs out), nothing recorded as failed.
    assert row.state == "invoking"
    assert row.owner == ""
    assert row.lease_expires_at is not None and row.lease_expires_at <= timezone.now()
    attempts = StepExecution.objects.filter(execution=row).order_by("id")
    assert [(a.step_id.rsplit("-", 1)[-1], a.status) for a in attempts] == [("fast", "COMPLETED")]
    assert (row.context or {}).get("errors") == []
    return row


def _run(name: str) -> None:
    from workflows_app.engine import workflow_engine

    workflow_engine.run(name, input=0, transaction_id="t1")


def test_django_q2s_timeout_is_the_worker_interruption():
    from django_q.exceptions import TimeoutException

    assert worker_interruptions() == (TimeoutException,)
    assert runtime.interruptions == (TimeoutException,)


def test_without_the_hook_an_exit_in_a_step_stays_the_steps_failure():
    effects: list[str] = []
    name = _chain(effects, interrupt=1)
    from workflows_app.engine import workflow_engine

    result = workflow_engine.run(name, input=0, throw_on_error=False)
    assert str(result.transaction.state) == "reverted"
    # Compensated as a failure: what the task timeout did before the hook.
    assert effects == ["fast start", "fast end", "slow start", "undo slow", "undo fast"]


def test_an_interrupted_step_is_resumed_by_recovery_and_runs_to_its_end_once(interruptions):
    effects: list[str] = []
    name = _chain(effects, interrupt=1)
    row = _interrupted_run(name)

    # The recovery task hands the run over; the immediate backend runs the task here.
    assert tasks.recover() == 1

    row.refresh_from_db()
    assert (row.state, row.status, row.output_payload) == ("done", "COMPLETED", 3)
    assert effects == [
        *("fast start", "fast end"),
        *("slow start", "slow start", "slow end"),
        *("last start", "last end"),
    ]
    attempts = StepExecution.objects.filter(execution=row).order_by("id")
    assert [(a.step_id.rsplit("-", 1)[-1], a.attempt, a.status) for a in attempts] == [
        ("fast", 1, "COMPLETED"),
        ("slow", 1, "COMPLETED"),
        ("last", 1, "COMPLETED"),
    ]
    assert (row.recovery_failures, row.recovery_error) == (0, "")


@override_settings(WORKFLOWS={"BACKGROUND": "immediate", "MAX_RECOVERY_FAILURES": 3})
def test_a_step_that_always_outlives_the_timeout_ends_its_run_failed(interruptions):
    effects: list[str] = []
    name = _chain(effects, interrupt=None)
    row = _interrupted_run(name)

    for sweep in (1, 2):
        with pytest.raises(TaskTimeout):
            tasks.recover()
        row.refresh_from_db()
        assert (row.state, row.owner, row.recovery_failures) == ("invoking", "", sweep)
        assert row.recovery_error.startswith("ExecutorInterrupted: ")
    with pytest.raises(TaskTimeout):
        tasks.recover()

    row.refresh_from_db()
    assert (row.state, row.status, row.recovery_failures) == ("failed", "FAILED", 3)
    assert f"while step {name}-slow (invoke) ran" in row.error
    assert "Task exceeded maximum timeout value (2 seconds)" in row.error
    assert row.expires_at is not None
    # A failed run is not resumed again; no step completed twice, nothing compensated.
    assert tasks.recover() == 0
    assert effects == ["fast start", "fast end"] + ["slow start"] * 4


def test_a_hand_over_keeps_a_deadline_and_is_not_queued_twice(interruptions, monkeypatch):
    from workflows_app.engine import workflow_engine

    effects: list[str] = []
    name = _chain(effects, interrupt=None)
    row = _interrupted_run(name)
    queued: list[tuple[str, ...]] = []
    monkeypatch.setattr(runtime.scheduler, "enqueue", lambda *ids: queued.append(ids))
    later = timezone.now() + timedelta(seconds=1)

    assert workflow_engine.recover(now=later, hand_over=True) == 1
    assert queued == [(name, "t1")]
    row.refresh_from_db()
    assert row.owner == ""
    assert row.lease_expires_at > later
    # Queued and its deadline not passed: the next sweep leaves it to its task.
    assert workflow_engine.recover(now=later, hand_over=True) == 0
    # The task was lost: once the deadline passes, a sweep queues it again.
    expired = timezone.now() + timedelta(seconds=3600)
    assert workflow_engine.recover(now=expired, hand_over=True) == 1
    assert queued == [(name, "t1")] * 2
    # Nothing ran in the sweeps.
    assert effects == ["fast start", "fast end", "slow start"]


def test_a_hand_over_sweep_queues_the_completion_of_a_waiting_parent_once():
    calls.clear()
    parent_tx, child_tx = _child_ends_while_the_parent_is_busy()

    # The immediate backend runs the queued completion at once.
    assert tasks.recover() == 1

    parent = latest("lr-parent-flow")
    assert (parent.transaction_id, parent.state) == (parent_tx, "done")
    assert parent.output_payload == {"approved": True}
    assert calls == ["prepare", "approve asked", "finish"]
    assert tasks.recover() == 0
    assert tasks.complete_parent("lr-child-flow", child_tx) == "nothing to do"
    calls.clear()


@override_settings(WORKFLOWS={"BACKGROUND": "immediate", "MAX_RECOVERY_FAILURES": 3})
def test_a_resume_that_goes_through_resets_the_count(interruptions):
    effects: list[str] = []
    name = _chain(effects, interrupt=2)
    row = _interrupted_run(name)
    with pytest.raises(TaskTimeout):
        tasks.recover()
    row.refresh_from_db()
    assert row.recovery_failures == 1

    assert tasks.recover() == 1

    row.refresh_from_db()
    assert (row.state, row.recovery_failures, row.recovery_error) == ("done", 0, "")
    assert effects.count("slow start") == 3
    assert effects.count("slow end") == 1
