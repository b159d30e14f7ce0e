"""The django-q2 backend without a worker: what it writes to the queue and schedules,
the hand-over of a run to a worker, recovery of runs whose process died, and the
``workflows setup`` command. The worker side is in tests/background (real qcluster)."""

import datetime
import io
import socket
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from workflows_app.background import DjangoQScheduler, ImmediateScheduler, Recurrence, schedule_name
from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.orchestration import runtime
from workflows_app.orchestration.clock import Clock
from workflows_app.sdk import StepResponse, create_step, create_workflow
from workflows_app.testing import advance
from workflows_app.worker import on_worker_start

pytestmark = pytest.mark.django_db

ran: list[str] = []


def _work(value, ctx):
    ran.append(ctx.step_name)
    return StepResponse(value)


first_step = create_step("bgq-first", _work)
background_step = create_step("bgq-background", _work, async_=True, background_execution=True)


@create_workflow("bgq-flow", store=True, retention_time=3600)
def flow(input):
    return background_step(first_step(input))


@create_workflow("bgq-odd-interval", schedule={"interval": 90})
def odd_interval(input):
    return first_step(input)


@pytest.fixture(autouse=True)
def _clear_ran():
    ran.clear()


def test_the_backend_follows_the_setting(settings):
    assert isinstance(runtime.scheduler, ImmediateScheduler)
    settings.WORKFLOWS = {**settings.WORKFLOWS, "BACKGROUND": "django_q"}
    assert isinstance(runtime.scheduler, DjangoQScheduler)


def test_a_run_reaching_a_background_step_is_queued_for_a_worker(django_q_backend):
    res = workflow_engine.run("bgq-flow", input=1)

    assert str(res.transaction.state) == "invoking"
    assert ran == ["bgq-first"]
    execution = WorkflowExecution.objects.get(transaction_id=res.transaction.transaction_id)
    assert execution.state == "invoking"
    assert execution.owner == ""
    # No worker took it yet: recovery would after the lease.
    assert execution.lease_expires_at > timezone.now()
    queued = [task.task for task in OrmQ.objects.all()]
    assert [(t["func"], t["args"]) for t in queued] == [
        ("workflows_app.tasks.resume", ("bgq-flow", res.transaction.transaction_id))
    ]

    # What the worker's task does:
    from workflows_app import tasks

    assert tasks.resume("bgq-flow", res.transaction.transaction_id) == "done"
    assert ran == ["bgq-first", "bgq-background"]
    execution.refresh_from_db()
    assert execution.state == "done"
    assert tasks.resume("bgq-flow", res.transaction.transaction_id) == "idle"


def test_queued_tasks_ask_django_q_to_save_successes_only_with_the_setting(
    django_q_backend, settings
):
    django_q_backend.enqueue("bgq-flow", "t-default")
    settings.WORKFLOWS = {**settings.WORKFLOWS, "SAVE_TASK_RESULTS": True}
    django_q_backend.enqueue("bgq-flow", "t-saved")

    saves = {task.task["args"][1]: task.task["save"] for task in OrmQ.objects.all()}
    assert saves == {"t-default": False, "t-saved": True}


def test_tasks_started_by_the_apps_schedules_are_saved_as_queued_tasks_are(
    django_q_backend, settings, monkeypatch
):
    """django-q2's scheduler starts the due schedules' tasks with the schedules'
    ``q_options``: a delayed resume and a recurring job follow SAVE_TASK_RESULTS."""
    from django_q import scheduler as django_q_scheduler
    from django_q.brokers import get_broker

    # It closes the connections of a finished request first: this test has only one.
    monkeypatch.setattr(django_q_scheduler, "close_old_django_connections", lambda: None)

    django_q_backend.schedule("bgq-flow", "t-later", 30, "retry:bgq-flow:t-later:bgq-first")
    django_q_backend.repeat(
        "workflows:cleanup",
        "workflows_app.tasks.clear_expired_executions",
        (),
        Recurrence(every=60),
    )
    settings.WORKFLOWS = {**settings.WORKFLOWS, "SAVE_TASK_RESULTS": True}
    django_q_backend.schedule("bgq-flow", "t-saved", 30, "retry:bgq-flow:t-saved:bgq-first")
    Schedule.objects.update(next_run=timezone.now() - datetime.timedelta(seconds=1))

    django_q_scheduler.scheduler(broker=get_broker())

    saves = {
        task.task["func"] + str(task.task["args"]): task.task["save"] for task in OrmQ.objects.all()
    }
    assert saves["workflows_app.tasks.resume('bgq-flow', 't-later')"] is False
    assert saves["workflows_app.tasks.resume('bgq-flow', 't-saved')"] is True
    assert saves["workflows_app.tasks.clear_expired_executions()"] is False


