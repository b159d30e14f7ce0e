"""A django-q2 broker for PostgreSQL: batch claims, LISTEN/NOTIFY, batch acknowledgements.

The queue is django-q2's own ``OrmQ`` table (``django_q_ormq``), so the ORM broker, the
admin's queued-task page and ``qinfo`` see the same rows. What differs from the ORM broker:

- **Enqueue** is one statement on the caller's database connection: it inserts the task
  and calls ``pg_notify``. Inside the caller's transaction (the hand-over of a run) both
  take effect at commit, or not at all: a rolled-back run leaves no task and wakes no one.
- **Claims** (``dequeue``, in the cluster's pusher process) lock up to a batch of due rows
  with ``SELECT ... FOR UPDATE SKIP LOCKED`` and push their ``lock`` (the lease) ``retry``
  seconds ahead, in one statement: two clusters never claim the same task, and a task a
  dead cluster claimed is claimed again once its lease expires.
- **Waking**: the pusher ``LISTEN``\\ s on the queue's channel and waits on its socket when
  the queue is empty, so a committed task is claimed at once. It also claims every
  :data:`IDLE_CLAIM_SECONDS` without a notification: that picks up expired leases and is
  how a stop request of the cluster is noticed.
- **Acknowledgements** (in the monitor process) are collected by a thread that deletes
  whatever accumulated while its previous ``DELETE`` ran: one statement per batch.

Claims and acknowledgements commit without waiting for the WAL flush: a claim or an
acknowledgement lost in a database crash only makes the task due again (delivery is
at least once, as with every django-q2 broker that has receipts).

Needs psycopg2 (Django's PostgreSQL backend on psycopg 3 is refused by the system check
``workflows_app.E006``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import threading
import time
from multiprocessing import util as mp_util
from typing import Any

from django.db import connections
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

logger = logging.getLogger("workflows_app")

# Longest wait for a notification before claiming anyway (expired leases, stop requests).
IDLE_CLAIM_SECONDS = 1.0
# Pause after a database error in the pusher or the acknowledger before trying again.
RECONNECT_SECONDS = 1.0
# PostgreSQL truncates channel names to 63 bytes.
_CHANNEL_LIMIT = 63


def channel_name(list_key: str) -> str:
    """The NOTIFY channel of a queue (long queue names hashed to fit)."""
    name = f"django_q_{list_key}"
    if len(name.encode()) <= _CHANNEL_LIMIT:
        return name
    return "django_q_" + hashlib.sha1(list_key.encode()).hexdigest()


def _table() -> tuple[str, str, str, str, str]:
    meta = OrmQ._meta
    quote = connections[database_alias()].ops.quote_name
    return (
        quote(meta.db_table),
        quote(meta.pk.column),
        quote(meta.get_field("key").column),
        quote(meta.get_field("payload").column),
        quote(meta.get_field("lock").column),
    )


def database_alias() -> str:
    """The database that holds the queue: ``Q_CLUSTER["orm"]``, else ``"default"``."""
    return Conf.ORM or "default"


def batch_size() -> int:
    """Tasks claimed at once: ``Q_CLUSTER["bulk"]``, at least one per worker."""
    return max(int(Conf.BULK or 1), int(Conf.WORKERS or 1))


def _connect() -> Any:
    """A new autocommit psycopg2 connection to the queue's database, outside Django's
    connection handling (django-q2 closes Django's connections around tasks)."""
    wrapper = connections[database_alias()]
    raw = wrapper.Database.connect(**wrapper.get_connection_params())
    raw.autocommit = True
    with raw.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO OFF")
    return raw


def _close(raw: Any) -> None:
    # A broken connection may fail to close; it is dropped either way.
    with contextlib.suppress(Exception):
        raw.close()


class _Acknowledger:
    """Deletes acknowledged tasks in batches, from a thread of the process that acks."""

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._condition = threading.Condition()
        self._io = threading.Lock()
        self._raw: Any = None
        self._thread: threading.Thread | None = None

    def add(self, task_id: int) -> None:
        with self._condition:
            self._pending.append(task_id)
            self._condition.notify()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="workflows-pg-broker-acks", daemon=True
                )
                self._thread.start()
                # Process exit (also of a multiprocessing child) deletes what is left.
                mp_util.Finalize(self, self.flush, exitpriority=10)

    def close(self) -> None:
        """Write what is pending and close the connection (the thread reopens one if needed)."""
        self.flush()
        with self._io:
            if self._raw is not None:
                _close(self._raw)
                self._raw = None

    def flush(self) -> None:
        """Delete every pending acknowledgement now (and wait for a delete in flight)."""
        with self._condition:
            batch, self._pending = self._pending, []
            self._io.acquire()
        try:
            if batch:
                self._delete(batch)
        finally:
            self._io.release()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending:
                    self._condition.wait()
                batch, self._pending = self._pending, []
                # Taken before the batch leaves the lock: flush() waits for this delete.
                self._io.acquire()
            try:
                deleted = self._delete(batch)
            finally:
                self._io.release()
            if not deleted:
                with self._condition:
                    self._pending[:0] = batch
                time.sleep(RECONNECT_SECONDS)

    def _delete(self, batch: list[int]) -> bool:
        """One DELETE of the batch; the caller holds ``_io``."""
        table, pk, *_ = _table()
        try:
            if self._raw is None:
                self._raw = _connect()
            with self._raw.cursor() as cursor:
                cursor.execute(f"DELETE FROM {table} WHERE {pk} = ANY(%s)", [batch])
            return True
        except Exception:
            logger.exception("Could not delete %d acknowledged django-q2 tasks", len(batch))
            if self._raw is not None:
                _close(self._raw)
                self._raw = None
            return False


