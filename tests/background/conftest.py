"""Real ``manage.py qcluster`` processes for the background tests (SPEC 6).

The workers run with ``tests.background.settings`` against the test database (they
must see committed rows, hence ``django_db(transaction=True)`` in the tests), and the
test process switches its own background backend to django-q2 so that the runs it
starts are queued for them instead of running in-process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import PYTHON, REPO_ROOT, database_url

READY_LINE = "running."
START_SECONDS = 60.0
STOP_SECONDS = 15.0
POLL_SECONDS = 0.05


class Cluster:
    """One ``qcluster`` process group, its log file and how to stop it."""

    def __init__(self, name: str, log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [str(PYTHON), "manage.py", "qcluster"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pgid(self) -> int:
        # start_new_session=True: the cluster leads its own process group.
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, seconds: float = START_SECONDS) -> None:
        """Block until the cluster says it runs (its workers are forked by then)."""
        deadline = time.monotonic() + seconds
        while READY_LINE not in self.log():
            if not self.alive():
                pytest.fail(f"{self.name} exited ({self.process.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} did not start within {seconds:g} s:\n{self.log()}")
            time.sleep(POLL_SECONDS)

    def kill(self) -> None:
        """kill -9 of the whole process group (guard, pusher, workers, monitor), reaped."""
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_SECONDS)
        self._log.close()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of the group if the cluster does not stop in time;
        always reaped. SIGTERM goes to the leader only: it stops its processes in order
        (within a second), while a SIGTERM to every process of the group makes it hang."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_SECONDS)
        # Workers may outlive a dead leader: clear the whole group either way.
        self._signal(signal.SIGKILL)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        finally:
            self._log.close()

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signum)


@pytest.fixture
def qcluster(transactional_db, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start ``qcluster`` processes: ``qcluster(**extra_env)``, ready when returned.

    Every cluster is stopped (and its log printed, which pytest shows for a failed
    test) when the test ends, before the test database is flushed.
    """
    clusters: list[Cluster] = []
    base_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.background.settings",
        "DATABASE_URL": database_url(),
        "WORKFLOWS_BACKGROUND": "django_q",
        "Q_WORKERS": "2",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    base_env.pop("REDIS_URL", None)

    def start(**extra_env: str) -> Cluster:
        name = f"qcluster-{len(clusters) + 1}"
        cluster = Cluster(name, tmp_path / f"{name}.log", {**base_env, **extra_env})
        clusters.append(cluster)
        cluster.wait_ready()
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop()
    for cluster in clusters:
        print(f"----- {cluster.name} (exit {cluster.process.returncode}) -----")
        print(cluster.log()[-20000:])


def use_redis_broker(url: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """django-q2 in this process sends to the Redis at ``url`` (its ``Conf`` is read at
    import, so ``override_settings(Q_CLUSTER=...)`` alone does nothing)."""
    from django_q.conf import Conf

    # workflows_app.background.uses_redis() reads the settings; get_broker() reads Conf.
    conf = {key: value for key, value in settings.Q_CLUSTER.items() if key != "orm"}
    settings.Q_CLUSTER = {**conf, "redis": url}
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "BROKER_CLASS", None)
    monkeypatch.setattr(Conf, "REDIS", url)


@pytest.fixture
def effects_dir(tmp_path: Path) -> Path:
    """Where the bg-* workflows record their side effects (passed in their input)."""
    directory = tmp_path / "effects"
    directory.mkdir()
    return directory
