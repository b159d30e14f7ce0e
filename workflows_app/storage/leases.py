"""Who holds a run: lease tokens, the storage's handle on a held run, and the thread
that renews leases while a long step runs."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field

from django.db import DatabaseError, connection
from django.utils import timezone

from ..conf import workflows_settings
from ..models import WorkflowExecution

logger = logging.getLogger("workflows_app")


def new_owner() -> str:
    """A lease token: which process holds the execution, unique to this claim, so
    that two threads of one process never share a claim either."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def lease_seconds() -> float:
    """``LEASE_SECONDS``, read on each use so that overridden settings apply."""
    return float(workflows_settings.LEASE_SECONDS)


@dataclass
class Handle:
    """What the storage remembers about a transaction it holds."""

    pk: str
    version: int
    owner: str = ""
    lease_until: float = 0.0
    flushed: bool = False
    # The execution row's INSERT was committed without waiting for the disk (the run
    # is handed over at once): the next write of the row must wait for it.
    start_unflushed: bool = False
    cancel_requested: bool = False
    cancel_checked: float = field(default_factory=time.monotonic)
    waiting: set = field(default_factory=set)
    # Failed recoveries counted on the row when it was read (a resume that goes
    # through resets them only then, sparing every other resume a write).
    recovery_failures: int = 0
    #: Answers recorded while another process held the run (``answers``), oldest first.
    answers: list = field(default_factory=list)
    buffer: list = field(default_factory=list)


class LeaseKeeper:
    """Renews the leases of the runs this process holds while a long step runs.

    Leases are renewed as step attempts finish; a step that runs longer than half a
    lease would otherwise let recovery hand its run to a second worker. A daemon
    thread looks every few seconds and writes only for runs whose last renewal is
    older than half a lease (so short steps cost nothing). PostgreSQL only: with
    SQLite a second writer thread only adds lock contention, and SQLite deployments
    run one worker.
    """

    def __init__(self) -> None:
        # Weak: a run abandoned by an unexpected error (its transaction dropped) stops
        # being renewed, so recovery can take it over.
        self._held: weakref.WeakValueDictionary[int, Handle] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Set when a hold finds LEASE_SECONDS changed (tests override it): the loop
        # re-reads it and its pace at once. Not set otherwise: waking the thread on
        # every hold cost a thread switch per run.
        self._wake = threading.Event()
        self._lease: float | None = None

    def hold(self, handle: Handle) -> None:
        if connection.vendor != "postgresql":
            return
        with self._lock:
            self._held[id(handle)] = handle
            if self._lease != lease_seconds():
                self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="workflows-lease-keeper", daemon=True
                )
                self._thread.start()

    def release(self, handle: Handle) -> None:
        if self._held:
            with self._lock:
                self._held.pop(id(handle), None)

    def _run(self) -> None:
        while True:
            lease = self._lease = lease_seconds()
            self._wake.wait(max(min(lease / 4, 5.0), 0.05))
            self._wake.clear()
            now = time.time()
            with self._lock:
                held = list(self._held.values())
            due = [h for h in held if h.owner and h.lease_until - now < lease / 2]
            if not due:
                continue
            try:
                until = timezone.now() + datetime.timedelta(seconds=lease)
                for handle in due:
                    renewed = WorkflowExecution.objects.filter(
                        pk=handle.pk, owner=handle.owner
                    ).update(lease_expires_at=until)
                    if renewed:
                        handle.lease_until = until.timestamp()
                    else:
                        self.release(handle)
            except Exception:
                logger.exception("Renewing workflow leases failed")
            finally:
                connection.close()


lease_keeper = LeaseKeeper()


def give_up(handle: Handle) -> None:
    """Let go of a run whose executing code failed: stop renewing its lease and
    release it in the database with a deadline of now, so that a command can take it
    and the next recovery sweep resumes it.

    If the database cannot be reached (the likely cause of the failure) the lease
    simply runs out: nothing in this process renews it any more.
    """
    lease_keeper.release(handle)
    handle.buffer = []
    owner, handle.owner = handle.owner, ""
    if not owner:
        return
    for attempt in (1, 2):
        try:
            WorkflowExecution.objects.filter(pk=handle.pk, owner=owner).update(
                owner="", lease_expires_at=timezone.now()
            )
            return
        except DatabaseError:
            # A connection broken by a database restart: one more try on a new one.
            if attempt == 2 or connection.in_atomic_block:
                break
            connection.close()
    logger.warning(
        "Could not release execution %s; its lease expires within %s s",
        handle.pk,
        lease_seconds(),
    )