class PostgresBroker(ORM):
    """django-q2 broker on PostgreSQL (``Q_CLUSTER["broker_class"]``); see the module."""

    def __init__(self, list_key: str | None = None) -> None:
        super().__init__(list_key)
        self._reset()

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._listener: Any = None
        self._acks = _Acknowledger()

    def _here(self) -> None:
        # A forked child must not use (or close) its parent's sockets.
        if self._pid != os.getpid():
            self._reset()

    def info(self) -> str:
        if not self._info:
            self._info = f"PostgreSQL {database_alias()}"
        return self._info

    def enqueue(self, task: str) -> int:
        table, pk, key, payload, lock = _table()
        self.get_connection()
        with connections[database_alias()].cursor() as cursor:
            cursor.execute(
                f"WITH task AS (INSERT INTO {table} ({key}, {payload}, {lock}) "
                f"VALUES (%s, %s, now()) RETURNING {pk}) "
                f"SELECT {pk}, pg_notify(%s, '') FROM task",
                [self.list_key or Conf.CLUSTER_NAME, task, channel_name(self.list_key)],
            )
            return cursor.fetchone()[0]

    def dequeue(self) -> list[tuple[int, str]] | None:
        """Claim a batch of due tasks; when there is none, wait for a notification (at
        most :data:`IDLE_CLAIM_SECONDS`) and try once more."""
        self._here()
        try:
            raw = self._listen()
            claimed = self._claim(raw)
            if claimed:
                return claimed
            if not raw.notifies:
                readable, _w, _x = select.select([raw], [], [], IDLE_CLAIM_SECONDS)
                if readable:
                    raw.poll()
            return self._claim(raw) or None
        except Exception:
            logger.exception("Claiming django-q2 tasks failed; reconnecting")
            if self._listener is not None:
                _close(self._listener)
                self._listener = None
            time.sleep(RECONNECT_SECONDS)
            return None

    def acknowledge(self, task_id: int) -> None:
        self._here()
        self._acks.add(task_id)

    def flush_acknowledgements(self) -> None:
        """Delete the acknowledged tasks now (they are otherwise deleted by a thread)."""
        self._acks.flush()

    def close(self) -> None:
        """Write pending acknowledgements and close this process's broker connections."""
        self._here()
        self._acks.close()
        if self._listener is not None:
            _close(self._listener)
            self._listener = None

    def _listen(self) -> Any:
        if self._listener is None:
            raw = _connect()
            with raw.cursor() as cursor:
                cursor.execute(f'LISTEN "{channel_name(self.list_key)}"')
            self._listener = raw
        return self._listener

    def _claim(self, raw: Any) -> list[tuple[int, str]]:
        del raw.notifies[:]
        table, pk, key, payload, lock = _table()
        with raw.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {lock} = now() + make_interval(secs => %s) "
                f"WHERE {pk} IN (SELECT {pk} FROM {table} WHERE {key} = %s AND {lock} < now() "
                f"ORDER BY {pk} LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"RETURNING {pk}, {payload}",
                [float(Conf.RETRY), self.list_key, batch_size()],
            )
            return sorted(cursor.fetchall())
