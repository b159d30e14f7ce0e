"""Migration 0010: stored flows and errors name a step by ``stepId`` instead of
``action``; rows written before it are read right after migrating.

The old-format rows are made by migrating real runs back to 0009, and checked
against the old format (the key and the hash of the stored definitions) before
migrating forward again.
"""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from workflows_app import presentation
from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.orchestration import StepError
from workflows_app.orchestration.definition import DESCRIBE_DEPTH
from workflows_app.sdk import create_step, create_workflow, get_workflow

from .helpers import uname

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("workflows_app", "0009_step_answer")]


def _migrate(target) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(target or executor.loader.graph.leaf_nodes("workflows_app"))


def _definitions(flow: dict) -> list[dict]:
    """The step definitions of a stored flow: the nested tree's and each step's."""
    found, pending = [], [flow["definition"]]
    while pending:
        following = pending.pop().get("next")
        for entry in following if isinstance(following, list) else [following]:
            if isinstance(entry, dict) and "continuesAt" not in entry:
                found.append(entry)
                pending.append(entry)
    return found + [s["definition"] for s in flow["steps"].values() if "definition" in s]


def _old_hash(flow: dict, deep: bool) -> str:
    if deep:
        order, pending = [], list(reversed(flow["steps"]["_root"]["next"]))
        while pending:
            path = pending.pop()
            order.append([path, flow["steps"][path]["definition"]])
            pending.extend(reversed(flow["steps"][path]["next"]))
        shape = order
    else:
        shape = flow["definition"]
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()


def _waiting_run(length: int) -> tuple[str, str]:
    """A stored run of ``length`` steps, then one that waits for an answer."""
    name = uname("stepid")
    chain = [create_step(f"s{i}", lambda value, ctx: value + 1) for i in range(length)]
    wait = create_step("wait", lambda value, ctx: None, async_=True)

    def compose(value):
        for step in chain:
            value = step(value)
        return wait(value)

    create_workflow(name, compose, store=True, retention_time=3600)
    workflow_engine.run(name, input=0, transaction_id=f"{name}-tx")
    return name, f"{name}-tx"


def _reverted_run() -> tuple[str, str]:
    name = uname("stepid")
    ok = create_step(f"{name}-ok", lambda value, ctx: value)
    boom = create_step(f"{name}-boom", lambda value, ctx: 1 / 0)
    create_workflow(name, lambda value: boom(ok(value)), store=True, retention_time=3600)
    workflow_engine.run(name, input=1, throw_on_error=False)
    return name, f"{name}-boom"


@pytest.mark.parametrize("length", [1, DESCRIBE_DEPTH], ids=["nested", "deeper-than-nesting"])
def test_waiting_run_in_old_format_is_resumed_after_migrating(length, caplog):
    name, transaction_id = _waiting_run(length)
    failed_name, failed_step = _reverted_run()
    try:
        _migrate(BEFORE)
        old = {row.workflow_id: row for row in WorkflowExecution.objects.all()}
        flow = old[name].execution
        assert flow["definition"]["next"]["action"] == "s0"
        assert {"action" in d and "stepId" not in d for d in _definitions(flow)} == {True}
        assert old[name].definition_hash == _old_hash(flow, deep=length >= DESCRIBE_DEPTH)
        assert [e["action"] for e in old[failed_name].context["errors"]] == [failed_step]
    finally:
        _migrate(None)

    row = WorkflowExecution.objects.get(workflow_id=name)
    assert {"stepId" in d and "action" not in d for d in _definitions(row.execution)} == {True}
    assert row.definition_hash == get_workflow(name).definition.hash

    failed = WorkflowExecution.objects.get(workflow_id=failed_name)
    errors = [StepError.from_dict(e) for e in failed.context["errors"]]
    assert [(e.step_id, e.error["name"]) for e in errors] == [(failed_step, "ZeroDivisionError")]
    views = {v.step_id: v for v in presentation.step_views(failed.execution, failed.context)}
    assert [e.name for e in views[failed_step].errors] == ["ZeroDivisionError"]
    assert views[f"{failed_name}-ok"].errors == []

    with caplog.at_level(logging.WARNING, logger="workflows_app"):
        res = workflow_engine.set_step_success(
            workflow_id=name, transaction_id=transaction_id, step_id="wait", response="yes"
        )
    assert res.transaction.get_state() == "done"
    assert res.result == "yes"
    assert "another definition" not in caplog.text
