"""From a background attempt to its queue task and worker: each attempt a qcluster
worker runs keeps the django-q2 task id and the worker's host:pid. django-q2 saves a
task that failed, and a success only with ``WORKFLOWS["SAVE_TASK_RESULTS"]``; the
admin's history shows the worker and links to the saved task."""

from __future__ import annotations

import os
import socket

import pytest
from django.test import Client
from django.urls import reverse

from tests.background.bgapp import workflows as bg

from .test_qcluster import start, wait_finished, wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

RESUME = "workflows_app.tasks.resume"
# django-q2's task timeout in the test of failed tasks: it interrupts step 2 of the
# crash workflow, which sleeps far longer on its first attempt.
TASK_TIMEOUT = 2


def history_page(admin_user, row) -> str:
    client = Client()
    client.force_login(admin_user)
    url = reverse("admin:workflows_app_workflowexecution_change", args=[row.pk])
    return client.get(url).content.decode()


def monitor_processed(cluster, task_id: str) -> bool:
    """Whether django-q2's monitor is done with the successful task ``task_id``: it
    logs the task by name (the humanised id) after saving it, or not saving it."""
    from django_q.humanhash import humanize

    return f"Processed '{RESUME}' ({humanize(task_id)})" in cluster.log()


def test_each_background_attempt_keeps_its_task_and_worker(
    qcluster, django_q_backend, effects_dir, admin_user, settings
):
    from django_q.models import Success

    # Successes saved for the runs this process hands over and for the workers' tasks.
    settings.WORKFLOWS = {**settings.WORKFLOWS, "SAVE_TASK_RESULTS": True}
    cluster = qcluster(BG_SAVE_TASK_RESULTS="1")
    start(bg.THREE_STEPS, "bg-task-links", effects_dir)
    row = wait_finished(bg.THREE_STEPS, "bg-task-links", [cluster])
    assert row.state == "done"

    pids = {step: pid for _tx, step, _a, pid, _t in bg.read_effects(effects_dir)}
    attempts = list(row.step_executions.filter(handler_type="invoke").order_by("started_at"))
    assert len(attempts) == 3
    host = socket.gethostname()
    for attempt in attempts:
        step = attempt.step_id.rsplit("-", 1)[-1]
        # The worker process that ran the step body, not this test process.
        assert attempt.worker == f"{host}:{pids[step]}"
        assert attempt.worker != f"{host}:{os.getpid()}"
        assert attempt.task_id
    # django-q2 kept the results of the workflow's tasks ("Successful tasks"); its
    # monitor saves a result just after the task returned.
    task_ids = {a.task_id for a in attempts}
    wait_until(
        lambda: Success.objects.filter(id__in=task_ids).count() == len(task_ids),
        [cluster],
        "the task results to be saved",
        30.0,
    )
    assert Success.objects.filter(func=RESUME).exists()

    page = history_page(admin_user, row)
    for attempt in attempts:
        assert attempt.worker in page
        assert reverse("admin:django_q_success_change", args=[attempt.task_id]) in page


def test_by_default_a_success_is_not_saved_and_a_failed_task_is_linked(
    qcluster, django_q_backend, effects_dir, admin_user
):
    from django_q.models import Failure, Task

    cluster = qcluster(BG_Q_TIMEOUT=str(TASK_TIMEOUT))

    # A run whose task succeeds: its attempts keep the task id, django-q2 saves nothing.
    start(bg.THREE_STEPS, "bg-unsaved", effects_dir)
    plain = wait_finished(bg.THREE_STEPS, "bg-unsaved", [cluster])
    assert plain.state == "done"
    plain_tasks = set(plain.step_executions.values_list("task_id", flat=True))
    assert "" not in plain_tasks

    # A run whose first task fails: step 2 outlives the task timeout, the task ends
    # with django-q2's TimeoutException. The worker that replaces the interrupted one
    # queues a recovery sweep, whose resume (a second task) finishes the run.
    start(bg.CRASH, "bg-failed-task", effects_dir)
    crashed = wait_finished(bg.CRASH, "bg-failed-task", [cluster])
    assert crashed.state == "done", crashed.error
    attempts = {
        a.step_id.rsplit("-", 1)[-1]: a
        for a in crashed.step_executions.filter(handler_type="invoke")
    }
    # The interrupted attempt of s2 left no row; s1 ran in the failed task.
    assert sorted(attempts) == ["s1", "s2", "s3"]
    failed_task = attempts["s1"].task_id
    resumed_task = attempts["s2"].task_id
    assert failed_task and resumed_task and resumed_task != failed_task
    assert attempts["s3"].task_id == resumed_task

    failure = wait_until(
        lambda: Failure.objects.filter(id=failed_task).first(),
        [cluster],
        "the failed task to be saved",
        30.0,
    )
    assert failure.func == RESUME
    assert "timeout" in str(failure.result)

    succeeded = plain_tasks | {resumed_task}
    for task_id in succeeded:
        wait_until(
            lambda task_id=task_id: monitor_processed(cluster, task_id),
            [cluster],
            f"django-q2's monitor to process task {task_id}",
            30.0,
        )
    assert not Task.objects.filter(id__in=succeeded).exists()
    assert not Task.objects.filter(func=RESUME, success=True).exists()

    # The attempt that ran in the failed task links to it; the others show their
    # worker but link nowhere (the admin's menu links to the lists, not to a task).
    page = history_page(admin_user, crashed)
    assert reverse("admin:django_q_failure_change", args=[failed_task]) in page
    assert attempts["s2"].worker in page
    pages = page + history_page(admin_user, plain)
    for task_id in succeeded:
        assert task_id in pages
        assert reverse("admin:django_q_success_change", args=[task_id]) not in pages
        assert reverse("admin:django_q_failure_change", args=[task_id]) not in pages
