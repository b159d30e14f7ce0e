"""Background steps, retries and kill -9 recovery through real qcluster workers (SPEC 6,
5.4), on PostgreSQL with the ORM broker, and once with Redis."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Count

from tests.background.bgapp import workflows as bg
from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.status import FINISHED_STATES

from .conftest import POLL_SECONDS, Cluster, use_redis_broker

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

# Not 15: another suite on this machine may flush that one.
REDIS_DB = int(os.environ.get("BG_REDIS_DB", "14"))
FINISH_SECONDS = 60.0


def wait_until(
    predicate: Callable[[], Any], clusters: Iterable[Cluster], what: str, seconds: float
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail (with the cluster
    logs) on the deadline or when a cluster dies."""
    clusters = list(clusters)
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        for cluster in clusters:
            if not cluster.alive():
                pytest.fail(f"{cluster.name} died while waiting for {what}:\n{cluster.log()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {c.name}\n{c.log()[-5000:]}" for c in clusters)
            pytest.fail(f"timed out after {seconds:g} s waiting for {what}\n{logs}")
        time.sleep(POLL_SECONDS)


def execution(workflow_id: str, transaction_id: str) -> WorkflowExecution:
    return WorkflowExecution.objects.get(workflow_id=workflow_id, transaction_id=transaction_id)


def wait_finished(
    workflow_id: str, transaction_id: str, clusters: Iterable[Cluster]
) -> WorkflowExecution:
    def finished() -> WorkflowExecution | None:
        row = execution(workflow_id, transaction_id)
        return row if row.state in FINISHED_STATES else None

    return wait_until(finished, clusters, f"{transaction_id} to finish", FINISH_SECONDS)


def step_log(row: WorkflowExecution) -> list[tuple[str, int, str]]:
    """``(short step name, attempt, status)`` of the row's invoke attempts, in order."""
    steps = row.step_executions.filter(handler_type="invoke").order_by("started_at", "id")
    return [(s.step_id.rsplit("-", 1)[-1], s.attempt, s.status) for s in steps]


def start(workflow_id: str, transaction_id: str, effects_dir: Path) -> float:
    """Start a run from this process; it must be handed to the workers at once."""
    began = time.monotonic()
    result = workflow_engine.run(
        workflow_id, input={"dir": str(effects_dir)}, transaction_id=transaction_id
    )
    elapsed = time.monotonic() - began
    assert str(result.transaction.state) == "invoking"
    assert result.acknowledgement["has_finished"] is False
    return elapsed


def check_three_steps_ran_in_a_worker(
    cluster: Cluster, effects_dir: Path, transaction_id: str
) -> None:
    elapsed = start(bg.THREE_STEPS, transaction_id, effects_dir)
    # Handing over is a few statements, not three steps run inline.
    assert elapsed < 5

    row = wait_finished(bg.THREE_STEPS, transaction_id, [cluster])

    assert row.state == "done"
    assert row.status == "COMPLETED"
    assert row.output_payload == {"dir": str(effects_dir), "trail": ["s1", "s2", "s3"]}
    assert step_log(row) == [("s1", 1, "COMPLETED"), ("s2", 1, "COMPLETED"), ("s3", 1, "COMPLETED")]
    effects = bg.read_effects(effects_dir)
    assert [(tx, step, attempt) for tx, step, attempt, _pid, _t in effects] == [
        (transaction_id, "s1", 1),
        (transaction_id, "s2", 1),
        (transaction_id, "s3", 1),
    ]
    # Every step body ran in a worker of the cluster, none in this process.
    assert all(os.getpgid(pid) == cluster.pgid for _tx, _s, _a, pid, _t in effects)


def test_background_steps_run_in_the_worker(qcluster, django_q_backend, effects_dir):
    cluster = qcluster()
    check_three_steps_ran_in_a_worker(cluster, effects_dir, "bg-orm-1")


