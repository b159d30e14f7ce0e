"""Long workflows: a chain of 480 or 1,000 steps registers, is described without
recursion and renders in the admin's definitions page and the API; a stored chain
whose step paths would not fit is refused when it is defined."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from tests.support import uname
from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.orchestration import CompositionError
from workflows_app.orchestration.definition import DESCRIBE_DEPTH, MAX_STEP_PATH
from workflows_app.sdk import StepResponse, create_step, create_workflow

DEFINITIONS_URL = reverse("admin:workflows_app_workflowdefinitionentry_changelist")


def chain(length: int, prefix: str = "long", **options) -> str:
    name = uname(prefix)
    steps = [
        create_step(f"{name}-{i}", lambda value, ctx: StepResponse(value + 1))
        for i in range(length)
    ]

    def compose(value):
        for step in steps:
            value = step(value)
        return value

    create_workflow(name, compose, **options)
    return name


@pytest.mark.parametrize("length", [480, 1000])
def test_a_long_chain_is_described_without_recursion(length):
    name = chain(length)
    workflow = workflow_engine.get_workflow(name)

    description = workflow_engine.describe(workflow)

    assert len(description["steps"]) == length
    assert description["steps"][-1]["depends_on"] == [description["steps"][-2]["id"]]
    # The nested definition stops at DESCRIBE_DEPTH levels and says where it goes on.
    level, node = 0, description["definition"]
    while "next" in node and "continuesAt" not in node["next"]:
        node, level = node["next"], level + 1
    assert level == DESCRIBE_DEPTH
    assert node["next"] == {"continuesAt": description["steps"][DESCRIBE_DEPTH]["id"]}
    json.dumps(description)
    # It runs, in memory.
    assert workflow.run(input=0).result == length


@pytest.mark.django_db
@pytest.mark.parametrize("length", [480, 1000])
def test_a_long_chain_renders_in_the_admin_and_the_api(admin_client, length):
    name = chain(length)

    page = admin_client.get(DEFINITIONS_URL)
    assert page.status_code == 200
    assert name in page.content.decode()

    detail = admin_client.get(reverse("workflows_app:workflow-detail", args=[name]))
    assert detail.status_code == 200
    assert len(detail.json()["steps"]) == length
    listing = admin_client.get(reverse("workflows_app:workflow-list"))
    assert listing.status_code == 200
    assert name in {entry["name"] for entry in listing.json()}


def test_a_stored_chain_whose_paths_do_not_fit_is_refused_when_defined():
    with pytest.raises(CompositionError, match=f"longer than the {MAX_STEP_PATH}"):
        chain(130, prefix="stored-long-chain", store=True)
    # Not stored, the same chain is fine.
    chain(130, prefix="stored-long-chain")


@pytest.mark.django_db(transaction=True)
def test_the_longest_stored_chain_that_fits_runs_and_records_every_step():
    step_chars = len(f"{uname('fits')}-000") + 1
    length = (MAX_STEP_PATH - len("_root")) // step_chars
    name = chain(length, prefix="fits", store=True, retention_time=60)

    result = workflow_engine.run(name, input=0)

    assert result.result == length
    row = WorkflowExecution.objects.get(workflow_id=name)
    assert row.state == "done"
    paths = list(StepExecution.objects.filter(execution=row).values_list("step_path", flat=True))
    assert len(paths) == length
    assert max(len(path) for path in paths) <= MAX_STEP_PATH