def test_the_enqueue_rolls_back_with_the_hand_over(django_q_backend):
    with pytest.raises(RuntimeError), transaction.atomic():
        workflow_engine.run("bgq-flow", input=1)
        assert OrmQ.objects.count() == 1
        raise RuntimeError("the caller's transaction fails")

    assert OrmQ.objects.count() == 0
    assert not WorkflowExecution.objects.filter(workflow_id="bgq-flow").exists()


def test_delays_are_once_schedules_replaced_by_key_and_cleared(django_q_backend):
    django_q_backend.schedule("bgq-flow", "t1", 30, "retry:bgq-flow:t1:bgq-first")
    django_q_backend.schedule("bgq-flow", "t1", 60, "retry:bgq-flow:t1:bgq-first")

    row = Schedule.objects.get(name="retry:bgq-flow:t1:bgq-first")
    assert row.schedule_type == Schedule.ONCE
    assert row.func == "workflows_app.tasks.resume"
    assert row.args == "('bgq-flow', 't1')"
    assert row.next_run > timezone.now() + datetime.timedelta(seconds=55)

    django_q_backend.clear("retry:bgq-flow:t1:bgq-first")
    assert not Schedule.objects.filter(name="retry:bgq-flow:t1:bgq-first").exists()


def test_long_keys_are_hashed_to_fit_the_schedule_name():
    key = "retry_awaiting:" + "w" * 80 + ":" + "t" * 40 + ":step"
    name = schedule_name(key)
    assert len(name) == 100
    assert name != schedule_name(key + "x")
    assert schedule_name("short") == "short"


def test_setup_creates_django_q_schedules(django_q_backend, settings):
    settings.WORKFLOWS = {**settings.WORKFLOWS, "RECOVERY_INTERVAL_SECONDS": 120}
    from workflows_app.sdk.registry import registry

    odd = registry.workflows.pop("bgq-odd-interval")
    try:
        done = dict(workflow_engine.setup_schedules())
    finally:
        registry.workflows["bgq-odd-interval"] = odd

    assert done["workflows:cleanup"] == "created"
    cleanup = Schedule.objects.get(name="workflows:cleanup")
    assert (cleanup.schedule_type, cleanup.minutes) == (Schedule.MINUTES, 30)
    assert cleanup.func == "workflows_app.tasks.clear_expired_executions"
    recovery = Schedule.objects.get(name="workflows:recover")
    assert (recovery.schedule_type, recovery.minutes) == (Schedule.MINUTES, 2)
    registry.workflows.pop("bgq-odd-interval")
    try:
        again = dict(workflow_engine.setup_schedules())
    finally:
        registry.workflows["bgq-odd-interval"] = odd
    assert again["workflows:cleanup"] == "unchanged"


def test_setup_refuses_an_interval_django_q_cannot_express(django_q_backend):
    with pytest.raises(CommandError, match="90 s cannot be a django-q2 schedule"):
        call_command("workflows", "setup")


def test_setup_command_prints_what_it_did(capsys):
    call_command("workflows", "setup")
    out = capsys.readouterr().out
    assert "created    workflows:schedule:bgq-odd-interval" in out
    assert "created    workflows:cleanup" in out
    assert "(immediate backend)" in out
    call_command("workflows", "setup")
    assert "updated    workflows:cleanup" in capsys.readouterr().out


