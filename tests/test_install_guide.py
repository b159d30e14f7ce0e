"""docs/install.md, followed as a new user would, on both supported stacks.

Builds the wheel, installs it into a fresh virtualenv (Python 3.13 + Django 6.1, and
Python 3.11 + Django 5.2), creates a project with ``django-admin startproject``,
applies the settings and code blocks exactly as the page shows them (taken from the
page), migrates, starts a real ``qcluster`` and ``runserver``, runs the page's stored
workflow, answers its async step through the API with a staff session, and fetches
the admin list, the API list, the API root, ``api/schema/`` and ``api/docs/``.

The phase durations are written to ``test-artifacts/install-guide-<cell>.json``.
"""

from __future__ import annotations

import contextlib
import glob
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from .support import REPO_ROOT

pytestmark = [pytest.mark.install, pytest.mark.slow, pytest.mark.timeout(1500)]

GUIDE = REPO_ROOT / "docs" / "install.md"
ARTIFACTS = REPO_ROOT / "test-artifacts"
BLOCK = re.compile(
    r"<!-- install: (?P<mode>append|create) (?P<path>\S+) -->\s*\n```\w*\n(?P<code>.*?)```",
    re.DOTALL,
)
PASSWORD = "install-guide-pw-1"
# (cell, Python, Django requirement, the major.minor pip must pick)
CELLS = [
    ("py313-dj61", "3.13", "Django~=6.1.0", "6.1"),
    ("py311-dj52", "3.11", "Django~=5.2.0", "5.2"),
]


def guide_blocks() -> list[tuple[str, str, str]]:
    """The page's marked code blocks: (append|create, path, code), in page order."""
    return [(m["mode"], m["path"], m["code"]) for m in BLOCK.finditer(GUIDE.read_text())]


def test_the_guide_has_at_most_ten_steps_and_its_marked_blocks():
    text = GUIDE.read_text()
    steps = re.findall(r"^## (\d+)\. ", text, re.MULTILINE)
    assert steps == [str(n) for n in range(1, len(steps) + 1)]
    assert len(steps) <= 10
    # Every marked block was found (a typo in a marker would drop a block silently).
    assert len(guide_blocks()) == text.count("<!-- install:") == 5


def find_python(version: str) -> str:
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    candidates = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    found = candidates[-1] if candidates else shutil.which(f"python{version}")
    assert found, f"Python {version} is needed (pyenv install {version}, or python{version})"
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_wheel(tmp: Path) -> Path:
    """The wheel, built from a copy of the sources (no build/ in the checkout)."""
    src = tmp / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    shutil.copytree(
        REPO_ROOT / "workflows_app",
        src / "workflows_app",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        check=True,
        timeout=300,
    )
    [wheel] = dist.glob("workflows_app-*.whl")
    return wheel


