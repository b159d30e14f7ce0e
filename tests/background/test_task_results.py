"""django-q2's saved task results: with ``save_limit`` 0 its monitor keeps every
success it saves (the app's tasks with ``WORKFLOWS["SAVE_TASK_RESULTS"]``, tasks of
schedules) without reading the kept ones per task, and the app's cleanup schedule
deletes those older than ``WORKFLOWS["TASK_RESULT_RETENTION_DAYS"]`` in one
statement, here run by a real qcluster worker."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.background.bgapp import workflows as bg
from workflows_app.background import prune_task_results

from .test_qcluster import start, wait_finished, wait_until

pytestmark = [pytest.mark.django_db(transaction=True)]


def _task(name: str, stopped: datetime.datetime, success: bool = True):
    from django_q.models import Task

    return Task.objects.create(
        id=name,
        name=name,
        func="workflows_app.tasks.resume",
        started=stopped,
        stopped=stopped,
        success=success,
        result="done",
    )


def test_prune_deletes_old_successes_in_one_statement():
    from django_q.models import Task

    now = timezone.now()
    _task("old-success", now - datetime.timedelta(days=8))
    _task("new-success", now - datetime.timedelta(days=6))
    _task("old-failure", now - datetime.timedelta(days=8), success=False)

    with CaptureQueriesContext(connection) as captured:
        assert prune_task_results(7, now=now) == 1
    sqls = [q["sql"].upper() for q in captured.captured_queries]
    statements = [
        sql for sql in sqls if not sql.startswith(("BEGIN", "SAVEPOINT", "RELEASE", "COMMIT"))
    ]
    assert len(statements) == 1 and statements[0].startswith("DELETE"), sqls
    assert not any(sql.startswith("SELECT") for sql in sqls), sqls
    assert sorted(Task.objects.values_list("id", flat=True)) == ["new-success", "old-failure"]
    assert prune_task_results(None, now=now) == 0


@pytest.mark.postgres
@pytest.mark.slow
def test_a_worker_keeps_results_and_the_cleanup_task_prunes_old_ones(
    qcluster, django_q_backend, effects_dir, settings
):
    from django_q.models import Success
    from django_q.tasks import async_task

    assert settings.Q_CLUSTER["save_limit"] == 0
    # Successes saved for the runs this process hands over and the workers' tasks.
    settings.WORKFLOWS = {**settings.WORKFLOWS, "SAVE_TASK_RESULTS": True}
    # The worker's retention is the default, 7 days.
    cluster = qcluster(BG_SAVE_TASK_RESULTS="1")
    for number in range(3):
        start(bg.THREE_STEPS, f"bg-results-{number}", effects_dir)
    for number in range(3):
        assert wait_finished(bg.THREE_STEPS, f"bg-results-{number}", [cluster]).state == "done"
    # One task per run (its worker runs the three steps), none pruned by django-q2.
    wait_until(lambda: Success.objects.count() >= 3, [cluster], "the results", 30.0)
    kept = set(Success.objects.values_list("id", flat=True))
    old = sorted(kept)[:2]
    Success.objects.filter(id__in=old).update(stopped=timezone.now() - datetime.timedelta(days=8))

    cleanup = "workflows_app.tasks.clear_expired_executions"
    async_task(cleanup, save=True)
    wait_until(
        lambda: Success.objects.filter(func=cleanup).exists(),
        [cluster],
        "the cleanup task to run",
        30.0,
    )
    remaining = set(Success.objects.values_list("id", flat=True))
    assert not remaining & set(old)
    assert kept - set(old) <= remaining