def test_scheduled_runs_on_the_immediate_clock_use_seconds():
    workflow_engine.setup_schedules()
    advance(90 * 2 + 1)
    assert ran.count("bgq-first") == 2


def test_the_virtual_clock_reaches_each_moment_it_is_moved_to_and_never_goes_back():
    virtual = Clock()
    start = virtual.now()
    # Differences that do not add up exactly in floating point.
    moments = [start + 0.1 + k / 7 + k * 1e-7 for k in range(200)]
    for moment in moments:
        virtual.advance_to(moment)
        assert virtual.now() >= moment
    offset = virtual.offset
    virtual.advance_to(start)
    assert virtual.offset == offset


def test_a_worker_start_queues_a_recovery_sweep_and_starts_the_tick(django_q_backend, monkeypatch):
    ticks = []
    # The tick thread itself would outlive the test; the qcluster tests run it for real.
    monkeypatch.setattr("workflows_app.worker.start_ticker", ticks.append)

    on_worker_start(sender="django_q", proc_name="Process-1")

    funcs = [task.task["func"] for task in OrmQ.objects.all()]
    assert funcs == ["workflows_app.tasks.recover"]
    assert ticks == [1.0]


def test_recovery_takes_over_a_run_whose_process_is_gone(django_q_backend):
    res = workflow_engine.run("bgq-flow", input=2)
    tx_id = res.transaction.transaction_id
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # As if that process had claimed the run and was killed mid-step: its lease is
    # still valid, but its pid is gone.
    WorkflowExecution.objects.filter(transaction_id=tx_id).update(
        owner=f"{socket.gethostname()}:{dead.pid}:abc",
        lease_expires_at=timezone.now() + datetime.timedelta(minutes=10),
    )

    assert workflow_engine.recover() == 1

    assert WorkflowExecution.objects.get(transaction_id=tx_id).state == "done"
    assert ran == ["bgq-first", "bgq-background"]


def test_the_recover_command_hands_runs_to_the_workers(django_q_backend):
    res = workflow_engine.run("bgq-flow", input=3)
    tx_id = res.transaction.transaction_id
    OrmQ.objects.all().delete()  # the hand-over's task was lost
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    WorkflowExecution.objects.filter(transaction_id=tx_id).update(
        owner=f"{socket.gethostname()}:{dead.pid}:abc",
        lease_expires_at=timezone.now() + datetime.timedelta(minutes=10),
    )

    call_command("workflows", "recover", stdout=(out := io.StringIO()))

    assert out.getvalue() == "Handed 1 workflow executions to the workers.\n"
    # Nothing ran in the command: the run is queued, unowned, with a lease deadline
    # so that a lost task is recovered again.
    assert ran == ["bgq-first"]
    execution = WorkflowExecution.objects.get(transaction_id=tx_id)
    assert (execution.state, execution.owner) == ("invoking", "")
    assert execution.lease_expires_at > timezone.now()
    [task] = [task.task for task in OrmQ.objects.all()]
    assert (task["func"], task["args"]) == ("workflows_app.tasks.resume", ("bgq-flow", tx_id))

    # What the worker then does.
    from workflows_app.tasks import resume

    assert resume(*task["args"]) == "done"
    assert ran == ["bgq-first", "bgq-background"]


def test_recovery_leaves_a_live_owner_alone(django_q_backend):
    res = workflow_engine.run("bgq-flow", input=2)
    tx_id = res.transaction.transaction_id
    WorkflowExecution.objects.filter(transaction_id=tx_id).update(
        owner=f"{socket.gethostname()}:1:abc",
        lease_expires_at=timezone.now() + datetime.timedelta(minutes=10),
    )

    assert workflow_engine.recover() == 0
    assert WorkflowExecution.objects.get(transaction_id=tx_id).state == "invoking"


@override_settings(Q_CLUSTER={"name": "x", "orm": "default", "timeout": 60, "retry": 30})
def test_the_retry_timeout_check_still_warns():
    from workflows_app.checks import check_q_cluster

    assert "workflows_app.W001" in [m.id for m in check_q_cluster()]
