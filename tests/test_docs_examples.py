"""The Python examples of the README and the guide, run as they are written.

The ```python blocks of a Markdown file are executed in one namespace, in order, with
every line at its own line number (a traceback points into the .md file). Workflow
names get the prefix ``docs-`` so that they cannot clash with other tests' workflows.
The test functions and fixtures that docs/testing.md defines are collected from here.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support import REPO_ROOT
from workflows_app.sdk import CompositionError, create_workflow

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
WORKFLOW_NAME = re.compile(r'create_workflow\(\s*"([^"]+)"')


def python_source(relative_path: str, keep: Any = None) -> str:
    """The file's ```python blocks (those for which ``keep(block)`` is true), every
    other line blank, so line numbers match the Markdown file."""
    lines = (REPO_ROOT / relative_path).read_text().splitlines()
    out = [""] * len(lines)
    block: list[int] | None = None
    language = indent = ""
    for number, line in enumerate(lines):
        fence = FENCE.match(line)
        if fence and block is None:
            block, indent, language = [], fence.group(1), fence.group(2)
        elif fence:
            # A block inside a list item is indented like its fence.
            code = [lines[i].removeprefix(indent) for i in block]
            if language == "python" and (keep is None or keep("\n".join(code))):
                for i, text in zip(block, code, strict=True):
                    out[i] = text
            block = None
        elif block is not None:
            block.append(number)
    return "\n".join(out) + "\n"


def run_doc(
    relative_path: str, keep: Any = None, replace: dict[str, str] | None = None, **names: Any
) -> dict[str, Any]:
    """Execute the Python blocks of a doc; returns the namespace they ran in."""
    source = WORKFLOW_NAME.sub(
        lambda m: f'create_workflow("docs-{m.group(1)}"', python_source(relative_path, keep)
    )
    for old, new in (replace or {}).items():
        source = source.replace(old, new)
    namespace: dict[str, Any] = {"__name__": f"docs_{Path(relative_path).stem}", **names}
    exec(compile(source, str(REPO_ROOT / relative_path), "exec"), namespace)
    return namespace


def test_readme_example_runs_and_compensates(capsys):
    ns = run_doc("README.md", keep=lambda block: "create_workflow(" in block)

    assert ns["res"].result == {
        "reserved": ["book"],
        "payment": {"payment_id": f"pay-{ns['res'].transaction.transaction_id}"},
        "total": 24.0,
        "receipt": "receipt sent to ada@example.com",
    }
    failed = ns["failed"]
    assert failed.transaction.get_state() == "reverted"
    assert failed.errors[0].error["message"] == "card declined"
    # The result is resolved after a failure too, from the steps that completed.
    assert ns["failed"].result == {
        "reserved": ["book", "pen"],
        "payment": None,
        "total": 600.0,
        "receipt": None,
    }
    # The second order's stock was released by compensation.
    assert ns["STOCK"] == {"book": 2, "pen": 10}
    assert "reverted card declined" in capsys.readouterr().out


def test_compensation_guide_order(capsys):
    ns = run_doc("docs/compensation.md", keep=lambda block: "book-trip" in block)

    assert ns["res"].transaction.get_state() == "reverted"
    undone = ns["undone"]
    assert undone[:2] == ["void-tickets(None)", "charge-card-t1"]
    assert set(undone[2:5]) == {"book-hotel-t1", "rent-car-t1", "buy-insurance-t1"}
    assert undone[5:] == ["reserve-flight-t1"]


def test_compensation_guide_partial_work_is_undone():
    charged: list[str] = []
    payments = SimpleNamespace(
        charge=lambda card: card != "card-3" and (charged.append(card) or True),
        refund=lambda card: charged.remove(card),
    )
    ns = run_doc(
        "docs/compensation.md", keep=lambda block: "charge-cards" in block, payments=payments
    )

    def composer(order):
        ns["charge_cards"](order)

    workflow = create_workflow("docs-charge-cards", composer)
    res = workflow.run(input={"cards": ["card-1", "card-2", "card-3"]}, throw_on_error=False)

    assert res.transaction.get_state() == "reverted"
    assert res.errors[0].error["message"] == "card card-3 declined"
    assert charged == []  # card-1 and card-2 were refunded


def test_concepts_hook_example():
    ns = run_doc("docs/concepts.md", keep=lambda block: "checkout-with-hook" in block)

    res = ns["checkout_with_hook"].run(input={"total": 120})
    assert res.result == {"order": {"id": "order-1", "total": 120}, "extra": {"points": 12}}
    with pytest.raises(CompositionError, match="multiple hook handlers"):
        ns["checkout_with_hook"].hooks.order_placed(ns["give_points"])


def test_concepts_nested_workflow_example():
    from workflows_app.sdk import WorkflowResponse, create_step

    refunds: list = []
    ns = run_doc(
        "docs/concepts.md",
        keep=lambda block: "order-and-pay" in block,
        create_workflow=create_workflow,
        WorkflowResponse=WorkflowResponse,
        create_order=create_step("docs-create-order", lambda value, ctx: {"total": 10}),
        charge=create_step(
            "docs-charge",
            lambda value, ctx: {"charged": value["amount"]},
            lambda payment, ctx: refunds.append(payment),
        ),
    )

    res = ns["order_and_pay"].run(transaction_id="t-1")
    assert res.result == {"order": {"total": 10}, "payment": {"charged": 10}}
    assert [node.step_id for node in ns["order_and_pay"].definition.nodes] == [
        "docs-create-order",
        "docs-pay-as-step",
    ]
    ns["order_and_pay"].cancel(transaction=res.transaction)
    assert refunds == [{"charged": 10}]


@pytest.mark.django_db
def test_operations_queries_run():
    from workflows_app.engine import workflow_engine
    from workflows_app.sdk import create_step

    wait = create_step("docs-ops-wait", lambda value, ctx: None, async_=True)
    create_workflow("docs-ops-order", lambda value: wait(value), retention_time=60)
    workflow_engine.run("docs-ops-order", transaction_id="ops-1")

    ns = run_doc(
        "docs/operations.md",
        keep=lambda block: "Q_CLUSTER" not in block,
        replace={'"place-order"': '"docs-ops-order"'},
    )

    assert list(ns["older"]) == []  # started under the current graph
    assert list(ns["quiet"]) == []  # updated a moment ago


_testing = run_doc("docs/testing.md")
test_reserving_takes_books_from_stock = _testing["test_reserving_takes_books_from_stock"]
test_a_refused_order_puts_the_books_back = _testing["test_a_refused_order_puts_the_books_back"]
test_the_step_log_shows_the_compensation = _testing["test_the_step_log_shows_the_compensation"]
test_a_refund_waits_for_approval_then_retries_the_bank = _testing[
    "test_a_refund_waits_for_approval_then_retries_the_bank"
]
immediate_workflows = _testing["immediate_workflows"]


def test_every_test_of_the_testing_guide_is_collected():
    defined = {name for name in _testing if name.startswith("test_")}
    assert defined <= set(globals())


@pytest.mark.django_db
def test_the_immediate_backend_has_run_the_worker_part_when_run_returns():
    """docs/testing.md: run() returns the hand-over state; the stored row is further."""
    from workflows_app.engine import workflow_engine
    from workflows_app.models import WorkflowExecution
    from workflows_app.sdk import create_step

    background = create_step(
        "docs-bg", lambda value, ctx: value, async_=True, background_execution=True
    )

    def composer(value):
        return background(value)

    create_workflow("docs-immediate-hand-over", composer, retention_time=60)
    res = workflow_engine.run("docs-immediate-hand-over", input=5, transaction_id="h-1")

    assert res.transaction.get_state() == "invoking"
    assert res.result is None
    execution = WorkflowExecution.objects.get(transaction_id="h-1")
    assert (execution.state, execution.output_payload) == ("done", 5)
