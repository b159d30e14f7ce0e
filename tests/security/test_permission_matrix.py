"""One permission model: every kind of user against every API endpoint and every admin
page and command. Each row names what the operation needs; the API and the admin must
both allow exactly the users who hold it (so they agree cell by cell)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import uuid4

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import create_step, create_workflow

pytestmark = pytest.mark.django_db

VIEW = "view_workflowexecution"
RUN = "run_workflow"
CANCEL = "cancel_workflowexecution"
RETRY = "retry_workflowexecution"
COMPLETE = "complete_step_workflowexecution"
ALL = (VIEW, RUN, CANCEL, RETRY, COMPLETE)

#: Kind of user -> (staff, superuser, permissions).
USERS: dict[str, tuple[bool, bool, tuple[str, ...]]] = {
    "anonymous": (False, False, ()),
    "non-staff with all permissions": (False, False, ALL),
    "staff with none": (True, False, ()),
    "staff with view only": (True, False, (VIEW,)),
    "staff with view + run": (True, False, (VIEW, RUN)),
    "staff with view + cancel": (True, False, (VIEW, CANCEL)),
    "staff with view + retry": (True, False, (VIEW, RETRY)),
    "staff with view + complete step": (True, False, (VIEW, COMPLETE)),
    "staff with run only": (True, False, (RUN,)),
    "superuser": (True, True, ()),
}


@dataclass(frozen=True)
class Operation:
    name: str
    #: Alternatives: the user needs every permission of at least one of them.
    needs: tuple[tuple[str, ...], ...]
    api: tuple[str, str, dict | None] | None
    admin: tuple[str, str, dict | None] | None


ADMIN = "/admin/workflows_app/workflowexecution"
DEFINITIONS = "/admin/workflows_app/workflowdefinitionentry"

OPERATIONS = [
    Operation(
        "list definitions",
        ((VIEW,), (RUN,)),
        ("get", "/api/workflows/", None),
        ("get", f"{DEFINITIONS}/", None),
    ),
    Operation(
        "describe a definition", ((VIEW,), (RUN,)), ("get", "/api/workflows/{w}/", None), None
    ),
    Operation(
        "run",
        ((RUN,),),
        ("post", "/api/workflows/{w}/run/", {"input": 1}),
        ("post", f"{DEFINITIONS}/run/", {"workflow": "{w}", "input": "1"}),
    ),
    Operation(
        "mark a step succeeded",
        ((VIEW, COMPLETE),),
        ("post", "/api/workflows/{w}/steps/success/", {"transaction_id": "{t}", "step_id": "{s}"}),
        (
            "post",
            f"{ADMIN}/{{pk}}/complete-step/",
            {"step_id": "{s}", "action": "invoke", "outcome": "success", "response": "{{}}"},
        ),
    ),
    Operation(
        "mark a step failed",
        ((VIEW, COMPLETE),),
        ("post", "/api/workflows/{w}/steps/failure/", {"transaction_id": "{t}", "step_id": "{s}"}),
        (
            "post",
            f"{ADMIN}/{{pk}}/complete-step/",
            {"step_id": "{s}", "action": "invoke", "outcome": "failure", "response": "{{}}"},
        ),
    ),
    Operation(
        "complete-step form",
        ((VIEW, COMPLETE),),
        None,
        ("get", f"{ADMIN}/{{pk}}/complete-step/", None),
    ),
    Operation(
        "list executions",
        ((VIEW,),),
        ("get", "/api/workflow-executions/", None),
        ("get", f"{ADMIN}/", None),
    ),
    Operation(
        "read an execution",
        ((VIEW,),),
        ("get", "/api/workflow-executions/{pk}/", None),
        ("get", f"{ADMIN}/{{pk}}/change/", None),
    ),
    Operation(
        "follow an execution",
        ((VIEW,),),
        ("get", "/api/workflow-executions/{pk}/events/?timeout=1", None),
        None,
    ),
    Operation(
        "cancel",
        ((VIEW, CANCEL),),
        ("post", "/api/workflow-executions/{pk}/cancel/", None),
        ("post", f"{ADMIN}/{{pk}}/cancel/", None),
    ),
    Operation(
        "retry a step",
        ((VIEW, RETRY),),
        ("post", "/api/workflow-executions/{pk}/retry/", {"step_id": "{s}"}),
        ("post", f"{ADMIN}/{{pk}}/retry-step/", {"step_id": "{s}", "action": "invoke"}),
    ),
    Operation(
        "retry the compensation",
        ((VIEW, RETRY),),
        ("post", "/api/workflow-executions/{pk}/retry/", {}),
        ("post", f"{ADMIN}/{{pk}}/retry-compensation/", None),
    ),
    Operation(
        "run again",
        ((VIEW, RUN),),
        ("post", "/api/workflow-executions/{pk}/rerun/", None),
        ("post", f"{ADMIN}/{{pk}}/rerun/", None),
    ),
]


def expected(user_kind: str, operation: Operation) -> bool:
    staff, superuser, held = USERS[user_kind]
    if superuser:
        return True
    return staff and any(set(option) <= set(held) for option in operation.needs)


def make_user(kind: str):
    staff, superuser, held = USERS[kind]
    if kind == "anonymous":
        return None
    model = get_user_model()
    name = f"u-{uuid4().hex[:8]}"
    if superuser:
        return model.objects.create_superuser(name, password="pw")
    user = model.objects.create_user(name, password="pw", is_staff=staff)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="workflows_app", codename__in=held)
    )
    return user


@pytest.fixture
def waiting():
    """A stored run whose second step waits for a response: ids for the URLs."""
    name = f"matrix-{uuid4().hex[:10]}"
    first = create_step(f"{name}-first", lambda n, c: {"n": n}, lambda data, c: None)
    approve = create_step(f"{name}-approve", lambda i, c: None, async_=True)
    create_workflow(name, lambda n: approve(first(n)), retention_time=3600)
    workflow_engine.run(name, input=1, transaction_id="matrix-tx", throw_on_error=False)
    pk = WorkflowExecution.objects.get(workflow_id=name).pk
    return {"w": name, "t": "matrix-tx", "s": f"{name}-approve", "pk": pk}


def fill(value, ids: dict):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


def api_allowed(user, request, ids) -> bool:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    method, url, data = request
    if method == "get":
        response = client.get(fill(url, ids))
    else:
        response = client.post(fill(url, ids), fill(data, ids), format="json")
    if getattr(response, "streaming", False):
        content = b"".join(response.streaming_content)  # ends the stream (timeout=1)
    else:
        content = response.content
    assert response.status_code < 500, content
    if response.status_code in (401, 403):
        assert ids["w"] not in content.decode()
        return False
    return True


def admin_allowed(user, request, ids) -> bool:
    client = Client()
    if user is not None:
        client.force_login(user)
    method, url, data = request
    if method == "get":
        response = client.get(fill(url, ids))
    else:
        response = client.post(fill(url, ids), fill(data, ids) or {})
    assert response.status_code < 500
    if response.status_code == 403:
        return False
    return not (response.status_code == 302 and "/admin/login/" in response["Location"])


@pytest.mark.parametrize("operation", OPERATIONS, ids=[o.name for o in OPERATIONS])
@pytest.mark.parametrize("user_kind", list(USERS))
def test_api_and_admin_allow_the_same_users(user_kind, operation, waiting):
    user = make_user(user_kind)
    want = expected(user_kind, operation)

    cells = {}
    if operation.api:
        cells["api"] = api_allowed(user, operation.api, waiting)
    if operation.admin:
        cells["admin"] = admin_allowed(user, operation.admin, waiting)

    assert cells == {side: want for side in cells}, (user_kind, operation.name)
    if not want:
        execution = WorkflowExecution.objects.get(pk=waiting["pk"])
        assert execution.state == "invoking"
        assert WorkflowExecution.objects.filter(workflow_id=waiting["w"]).count() == 1
