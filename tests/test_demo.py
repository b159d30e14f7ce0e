"""``make demo`` (scripts/demo.sh) from a clean copy of the working tree.

The copy holds the files git would commit or consider (tracked and untracked, but not
ignored), so neither the developer's database nor anything left over from earlier
runs can make the demo pass. The existing virtualenv is reused through
``WORKFLOWS_VENV`` to skip a reinstall; the code that runs is the copy's.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.hashers import check_password

from .support import REPO_ROOT

pytestmark = pytest.mark.slow

EXCLUDED = (".venv/", "db.sqlite3", "test-artifacts/")


def copy_working_tree(destination: Path) -> None:
    """Copy the tracked and untracked-but-not-ignored files of the repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if name.startswith(EXCLUDED) or not source.is_file():
            continue  # excluded, or deleted in the working tree
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def demo_environment() -> dict[str, str]:
    """The caller's environment without what would make the demo less fresh."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "WORKFLOWS_BACKGROUND", "Q_WORKERS", "VIRTUAL_ENV")
    }
    env["DEMO_NO_SERVE"] = "1"
    if (Path(sys.prefix) / "bin" / "activate").is_file():
        env["WORKFLOWS_VENV"] = sys.prefix
    return env


def test_demo_prepares_the_database_and_prints_the_login(tmp_path):
    repo = tmp_path / "repo"
    copy_working_tree(repo)
    assert not (repo / "db.sqlite3").exists()

    done = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=repo,
        env=demo_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "All 4 examples ended as expected." in done.stdout
    assert "DEMO_NO_SERVE=1: not starting the server." in done.stdout
    login = re.search(r"User:\s+(\S+)\s+Password:\s+(\S+)", done.stdout)
    assert login, output
    user, password = login.groups()

    db = sqlite3.connect(repo / "db.sqlite3")
    try:
        [(encoded, is_superuser)] = db.execute(
            "SELECT password, is_superuser FROM auth_user WHERE username = ?", (user,)
        ).fetchall()
        executions = db.execute(
            "SELECT id, workflow_id, state FROM workflow_execution ORDER BY created_at"
        ).fetchall()
        waiting = db.execute(
            "SELECT e.workflow_id, s.step_id FROM workflow_step_execution s "
            "JOIN workflow_execution e ON e.id = s.execution_id WHERE s.status = 'WAITING'"
        ).fetchall()
        failed_iterations = db.execute(
            "SELECT s.iteration FROM workflow_step_execution s "
            "JOIN workflow_execution e ON e.id = s.execution_id "
            "WHERE e.workflow_id = 'notify-users' AND s.status = 'FAILED' AND s.iteration >= 1"
        ).fetchall()
        schedules = db.execute("SELECT name, func, args, kwargs FROM django_q_schedule").fetchall()
    finally:
        db.close()

    assert is_superuser
    assert check_password(password, encoded)
    runs = sorted((workflow, state) for _, workflow, state in executions)
    assert runs[:3] == [
        ("accept-quote", "invoking"),
        ("create-order", "done"),
        ("create-order", "reverted"),
    ], runs
    assert runs[3:] in ([("notify-users", "reverted")], [("notify-users", "failed")]), runs
    assert waiting == [("accept-quote", "await-quote-approval")]
    assert failed_iterations == [(2,)]
    # `workflows setup` scheduled the every-minute example.
    assert any("executions-report" in " ".join(map(str, row)) for row in schedules), schedules
