"""The PostgreSQL broker (workflows_app.brokers.postgres): in this process against the
test database, then with real qcluster processes, including kill -9 of a cluster that
holds claimed tasks."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import psycopg2
import pytest
from django.db import connection, transaction
from django.test.utils import override_settings
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from tests.background.bgapp import tasks as bg_tasks
from tests.background.test_qcluster import wait_until
from tests.support import database_url
from workflows_app import brokers
from workflows_app.brokers import postgres
from workflows_app.brokers.postgres import PostgresBroker

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

NOTE = "tests.background.bgapp.tasks.note"
HOLD = "tests.background.bgapp.tasks.hold"


@pytest.fixture
def broker() -> Iterator[PostgresBroker]:
    """A broker on a queue of its own (other tests' clusters use the cluster name)."""
    broker = PostgresBroker(list_key=f"test-{uuid.uuid4().hex[:8]}")
    yield broker
    broker.close()


def payloads(claimed: list[tuple[int, str]] | None) -> list[str]:
    return [payload for _id, payload in claimed or []]


def test_the_app_picks_the_postgres_broker_on_postgresql():
    assert brokers.broker_name() == "postgres"
    assert Conf.BROKER_CLASS == brokers.POSTGRES_BROKER
    assert isinstance(get_broker(), PostgresBroker)
    assert not brokers.uses_redis()


def test_a_named_broker_is_kept():
    with override_settings(Q_CLUSTER={"orm": "default"}):
        assert brokers.default_broker() == {}
        assert brokers.broker_name() == "orm"
    with override_settings(Q_CLUSTER={"redis": "redis://127.0.0.1:6379/0"}):
        assert brokers.broker_name() == "redis"


def test_claims_are_fifo_batches_and_leave_later_tasks(broker, monkeypatch):
    monkeypatch.setattr(Conf, "BULK", 3)
    monkeypatch.setattr(Conf, "WORKERS", 1)
    for n in range(5):
        broker.enqueue(f"t{n}")

    assert payloads(broker.dequeue()) == ["t0", "t1", "t2"]
    assert payloads(broker.dequeue()) == ["t3", "t4"]
    assert broker.queue_size() == 0
    assert broker.lock_size() == 5


def test_two_brokers_never_claim_the_same_task(broker, monkeypatch):
    monkeypatch.setattr(Conf, "BULK", 4)
    monkeypatch.setattr(Conf, "WORKERS", 1)
    other = PostgresBroker(list_key=broker.list_key)
    for n in range(40):
        broker.enqueue(f"t{n}")
    seen: list[str] = []
    lock = threading.Lock()

    def drain(which: PostgresBroker) -> None:
        for _ in range(20):
            claimed = payloads(which._claim(which._listen()))
            with lock:
                seen.extend(claimed)

    threads = [threading.Thread(target=drain, args=(b,)) for b in (broker, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    other.close()

    assert sorted(seen) == sorted(f"t{n}" for n in range(40))


def test_a_row_locked_elsewhere_is_skipped_not_waited_for(broker):
    first = broker.enqueue("locked")
    broker.enqueue("free")
    holder = psycopg2.connect(database_url())
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT id FROM django_q_ormq WHERE id = %s FOR UPDATE", [first])
        began = time.monotonic()
        claimed = broker._claim(broker._listen())
        assert time.monotonic() - began < 2
        assert payloads(claimed) == ["free"]
    finally:
        holder.rollback()
        holder.close()
    assert payloads(broker.dequeue()) == ["locked"]


def test_an_unacknowledged_task_is_delivered_again_when_its_lease_expires(broker, monkeypatch):
    monkeypatch.setattr(Conf, "RETRY", 1)
    monkeypatch.setattr(postgres, "IDLE_CLAIM_SECONDS", 0.2)
    task_id = broker.enqueue("once")

    assert broker.dequeue() == [(task_id, "once")]
    assert broker.dequeue() is None  # leased
    time.sleep(1.2)
    assert broker.dequeue() == [(task_id, "once")]

    broker.acknowledge(task_id)
    broker.flush_acknowledgements()
    assert not OrmQ.objects.filter(pk=task_id).exists()


def _claim_in_thread(broker: PostgresBroker) -> tuple[threading.Thread, dict]:
    """``broker.dequeue()`` on another thread, once it listens; its result and duration."""
    broker._listen()
    out: dict = {}

    def claim() -> None:
        began = time.monotonic()
        out["claimed"] = broker.dequeue()
        out["seconds"] = time.monotonic() - began

    thread = threading.Thread(target=claim)
    thread.start()
    return thread, out


def test_a_waiting_claim_wakes_at_the_commit_of_an_enqueue(broker, monkeypatch):
    # Far longer than the test allows: only the notification can wake the claim.
    monkeypatch.setattr(postgres, "IDLE_CLAIM_SECONDS", 30)
    thread, out = _claim_in_thread(broker)
    time.sleep(0.5)
    with transaction.atomic():
        broker.enqueue("woken")
        time.sleep(0.3)  # not visible, not notified before the commit
    thread.join(timeout=15)

    assert not thread.is_alive()
    assert payloads(out["claimed"]) == ["woken"]
    assert 0.5 < out["seconds"] < 10


def test_a_rolled_back_enqueue_leaves_no_task_and_wakes_no_one(broker, monkeypatch):
    monkeypatch.setattr(postgres, "IDLE_CLAIM_SECONDS", 1.5)
    thread, out = _claim_in_thread(broker)
    time.sleep(0.3)
    with transaction.atomic():
        broker.enqueue("phantom")
        transaction.set_rollback(True)
    thread.join(timeout=15)

    assert out["claimed"] is None
    assert out["seconds"] >= 1.4
    assert not OrmQ.objects.filter(key=broker.list_key).exists()


def _acknowledge_and_exit(list_key: str, task_ids: list[int]) -> None:
    broker = PostgresBroker(list_key=list_key)
    for task_id in task_ids:
        broker.acknowledge(task_id)


def test_acknowledgements_pending_at_process_exit_are_written(broker):
    task_ids = [broker.enqueue(f"t{n}") for n in range(20)]
    connection.close()  # the child must not share this connection's socket
    child = multiprocessing.get_context("fork").Process(
        target=_acknowledge_and_exit, args=(broker.list_key, task_ids)
    )
    child.start()
    child.join(timeout=30)

    assert child.exitcode == 0
    assert not OrmQ.objects.filter(pk__in=task_ids).exists()


def test_acknowledgements_are_deleted_by_the_thread(broker):
    task_ids = [broker.enqueue(f"t{n}") for n in range(50)]
    for task_id in task_ids:
        broker.acknowledge(task_id)

    wait_until(
        lambda: not OrmQ.objects.filter(pk__in=task_ids).exists(),
        [],
        "the acknowledged tasks to be deleted",
        10,
    )


def _terminate(raw) -> None:
    """``pg_terminate_backend`` of a broker's own connection, from this test's session."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [raw.get_backend_pid()])
        assert cursor.fetchone() == (True,)


def test_a_claimer_whose_connection_died_listens_again(broker, monkeypatch):
    # As after a database restart: the LISTEN session is gone, tasks came meanwhile.
    monkeypatch.setattr(postgres, "RECONNECT_SECONDS", 0.1)
    monkeypatch.setattr(postgres, "IDLE_CLAIM_SECONDS", 30)
    _terminate(broker._listen())
    missed = broker.enqueue("while-down")

    assert broker.dequeue() is None  # the dead session: logged, dropped
    began = time.monotonic()
    assert broker.dequeue() == [(missed, "while-down")]  # claimed before any wait
    assert time.monotonic() - began < 10
    # The new session listens: a later enqueue wakes a waiting claim.
    thread, out = _claim_in_thread(broker)
    time.sleep(0.3)
    broker.enqueue("woken")
    thread.join(timeout=15)

    assert payloads(out["claimed"]) == ["woken"]
    assert out["seconds"] < 10


def test_acknowledgements_survive_a_dead_connection(broker, monkeypatch):
    monkeypatch.setattr(postgres, "RECONNECT_SECONDS", 0.1)
    first, *rest = [broker.enqueue(f"t{n}") for n in range(5)]
    broker.acknowledge(first)
    broker.flush_acknowledgements()
    _terminate(broker._acks._raw)
    for task_id in rest:
        broker.acknowledge(task_id)

    wait_until(
        lambda: not OrmQ.objects.filter(pk__in=[first, *rest]).exists(),
        [],
        "the acknowledged tasks to be deleted on a new connection",
        10,
    )


# Real qcluster processes.


def our_tasks() -> list[OrmQ]:
    return [row for row in OrmQ.objects.all() if row.func() in (NOTE, HOLD)]


@pytest.mark.slow
def test_kill_9_of_a_cluster_holding_claimed_tasks_delivers_them_again(qcluster, tmp_path):
    directory = tmp_path / "notes"
    directory.mkdir()
    # One worker, claims of up to 20: one claim takes all ten tasks (committed together,
    # with the recovery task a worker queues when it starts), and the cluster holds
    # them while `hold` sleeps.
    env = {"Q_WORKERS": "1", "BG_Q_BULK": "20", "BG_Q_TIMEOUT": "8", "BG_Q_RETRY": "10"}
    first = qcluster(**env)
    labels = [f"n{i}" for i in range(9)]
    with transaction.atomic():
        async_task(HOLD, str(directory), "hold", save=False)
        for label in labels:
            async_task(NOTE, str(directory), label, save=False)
    held = directory / bg_tasks.HELD_FILE
    wait_until(held.exists, [first], "the held task to start", 60)
    pid = int(wait_until(held.read_text, [first], "the held task's pid", 5))
    assert os.getpgid(pid) == first.pgid
    # Every one of our tasks is claimed (leased), none acknowledged.
    wait_until(
        lambda: (
            len(our_tasks()) == 10
            and not OrmQ.objects.filter(
                pk__in=[row.pk for row in our_tasks()], lock__lte=timezone.now()
            ).exists()
        ),
        [first],
        "the batch to be claimed",
        10,
    )

    first.kill()

    assert first.process.returncode == -signal.SIGKILL
    assert len(our_tasks()) == 10
    assert [label for label, _pid in bg_tasks.read_notes(directory)] == ["hold"]

    second = qcluster(**env)
    wait_until(
        lambda: len(bg_tasks.read_notes(directory)) >= 11,
        [second],
        "the claimed tasks to run again",
        60,
    )
    notes = bg_tasks.read_notes(directory)
    assert Counter(label for label, _pid in notes) == {"hold": 2, **dict.fromkeys(labels, 1)}
    assert all(os.getpgid(pid) == second.pgid for _label, pid in notes[1:])
    wait_until(lambda: not our_tasks(), [second], "the acknowledgements", 10)


@pytest.mark.slow
def test_a_cluster_on_the_orm_broker_reads_the_same_queue(qcluster, django_q_backend, effects_dir):
    from .test_qcluster import check_three_steps_ran_in_a_worker

    cluster = qcluster(BG_Q_ORM="1")
    check_three_steps_ran_in_a_worker(cluster, effects_dir, "bg-orm-broker-1")
