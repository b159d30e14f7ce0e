"""The demo project's example workflows (project/examples), run as the demo runs them."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from project.examples import services
from project.examples.management.commands.run_examples import EXAMPLES
from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.sdk import get_workflow

pytestmark = pytest.mark.django_db

ADA = {"name": "Ada Lovelace", "email": "ada@example.com"}


@pytest.fixture(autouse=True)
def fresh_services():
    """Every test starts with full stock and no payments, orders or loyalty points."""
    services.reset()
    yield
    services.reset()


def order_input(*items: tuple[str, int], token: str = "tok_visa") -> dict:
    return {
        "customer": ADA,
        "items": [{"sku": sku, "quantity": quantity} for sku, quantity in items],
        "payment": {"token": token},
    }


def execution_of(res) -> WorkflowExecution:
    return WorkflowExecution.objects.get(
        workflow_id=res.transaction.workflow_id,
        transaction_id=res.transaction.transaction_id,
        run_id=res.transaction.run_id,
    )


def statuses(execution: WorkflowExecution, handler_type: str = "invoke") -> dict[str, str]:
    """``{step_id: status}`` of the execution's rows for one handler type (last attempt)."""
    rows = StepExecution.objects.filter(execution=execution, handler_type=handler_type)
    return {row.step_id: row.status for row in rows.order_by("attempt", "iteration")}


def test_create_order_with_a_digital_item_issues_links_and_calls_the_hook(mailoutbox):
    res = workflow_engine.run("create-order", input=order_input(("tshirt", 2), ("ebook", 1)))

    # 2 x 25.00 at 20 % VAT + 19.00 at 5 % VAT
    assert res.result["total"] == 5000 + 1900 + 1000 + 95
    assert [link["sku"] for link in res.result["download_links"]] == ["ebook"]
    assert res.result["loyalty"] == {"customer": ADA["email"], "points": 79, "balance": 79}
    assert services.loyalty.points == {ADA["email"]: 79}
    assert services.inventory.stock["tshirt"] == services.INITIAL_STOCK["tshirt"] - 2
    order = services.orders.orders[res.result["order_id"]]
    assert order["status"] == "placed"
    assert services.payments.payments[order["payment_id"]]["status"] == "authorized"

    execution = execution_of(res)
    assert execution.state == "done"
    assert execution.retention_time is not None
    invoked = statuses(execution)
    for step in (
        "validate-order",
        "reserve-inventory",
        "calculate-tax",
        "authorize-payment",
        "create-order-record",
        "issue-download-links",
        "send-order-confirmation",
        "order_created",
    ):
        assert invoked[step] == "COMPLETED", step
    # The payment token is masked in storage (the step still received it).
    assert execution.input_payload["payment"]["token"] == "[REDACTED]"

    [mail] = mailoutbox
    assert mail.to == [ADA["email"]]
    assert res.result["order_id"] in mail.subject
    assert res.result["download_links"][0]["url"] in mail.body


def test_create_order_without_digital_items_skips_the_download_links(mailoutbox):
    res = workflow_engine.run("create-order", input=order_input(("mug", 1)))

    assert res.result["download_links"] == []
    invoked = statuses(execution_of(res))
    assert invoked["issue-download-links"] == "SKIPPED"
    assert invoked["send-order-confirmation"] == "COMPLETED"
    assert "downloads" not in mailoutbox[0].body


def test_create_order_declined_at_payment_is_compensated(mailoutbox):
    res = workflow_engine.run(
        "create-order",
        input=order_input(("mug", 3), token="tok_chargeDeclined"),
        throw_on_error=False,
    )

    assert res.transaction.get_state() == "reverted"
    assert [error.step_id for error in res.errors] == ["authorize-payment"]
    assert "declined" in res.errors[0].error["message"]
    assert services.inventory.stock == services.INITIAL_STOCK
    assert services.inventory.reservations == {}
    assert services.orders.orders == {}
    assert services.loyalty.points == {}
    assert mailoutbox == []

    execution = execution_of(res)
    assert execution.state == "reverted"
    invoked = statuses(execution)
    assert invoked["reserve-inventory"] == "COMPLETED"
    assert invoked["authorize-payment"] == "FAILED"
    assert "create-order-record" not in invoked
    compensated = statuses(execution, "compensate")
    assert compensated["reserve-inventory"] == "COMPLETED"  # release-inventory ran
    assert compensated["authorize-payment"] == "COMPLETED"  # refund-payment: nothing held


def test_create_order_with_invalid_input_fails_without_side_effects():
    res = workflow_engine.run(
        "create-order", input={"customer": ADA, "items": [{"sku": "piano"}]}, throw_on_error=False
    )
    assert res.transaction.get_state() == "reverted"
    assert "Unknown product" in res.errors[0].error["message"]
    assert services.inventory.stock == services.INITIAL_STOCK


