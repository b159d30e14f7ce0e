"""Fixtures of the admin tests: the test workflows, executions in each state, users."""

from __future__ import annotations

from uuid import uuid4

import pytest
from django.contrib.auth.models import Permission, User

from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution

from . import workflows_for_tests as wf


def run_stored(name: str, input=None) -> WorkflowExecution:
    """Run a stored test workflow and return its execution row."""
    result = workflow_engine.run(name, input=input, throw_on_error=False)
    ack = result.acknowledgement
    return WorkflowExecution.objects.get(
        workflow_id=ack["workflow_id"], transaction_id=ack["transaction_id"], run_id=ack["run_id"]
    )


@pytest.fixture
def token() -> str:
    return uuid4().hex


@pytest.fixture
def done_execution(db, token):
    return run_stored(wf.OK, {"ref": token, "secret": "s3cr3t"})


@pytest.fixture
def reverted_execution(db, token):
    return run_stored(wf.REVERTED, {"ref": token})


@pytest.fixture
def failed_execution(db, token):
    return run_stored(wf.FAILED, {"ref": token})


@pytest.fixture
def waiting_execution(db, token):
    return run_stored(wf.WAITING, {"ref": token})


def make_staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    if codenames:
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="workflows_app", codename__in=codenames
            )
        )
    return user


@pytest.fixture
def viewer_client(db, client):
    """Staff who may view executions but has none of the custom permissions."""
    client.force_login(make_staff("viewer", "view_workflowexecution"))
    return client


@pytest.fixture
def operator_client(db, client):
    """Staff with view permission and every custom permission."""
    client.force_login(
        make_staff(
            "operator",
            "view_workflowexecution",
            "cancel_workflowexecution",
            "retry_workflowexecution",
            "complete_step_workflowexecution",
            "run_workflow",
        )
    )
    return client