@pytest.fixture(scope="module")
def workdir():
    """A private directory: pytest's shared basetemp is pruned by other pytest runs
    on the same machine, which would delete a virtualenv while it is in use."""
    path = Path(tempfile.mkdtemp(prefix="wf-install-guide-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(workdir) -> Path:
    return build_wheel(workdir / "wheel")


class Site:
    """A logged-in HTTP session against the project's runserver."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str:
        return next(c.value for c in self.jar if c.name == name)

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None):
        request = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read().decode()

    def login(self, username: str, password: str) -> None:
        status, _, _ = self.request("/admin/login/")
        assert status == 200
        form = urllib.parse.urlencode(
            {
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": self.cookie("csrftoken"),
                "next": "/admin/",
            }
        ).encode()
        status, _, page = self.request("/admin/login/", form)
        assert status == 200 and "/admin/logout/" in page, page[:500]

    def get_json(self, path: str) -> dict:
        status, headers, body = self.request(path, headers={"Accept": "application/json"})
        assert status == 200, (path, status, body[:500])
        assert headers["Content-Type"].startswith("application/json"), path
        return json.loads(body)

    def post_json(self, path: str, payload: dict) -> tuple[int, dict]:
        status, _, body = self.request(
            path,
            json.dumps(payload).encode(),
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-CSRFToken": self.cookie("csrftoken"),
            },
        )
        return status, json.loads(body)


def wait_for(what: str, probe, seconds: float = 90.0, every: float = 0.5):
    """Call ``probe()`` until it returns a truthy value, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(every)


@pytest.mark.parametrize(("cell", "python", "django", "django_version"), CELLS)
def test_install_guide_on_a_fresh_project(wheel, workdir, cell, python, django, django_version):
    tmp_path = workdir / cell
    tmp_path.mkdir()
    timings: dict[str, float] = {}
    started = time.monotonic()
    mark = started

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[name] = round(now - mark, 1)
        mark = now

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE_URL"))}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONUNBUFFERED="1")
    env.pop("VIRTUAL_ENV", None)
    venv = tmp_path / "venv"
    subprocess.run([find_python(python), "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"

    def run(*args: str, cwd: Path | None = None, timeout: float = 300):
        done = subprocess.run(
            list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
        return done

    # 1. Install (the page's `pip install workflows-app`, from the wheel just built).
    run(str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel), django, timeout=600)
    version = run(str(bin_dir / "python"), "-c", "import django; print(django.get_version())")
    assert version.stdout.startswith(django_version + "."), version.stdout
    installed = run(str(bin_dir / "python"), "-m", "pip", "list", "--format=json").stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    # Lean core: the extras are not pulled in.
    assert not names & {"psycopg2-binary", "redis", "croniter", "drf-spectacular-sidecar"}
    lap("install")

    run(str(bin_dir / "django-admin"), "startproject", "mysite", cwd=tmp_path)
    project = tmp_path / "mysite"
    manage = [str(bin_dir / "python"), "manage.py"]
    # The commands of step 5, then every marked block of the page, as it is.
    run(*manage, "startapp", "orders", cwd=project)
    for mode, path, code in guide_blocks():
        target = project / path
        if mode == "create":
            assert not target.exists(), path
            target.write_text(code)
        else:
            assert target.exists(), path
            target.write_text(target.read_text() + "\n\n" + code)
    lap("configure")

    check = run(*manage, "check", cwd=project)
    assert "System check identified no issues (0 silenced)." in check.stdout
    run(*manage, "migrate", "--noinput", cwd=project)
    run(*manage, "workflows", "setup", cwd=project)
    env["DJANGO_SUPERUSER_PASSWORD"] = PASSWORD
    run(
        *manage,
        "createsuperuser",
        "--noinput",
        "--username",
        "admin",
        "--email",
        "admin@example.com",
        cwd=project,
    )
    lap("migrate")

    port = free_port()
    stack = contextlib.ExitStack()
    logs = {
        name: stack.enter_context((tmp_path / f"{name}.log").open("w"))
        for name in ("qcluster", "runserver")
    }
    processes = [
        subprocess.Popen(
            [*manage, "qcluster"],
            cwd=project,
            env=env,
            stdout=logs["qcluster"],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
        subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=project,
            env=env,
            stdout=logs["runserver"],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
    ]
    try:
        site = Site(f"http://127.0.0.1:{port}")

        def server_answers() -> bool:
            try:
                return site.request("/api/")[0] == 200
            except OSError:
                return False

        wait_for("runserver", server_answers, seconds=60)
        lap("start")

        # 8. Run the workflow.
        out = run(
            *manage,
            "workflows",
            "run",
            "approve-order",
            "--input",
            '{"sku": "book-1"}',
            cwd=project,
        ).stdout
        execution_id = re.search(r"^Execution: (wf_exec_\S+)$", out, re.MULTILINE)[1]
        transaction_id = re.search(r"^Transaction: (\S+)$", out, re.MULTILINE)[1]

        # 9. Answer the step through the API, as staff with a session.
        site.login("admin", PASSWORD)
        detail = f"/api/workflow-executions/{execution_id}/"

        def waiting() -> bool:
            steps = site.get_json(detail)["steps_log"]
            return any(s["stepId"] == "await-approval" and s["status"] == "WAITING" for s in steps)

        wait_for("await-approval to wait", waiting)
        status, body = site.post_json(
            "/api/workflows/approve-order/steps/success/",
            {
                "transaction_id": transaction_id,
                "step_id": "await-approval",
                "response": {"approved_by": "ann"},
            },
        )
        assert status == 200, body
        finished = wait_for(
            "the run to finish",
            lambda: (e := site.get_json(detail))["state"] in ("done", "failed", "reverted") and e,
        )
        assert finished["state"] == "done", finished
        assert finished["output_payload"] == {"approved_by": "ann"}
        lap("run and answer")

        # The admin list, the API list, the root, the schema and the docs page.
        status, _, page = site.request("/admin/workflows_app/workflowexecution/")
        assert status == 200 and transaction_id in page
        listed = site.get_json("/api/workflow-executions/")
        assert execution_id in [row["id"] for row in listed["results"]]
        assert set(site.get_json("/api/")) == {"workflows", "workflow-executions", "schema", "docs"}
        schema = site.get_json("/api/schema/?format=json")
        assert schema["openapi"].startswith("3.")
        assert "/api/workflows/{workflow_id}/steps/success/" in schema["paths"]
        status, headers, page = site.request("/api/docs/")
        assert status == 200 and "swagger-ui" in page
        status, headers, page = site.request("/api/", headers={"Accept": "text/html"})
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        lap("browse")
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        stack.close()

    timings["total"] = round(time.monotonic() - started, 1)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"install-guide-{cell}.json").write_text(json.dumps(timings, indent=2))
    print(f"install guide on {cell}: {timings}")