def test_accept_quote_waits_for_approval_then_finishes(mailoutbox):
    quote = {
        "quote_id": "Q-7",
        "customer": ADA,
        "items": [{"sku": "course", "quantity": 2}],
        "discount_percent": 10,
    }
    res = workflow_engine.run("accept-quote", input=quote)
    tx = res.transaction

    execution = execution_of(res)
    assert execution.state == "invoking"
    assert statuses(execution)["await-quote-approval"] == "WAITING"
    assert services.orders.orders == {}

    done = workflow_engine.set_step_success(
        workflow_id="accept-quote",
        transaction_id=tx.transaction_id,
        step_id="await-quote-approval",
        response={"approved_by": "Grace"},
    )

    assert done.transaction.get_state() == "done"
    execution.refresh_from_db()
    assert execution.state == "done"
    assert statuses(execution)["send-quote-accepted-email"] == "COMPLETED"
    [order] = services.orders.orders.values()
    assert (order["quote_id"], order["approved_by"], order["total"]) == ("Q-7", "Grace", 17820)
    [mail] = mailoutbox
    assert mail.to == [ADA["email"]] and "Grace" in mail.body


def test_accept_quote_rejected_by_the_approver_is_reverted(mailoutbox):
    res = workflow_engine.run(
        "accept-quote", input={"customer": ADA, "items": [{"sku": "mug", "quantity": 1}]}
    )
    key = f"accept-quote:{res.transaction.transaction_id}:await-quote-approval:invoke"

    rejected = workflow_engine.set_step_success(
        key, response={"approved": False, "reason": "too cheap"}
    )

    assert rejected.transaction.get_state() == "reverted"
    assert "too cheap" in rejected.errors[0].error["message"]
    assert services.orders.orders == {}
    assert mailoutbox == []


def test_notify_users_emails_the_valid_users_and_fails_at_iteration_2(mailoutbox):
    users = [
        {"name": "Ada", "email": "ada@example.com"},
        {"name": "Bob", "email": "bob-at-example.com"},
        {"name": "Carol", "email": "carol@example.com"},
    ]
    res = workflow_engine.run(
        "notify-users", input={"subject": "Hi", "users": users}, throw_on_error=False
    )

    assert res.transaction.get_state() in ("reverted", "failed")
    assert "bob-at-example.com" in res.errors[0].error["message"]
    assert [mail.to for mail in mailoutbox] == [["ada@example.com"]]
    # One row per iteration (the loop step's own row has no iteration); 3 never ran.
    rows = StepExecution.objects.filter(
        execution=execution_of(res), handler_type="invoke", iteration__gte=1
    )
    assert {(row.iteration, row.total_items, row.status) for row in rows} == {
        (1, 3, "COMPLETED"),
        (2, 3, "FAILED"),
    }


def test_notify_users_emails_everyone_when_every_address_is_valid(mailoutbox):
    users = [{"name": "Ada", "email": "ada@example.com"}, {"name": "Eve", "email": "eve@ex.org"}]
    res = workflow_engine.run(
        "notify-users", input={"subject": "Hi", "message": "News", "users": users}
    )

    assert res.result == {"sent": [{"to": "ada@example.com"}, {"to": "eve@ex.org"}]}
    assert [mail.to for mail in mailoutbox] == [["ada@example.com"], ["eve@ex.org"]]
    assert mailoutbox[1].body == "Hello Eve,\n\nNews"


def test_executions_report_is_scheduled_every_minute_and_runs_when_called():
    schedule = get_workflow("executions-report").options["schedule"]
    assert schedule["cron"] == "* * * * *"
    workflow_engine.run("hello-workflow", input={"name": "Ada"})

    res = workflow_engine.run("executions-report")

    assert res.result["by_state"] == {"done": 1}  # hello-workflow's run, not its own
    assert res.result["total"] == sum(res.result["by_state"].values())
    assert execution_of(res).state == "done"


def test_every_example_workflow_is_stored_with_a_retention_time():
    for name in ("hello-workflow", "create-order", "accept-quote", "notify-users"):
        options = get_workflow(name).options
        assert options["store"] is True and options["retention_time"], name


def test_run_examples_command_reports_the_four_expected_outcomes():
    out = io.StringIO()
    call_command("run_examples", stdout=out)

    assert "All 4 examples ended as expected." in out.getvalue()
    workflow_ids = {example.workflow_id for example in EXAMPLES}
    runs = sorted(
        WorkflowExecution.objects.filter(workflow_id__in=workflow_ids).values_list(
            "workflow_id", "state"
        )
    )
    assert runs[:3] == [
        ("accept-quote", "invoking"),
        ("create-order", "done"),
        ("create-order", "reverted"),
    ]
    assert runs[3:] in ([("notify-users", "reverted")], [("notify-users", "failed")])

    again = io.StringIO()
    call_command("run_examples", "--once", stdout=again)
    assert "not running them again" in again.getvalue()
    assert WorkflowExecution.objects.filter(workflow_id="create-order").count() == 2