def test_a_failed_step_is_retried_by_the_worker_after_its_interval(
    qcluster, django_q_backend, effects_dir
):
    from django_q.models import Schedule

    cluster = qcluster()
    start(bg.RETRY_ONCE, "bg-retry-1", effects_dir)

    row = wait_finished(bg.RETRY_ONCE, "bg-retry-1", [cluster])

    assert row.state == "done", row.error
    assert step_log(row) == [
        ("first", 1, "COMPLETED"),
        ("flaky", 1, "FAILED"),
        ("flaky", 2, "COMPLETED"),
    ]
    failed, completed = row.step_executions.filter(step_id__endswith="-flaky").order_by("attempt")
    assert "fails on its first attempt" in failed.error["message"]
    gap = (completed.started_at - failed.started_at).total_seconds()
    # retry_interval=2; the worker's schedule tick (1 s) fires it soon after.
    assert 2.0 <= gap < 10.0, gap
    flaky = [(a, t) for _tx, step, a, _pid, t in bg.read_effects(effects_dir) if step == "flaky"]
    assert [a for a, _t in flaky] == [1, 2]
    # The ONCE schedule that carried the retry is gone once it fired.
    assert not Schedule.objects.filter(name__contains="bg-retry-1").exists()


def test_kill_9_of_the_cluster_mid_step_then_a_new_cluster_finishes_the_run(
    qcluster, django_q_backend, effects_dir
):
    first = qcluster()
    start(bg.CRASH, "bg-crash-1", effects_dir)
    started = effects_dir / bg.STARTED_FILE
    wait_until(started.exists, [first], "step 2 to start", FINISH_SECONDS)
    worker_pid = int(wait_until(started.read_text, [first], "step 2's pid", 5))
    assert os.getpgid(worker_pid) == first.pgid

    first.kill()

    assert first.process.returncode == -signal.SIGKILL
    row = execution(bg.CRASH, "bg-crash-1")
    assert row.state not in FINISHED_STATES
    assert [(s, st) for s, _a, st in step_log(row) if st == "COMPLETED"] == [("s1", "COMPLETED")]
    assert Counter(step for _tx, step, *_ in bg.read_effects(effects_dir)) == {"s1": 1, "s2": 1}

    second = qcluster()
    row = wait_finished(bg.CRASH, "bg-crash-1", [second])

    assert row.state == "done", row.error
    assert row.output_payload["trail"] == ["s1", "s2", "s3"]
    effects = bg.read_effects(effects_dir)
    runs = Counter(step for _tx, step, *_ in effects)
    assert runs["s1"] == 1
    assert runs["s3"] == 1
    # The step in flight runs again (at least once): its killed attempt never ended.
    assert runs["s2"] == 2
    # Completed steps never ran again; what ran after the kill ran in the new cluster.
    completed = [s for s, _a, st in step_log(row) if st == "COMPLETED"]
    assert completed == ["s1", "s2", "s3"]
    after_kill = [(step, pid) for _tx, step, _a, pid, _t in effects[2:]]
    assert [step for step, _pid in after_kill] == ["s2", "s3"]
    assert all(os.getpgid(pid) == second.pgid for _step, pid in after_kill)


