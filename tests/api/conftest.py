"""Fixtures of the API tests: users, clients and small registered workflows."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support import uname as uname
from workflows_app.engine import workflow_engine
from workflows_app.sdk import StepResponse, create_step, create_workflow


def chain_workflow(**options) -> str:
    """Two steps ``n -> n + 1`` with compensations; returns the workflow name."""
    name = uname("api-chain")
    one = create_step(f"{name}-one", lambda n, c: StepResponse((n or 0) + 1, n))
    two = create_step(f"{name}-two", lambda n, c: StepResponse(n + 1, n))
    create_workflow(name, lambda n: two(one(n)), **options)
    return name


def waiting_workflow(**options) -> str:
    """A stored workflow: ``first`` runs, then the async ``approve`` waits for a response."""
    options.setdefault("retention_time", 3600)
    name = uname("api-wait")
    first = create_step(f"{name}-first", lambda n, c: {"n": n}, lambda data, c: None)
    approve = create_step(f"{name}-approve", lambda i, c: None, async_=True)
    create_workflow(name, lambda n: approve(first(n)), **options)
    return name


def failing_compensation_workflow() -> tuple[str, dict]:
    """``a`` compensates with an error once, ``b`` fails: the run ends ``failed``."""
    name = uname("api-compfail")
    calls = {"compensate": 0}

    def compensate(data, ctx):
        calls["compensate"] += 1
        if calls["compensate"] == 1:
            raise RuntimeError("compensation broke")

    def explode(value, ctx):
        raise ValueError("b exploded")

    a = create_step(f"{name}-a", lambda n, c: StepResponse(n, n), compensate)
    b = create_step(f"{name}-b", explode)
    create_workflow(name, lambda n: b(a(n)), retention_time=3600)
    return name, calls


def start(name: str, input=None, transaction_id: str | None = None):
    """Run ``name`` through the engine (a fixture-style shortcut for the tests)."""
    return workflow_engine.run(
        name, input=input, transaction_id=transaction_id, throw_on_error=False
    )


#: Every permission of the app: an operator who may read and command everything.
OPERATOR_PERMISSIONS = (
    "view_workflowexecution",
    "run_workflow",
    "cancel_workflowexecution",
    "retry_workflowexecution",
    "complete_step_workflowexecution",
)


@pytest.fixture
def staff_user(django_user_model):
    """Staff holding every permission of the app (the API's default rule is the admin's)."""
    user = django_user_model.objects.create_user(username=uname("staff"), is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="workflows_app", codename__in=OPERATOR_PERMISSIONS
        )
    )
    return user


@pytest.fixture
def plain_user(django_user_model):
    return django_user_model.objects.create_user(username=uname("user"))


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    """A client authenticated with a real token (TokenAuthentication)."""
    client = APIClient()
    token = Token.objects.create(user=staff_user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def user_client(plain_user) -> APIClient:
    client = APIClient()
    client.force_login(plain_user)
    return client
