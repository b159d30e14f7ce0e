"""From a background attempt to its queue task and worker: each attempt a qcluster
worker runs keeps the django-q2 task id and the worker's host:pid; django-q2 keeps
the task's result; the admin's history shows both and links to the task."""

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


def test_each_background_attempt_keeps_its_task_and_worker(
    qcluster, django_q_backend, effects_dir, admin_user
):
    from django_q.models import Success

    cluster = qcluster()
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
    assert Success.objects.filter(func="workflows_app.tasks.resume").exists()

    client = Client()
    client.force_login(admin_user)
    page = client.get(
        reverse("admin:workflows_app_workflowexecution_change", args=[row.pk])
    ).content.decode()
    for attempt in attempts:
        assert attempt.worker in page
        assert reverse("admin:django_q_success_change", args=[attempt.task_id]) in page
