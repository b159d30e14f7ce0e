"""Helpers shared by the test packages: unique names, where the repository and its
Python are, and the URL of the test database for the processes a test starts."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote
from uuid import uuid4

from django.db import connection

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
if not PYTHON.exists():
    PYTHON = Path(sys.executable)


def uname(prefix: str = "wf") -> str:
    """A registry-unique name: workflow and step names are global."""
    return f"{prefix}-{uuid4().hex[:10]}"


def database_url() -> str:
    """``postgres://...`` of the database this test process uses (the test database),
    for the workers and crash processes a test starts."""
    settings = connection.settings_dict
    user = quote(settings.get("USER") or "")
    password = settings.get("PASSWORD") or ""
    auth = f"{user}:{quote(password)}@" if password else (f"{user}@" if user else "")
    host = settings.get("HOST") or "127.0.0.1"
    port = f":{settings['PORT']}" if settings.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(settings['NAME'])}"