def test_an_async_step_waits_in_the_caller_and_background_steps_still_run_in_the_worker(
    qcluster, django_q_backend, effects_dir
):
    cluster = qcluster()
    transaction_id = "bg-approval-1"
    result = workflow_engine.run(
        bg.APPROVAL, input={"dir": str(effects_dir)}, transaction_id=transaction_id
    )

    # The async step's handler ran here, in run(), and the step waits.
    assert str(result.transaction.state) == "invoking"
    row = execution(bg.APPROVAL, transaction_id)
    assert step_log(row) == [("first", 1, "COMPLETED"), ("ask", 1, "WAITING")]
    here = [(step, pid) for _tx, step, _a, pid, _t in bg.read_effects(effects_dir)]
    assert here == [("first", os.getpid()), ("ask", os.getpid())]

    answered = workflow_engine.set_step_success(
        workflow_id=bg.APPROVAL,
        transaction_id=transaction_id,
        step_id=f"{bg.APPROVAL}-ask",
        response={"approved": True},
    )

    # The next step is a background step: the answer hands the run to the worker.
    assert str(answered.transaction.state) == "invoking"
    row = wait_finished(bg.APPROVAL, transaction_id, [cluster])
    assert row.state == "done", row.error
    assert step_log(row) == [
        ("first", 1, "COMPLETED"),
        ("ask", 1, "COMPLETED"),
        ("charge", 1, "COMPLETED"),
        ("last", 1, "COMPLETED"),
    ]
    effects = bg.read_effects(effects_dir)
    assert [step for _tx, step, *_ in effects] == ["first", "ask", "charge", "last"]
    in_worker = [pid for _tx, step, _a, pid, _t in effects if step in ("charge", "last")]
    assert all(os.getpgid(pid) == cluster.pgid for pid in in_worker)
    assert os.getpid() not in in_worker


def test_two_clusters_share_one_queue_without_running_a_step_twice(
    qcluster, django_q_backend, effects_dir
):
    clusters = [qcluster(), qcluster()]
    transaction_ids = [f"bg-many-{i:03d}" for i in range(100)]
    for transaction_id in transaction_ids:
        start(bg.THREE_STEPS, transaction_id, effects_dir)

    def all_finished() -> bool:
        return (
            not WorkflowExecution.objects.filter(
                workflow_id=bg.THREE_STEPS, transaction_id__in=transaction_ids
            )
            .exclude(state__in=FINISHED_STATES)
            .exists()
        )

    wait_until(all_finished, clusters, "100 runs to finish", 120)

    rows = WorkflowExecution.objects.filter(workflow_id=bg.THREE_STEPS)
    assert rows.count() == 100
    assert set(rows.values_list("state", flat=True)) == {"done"}
    effects = bg.read_effects(effects_dir)
    done = Counter((tx, step) for tx, step, *_ in effects)
    assert len(done) == 300
    assert [key for key, count in done.items() if count > 1] == []
    assert {attempt for _tx, _step, attempt, _pid, _t in effects} == {1}
    steps = StepExecution.objects.filter(execution__workflow_id=bg.THREE_STEPS)
    assert steps.count() == 300
    assert set(steps.values_list("status", "attempt")) == {("COMPLETED", 1)}
    duplicates = (
        steps.values("execution_id", "step_path", "handler_type", "attempt", "iteration")
        .annotate(rows=Count("id"))
        .filter(rows__gt=1)
    )
    assert list(duplicates) == []
    # Both clusters took work from the queue.
    groups = Counter(os.getpgid(pid) for _tx, _step, _a, pid, _t in effects)
    assert set(groups) == {cluster.pgid for cluster in clusters}, groups


@pytest.fixture
def redis_broker(settings: Any, monkeypatch: pytest.MonkeyPatch):
    """django-q2 in this process sends to Redis (its ``Conf`` is read at import, so
    ``override_settings(Q_CLUSTER=...)`` alone does nothing)."""
    import redis

    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    client = redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"Redis is not reachable at {url}")
    client.flushdb()
    use_redis_broker(url, settings, monkeypatch)
    yield url
    client.flushdb()
    client.close()


def test_background_steps_run_in_the_worker_with_the_redis_broker(
    redis_broker, qcluster, django_q_backend, effects_dir
):
    from django_q.brokers import get_broker
    from django_q.models import OrmQ

    from workflows_app.background import uses_redis

    assert uses_redis()
    assert type(get_broker()).__name__ == "Redis"
    cluster = qcluster(REDIS_URL=redis_broker)

    check_three_steps_ran_in_a_worker(cluster, effects_dir, "bg-redis-1")

    # Nothing went through the ORM queue.
    assert not OrmQ.objects.exists()
