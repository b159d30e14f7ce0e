"""Fixtures of the fault-injection suite: the qcluster fixtures of tests/background
with the fault workflows installed, the recovery schedule, a private Redis and a
private PostgreSQL server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from tests.background.conftest import Cluster, use_redis_broker
from tests.background.conftest import effects_dir as effects_dir
from tests.background.conftest import qcluster as qcluster
from workflows_app.engine import workflow_engine
from workflows_app.sdk.registry import registry

from .scenario import ChainScenario, finish_seconds, runs_per_scenario

REDIS_START_SECONDS = 10.0
POSTGRES_SECONDS = 60.0
POSTGRES_DATABASE = "wf_fault"
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A scenario's time cap grows with ``FAULT_RUNS`` (the suite's default timeout is
    for 20 runs)."""
    cap = pytest.mark.timeout(finish_seconds(runs_per_scenario(), 4.0) + 120)
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(cap)


@pytest.fixture
def fault_cluster(
    qcluster: Callable[..., Cluster], django_q_backend: Any
) -> Callable[..., Cluster]:
    """Start a qcluster that knows the fault workflows; the recovery schedule exists
    (``workflows setup``), as in a deployment.

    The schedules of workflows that other test modules registered in this process
    (one of them deliberately invalid) are no business of these tests: setup sees only
    the unscheduled ones, so it creates the cleanup and recovery schedules alone."""
    everything = registry.workflows
    registry.workflows = {
        name: workflow
        for name, workflow in everything.items()
        if workflow.options.get("schedule") is None
    }
    try:
        workflow_engine.setup_schedules()
    finally:
        registry.workflows = everything

    def start(**extra_env: str) -> Cluster:
        return qcluster(DJANGO_SETTINGS_MODULE="tests.fault.settings", **extra_env)

    return start


@pytest.fixture
def chain(effects_dir: Path) -> Callable[[str], ChainScenario]:
    """``chain(name)``: a scenario of ``FAULT_RUNS`` chain runs, started (queued for
    whichever cluster runs now or later)."""

    def start(name: str) -> ChainScenario:
        scenario = ChainScenario(name, effects_dir)
        scenario.start_runs()
        return scenario

    return start


class RedisServer:
    """A ``redis-server`` of this test only: its own port and directory, no persistence,
    so a stop loses whatever the queue held."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + REDIS_START_SECONDS
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def answers(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn,
        ):
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        """kill -9: the queue and every connection are gone at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RedisServer]:
    """A private Redis, and django-q2 in this process sending to it."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    use_redis_broker(server.url, settings, monkeypatch)
    try:
        yield server
    finally:
        server.stop()


class PostgresServer:
    """A PostgreSQL server of this test only (``initdb`` in a temporary directory, its
    own port and socket directory), started and stopped with ``pg_ctl``; the shared
    server is never touched. As root, the binaries run as the ``postgres`` user, since
    PostgreSQL refuses to run as root."""

    def __init__(self) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not binaries:
            pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
        self.bin = binaries[-1].parent
        self.directory = Path(tempfile.mkdtemp(prefix="wf-fault-pg-"))
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=POSTGRES_SECONDS, check=False
        )
        if done.returncode:
            pytest.fail(f"{program} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        # fsync off: a stop in "immediate" mode still crashes the server (WAL replay at
        # the next start), while the machine keeps the written pages.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c unix_socket_directories={self.directory}"
        )
        log = str(self.directory / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (sessions terminated, clean shutdown) or ``-m
        immediate`` (every process quits at once; the next start replays the WAL)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def private_postgres(transactional_db: None) -> Iterator[PostgresServer]:
    """A private PostgreSQL server holding this test's database, migrated; Django's
    connection in this process points at it until the test ends.

    Request it before ``fault_cluster``: the clusters and the schedules that fixture
    creates take the database this process uses at that moment."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    server = PostgresServer()
    server.init()
    server.start()
    saved = dict(connection.settings_dict)
    try:
        with contextlib.closing(
            connection.Database.connect(
                host="127.0.0.1", port=server.port, user="postgres", dbname="postgres"
            )
        ) as raw:
            raw.autocommit = True
            with raw.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {POSTGRES_DATABASE}")
        connection.close()
        connection.settings_dict.update(
            HOST="127.0.0.1",
            PORT=str(server.port),
            NAME=POSTGRES_DATABASE,
            USER="postgres",
            PASSWORD="",
        )
        call_command("migrate", verbosity=0)
        yield server
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
        print(f"----- private PostgreSQL on port {server.port} -----")
        print(server.log()[-10000:])
        server.remove()
