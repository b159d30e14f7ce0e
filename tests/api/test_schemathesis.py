"""Property-based test of the whole API against its own OpenAPI schema (schemathesis CLI).

Starts a live server, registers a finished and a waiting workflow, then lets schemathesis
generate requests for every operation (the event stream excepted: it is long-lived by
design) and checks that none gives a 5xx and that every response matches the schema.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token

from .conftest import OPERATOR_PERMISSIONS, chain_workflow, start, waiting_workflow

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "40"))
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_api_conforms_to_its_schema(live_server, django_user_model, tmp_path):
    if not SCHEMATHESIS.exists():
        pytest.skip("schemathesis is not installed in this environment")
    user = django_user_model.objects.create_user(username="schemathesis", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="workflows_app", codename__in=OPERATOR_PERMISSIONS
        )
    )
    token = Token.objects.create(user=user)
    finished = chain_workflow(store=True, retention_time=3600)
    start(finished, 1, "st-finished")
    waiting = waiting_workflow()
    start(waiting, 1, "st-waiting")

    command = [
        str(SCHEMATHESIS),
        "run",
        f"{live_server.url}/api/schema/?format=json",
        "--url",
        live_server.url,
        "--header",
        f"Authorization: Token {token.key}",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--exclude-path-regex",
        "/events/$",
        "--workers",
        "1",
        "--seed",
        "20240601",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--max-time",
        os.environ.get("SCHEMATHESIS_MAX_SECONDS", "75"),
        "--no-color",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )
    output = result.stdout + result.stderr
    match = re.search(r"Test cases:\s*(\d+) generated", output)
    generated = int(match.group(1)) if match else None
    print(f"\nschemathesis generated {generated} test cases\n{output[-3000:]}")

    assert result.returncode == 0, output[-6000:]
    assert generated, output[-3000:]
    assert "Server error" not in output
