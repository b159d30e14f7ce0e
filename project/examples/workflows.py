"""Example workflows of the demo project, discovered at start-up by workflows_app.

Any installed app's ``workflows`` module is imported when Django starts, so the web
process and the workers know these workflows by name. Each example shows one part
of the SDK with a business process it suits:

- ``hello-workflow``: the smallest stored workflow;
- ``create-order``: compensation, ``parallelize``, ``when`` and a hook;
- ``accept-quote``: a long-running step that waits for a person's approval;
- ``notify-users``: ``for_each`` over a list, with a failing iteration;
- ``executions-report``: a workflow that runs on a schedule.

The outside systems they call are fakes, in :mod:`project.examples.services`.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db.models import Count
from django.utils import timezone

from workflows_app.models import WorkflowExecution
from workflows_app.sdk import (
    Reference,
    StepContext,
    StepResponse,
    WorkflowResponse,
    create_hook,
    create_step,
    create_workflow,
    for_each,
    parallelize,
    transform,
    when,
)

from .services import CATALOGUE, CardDeclined, OutOfStock, inventory, loyalty, orders, payments

DAY = 24 * 3600


def money(cents: int, currency: str = "EUR") -> str:
    """``2500`` -> ``"25.00 EUR"``, for the emails."""
    return f"{cents / 100:.2f} {currency}"


def _customer(value: Any) -> dict[str, str]:
    """The ``customer`` of an order or quote, checked; fails the step for good if bad."""
    customer = value.get("customer") if isinstance(value, dict) else None
    if not isinstance(customer, dict) or not customer.get("email"):
        StepResponse.permanent_failure("A customer with an email address is required")
    try:
        validate_email(customer["email"])
    except ValidationError:
        StepResponse.permanent_failure(f"Invalid customer email address: {customer['email']!r}")
    return {"name": str(customer.get("name") or customer["email"]), "email": customer["email"]}


def _priced_lines(value: Any) -> list[dict[str, Any]]:
    """Catalogue lines for ``value["items"]`` (``[{"sku", "quantity"}]``), checked."""
    items = value.get("items") if isinstance(value, dict) else None
    if not isinstance(items, list) or not items:
        StepResponse.permanent_failure("At least one item is required")
    lines = []
    for item in items:
        sku = item.get("sku") if isinstance(item, dict) else None
        product = CATALOGUE.get(sku) if isinstance(sku, str) else None
        if product is None:
            StepResponse.permanent_failure(f"Unknown product: {sku!r}")
        quantity = item.get("quantity", 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            StepResponse.permanent_failure(f"Invalid quantity for {sku}: {quantity!r}")
        lines.append(
            {
                "sku": sku,
                "title": product["title"],
                "quantity": quantity,
                "unit_price": product["price"],
                "amount": product["price"] * quantity,
                "digital": product["digital"],
            }
        )
    return lines


# ---------------------------------------------------------------------------
# hello-workflow
# ---------------------------------------------------------------------------


@create_step("say-hello")
def say_hello(name: str | None, ctx: StepContext) -> StepResponse:
    return StepResponse(f"Hello, {name or 'world'}!")


@create_workflow("hello-workflow", store=True, retention_time=99999)
def hello_workflow(input: Reference) -> WorkflowResponse:
    greeting = say_hello(input["name"])
    return WorkflowResponse({"message": greeting})


# ---------------------------------------------------------------------------
# create-order: validate -> reserve -> (tax | payment) -> order -> [links] -> email
# ---------------------------------------------------------------------------


@create_step("validate-order")
def validate_order(data: Any, ctx: StepContext) -> dict[str, Any]:
    """Price the cart from the catalogue; bad input fails at once, without retries."""
    customer = _customer(data)
    lines = _priced_lines(data)
    payment = data.get("payment")
    if not isinstance(payment, dict) or not payment.get("token"):
        StepResponse.permanent_failure("A payment token is required")
    return {
        "customer": customer,
        "lines": lines,
        "currency": "EUR",
        "subtotal": sum(line["amount"] for line in lines),
        "has_digital_items": any(line["digital"] for line in lines),
        "payment": {"token": payment["token"]},
    }


@create_step("reserve-inventory", max_retries=2)
def reserve_inventory(order: dict[str, Any], ctx: StepContext) -> StepResponse:
    """Hold stock for the physical lines; digital products need none."""
    physical = [line for line in order["lines"] if not line["digital"]]
    if not physical:
        return StepResponse({"reservation_id": None, "lines": []}, None)
    try:
        reservation_id = inventory.reserve(physical, key=ctx.idempotency_key)
    except OutOfStock as exc:
        StepResponse.permanent_failure(str(exc))
    held = [{"sku": line["sku"], "quantity": line["quantity"]} for line in physical]
    return StepResponse({"reservation_id": reservation_id, "lines": held}, reservation_id)


@reserve_inventory.compensate
def release_inventory(reservation_id: str | None, ctx: StepContext) -> None:
    """Give the held units back (nothing to do when nothing was reserved)."""
    if reservation_id:
        inventory.release(reservation_id)


@create_step("calculate-tax")
def calculate_tax(order: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """VAT per line, at each product's rate, rounded to the cent."""
    lines = [
        {
            "sku": line["sku"],
            "tax": round(line["amount"] * CATALOGUE[line["sku"]]["tax_rate"] / 100),
        }
        for line in order["lines"]
    ]
    return {"lines": lines, "total": sum(line["tax"] for line in lines)}


@create_step("authorize-payment", max_retries=2)
def authorize_payment(order: dict[str, Any], ctx: StepContext) -> StepResponse:
    """Hold the order's subtotal on the card; a declined card is not retried."""
    try:
        payment = payments.authorize(
            order["subtotal"], order["currency"], order["payment"]["token"], ctx.idempotency_key
        )
    except CardDeclined as exc:
        StepResponse.permanent_failure(str(exc))
    return StepResponse(payment, payment["id"])


@authorize_payment.compensate
def refund_payment(payment_id: str | None, ctx: StepContext) -> dict[str, Any] | None:
    """Release the hold; a declined authorisation left nothing to refund."""
    if not payment_id:
        return None
    return payments.refund(payment_id)


def _order_record(values: dict[str, Any]) -> dict[str, Any]:
    order, tax = values["order"], values["tax"]
    return {
        "customer": order["customer"],
        "lines": order["lines"],
        "currency": order["currency"],
        "subtotal": order["subtotal"],
        "tax": tax["total"],
        "total": order["subtotal"] + tax["total"],
        "has_digital_items": order["has_digital_items"],
        "payment_id": values["payment"]["id"],
        "reservation_id": values["reservation"]["reservation_id"],
    }


@create_step("create-order-record")
def create_order_record(record: dict[str, Any], ctx: StepContext) -> StepResponse:
    order = orders.create(record)
    return StepResponse(order, order["id"])


@create_order_record.compensate
def cancel_order_record(order_id: str | None, ctx: StepContext) -> None:
    if order_id:
        orders.cancel(order_id)


@create_step("issue-download-links")
def issue_download_links(order: dict[str, Any], ctx: StepContext) -> list[dict[str, str]]:
    """One download link per digital line (only runs for orders that have some)."""
    return [
        {"sku": line["sku"], "url": f"https://downloads.example.com/{order['id']}/{line['sku']}"}
        for line in order["lines"]
        if line["digital"]
    ]


@create_step("send-order-confirmation")
def send_order_confirmation(values: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Email the customer through Django's email backend (the console in the demo)."""
    order, links = values["order"], values["links"] or []
    body = [f"Hello {order['customer']['name']},", "", "thank you for your order:", ""]
    body += [
        f"  {line['quantity']} x {line['title']}: {money(line['amount'], order['currency'])}"
        for line in order["lines"]
    ]
    body += ["", f"Total (incl. {money(order['tax'])} VAT): {money(order['total'])}"]
    if links:
        body += ["", "Your downloads:"] + [f"  {link['url']}" for link in links]
    subject = f"Order {order['id']} confirmed"
    send_mail(subject, "\n".join(body), None, [order["customer"]["email"]])
    return {"to": order["customer"]["email"], "subject": subject}


def _order_result(values: dict[str, Any]) -> dict[str, Any] | None:
    order = values["order"]
    if order is None:
        # The result is resolved after a failure too: no order, no result.
        return None
    return {
        "order_id": order["id"],
        "total": order["total"],
        "currency": order["currency"],
        "download_links": values["links"] or [],
        "loyalty": values["loyalty"],
    }


@create_workflow(
    "create-order",
    store=True,
    retention_time={"done": 7 * DAY, "reverted": 30 * DAY, "failed": 30 * DAY},
)
def create_order(input: Reference) -> WorkflowResponse:
    order = validate_order(input)
    reservation = reserve_inventory(order)
    tax, payment = parallelize(calculate_tax(order), authorize_payment(order))
    record = create_order_record(
        transform(
            {"order": order, "tax": tax, "payment": payment, "reservation": reservation},
            _order_record,
        )
    )
    links = when(record, lambda r: r["has_digital_items"]).then(
        lambda: issue_download_links(record)
    )
    send_order_confirmation({"order": record, "links": links})
    created = create_hook("order_created", {"order": record})
    result = transform(
        {"order": record, "links": links, "loyalty": created.get_result()}, _order_result
    )
    return WorkflowResponse(result, hooks=[created])


def award_loyalty_points(data: dict[str, Any], ctx: StepContext) -> StepResponse:
    """The ``order_created`` hook's handler: one point per euro spent."""
    order = data["order"]
    customer, points = order["customer"]["email"], order["total"] // 100
    balance = loyalty.award(customer, points)
    return StepResponse(
        {"customer": customer, "points": points, "balance": balance},
        {"customer": customer, "points": points},
    )


def revoke_loyalty_points(awarded: dict[str, Any] | None, ctx: StepContext) -> None:
    if awarded:
        loyalty.revoke(awarded["customer"], awarded["points"])


# What another app would do to extend create-order without changing it.
create_order.hooks.order_created(award_loyalty_points, revoke_loyalty_points)


# ---------------------------------------------------------------------------
# accept-quote: a long-running approval step completed from the admin or the API
# ---------------------------------------------------------------------------


@create_step("load-quote")
def load_quote(data: Any, ctx: StepContext) -> dict[str, Any]:
    """Price the quote, with its negotiated discount."""
    customer = _customer(data)
    lines = _priced_lines(data)
    discount = data.get("discount_percent", 0)
    if not isinstance(discount, int | float) or not 0 <= discount <= 50:
        StepResponse.permanent_failure(f"The discount must be 0-50 %, not {discount!r}")
    subtotal = sum(line["amount"] for line in lines)
    return {
        "quote_id": str(data.get("quote_id") or ctx.transaction_id),
        "customer": customer,
        "lines": lines,
        "currency": "EUR",
        "discount_percent": discount,
        "total": subtotal - round(subtotal * discount / 100),
    }


@create_step("await-quote-approval", async_=True)
def await_quote_approval(quote: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Ask a sales manager; the step then waits until someone answers.

    Returning a plain value from an ``async_`` step leaves it ``waiting_response``:
    the answer comes from the admin ("Mark succeeded") or the API
    (``POST /api/workflows/accept-quote/steps/success/``), and becomes the output.
    """
    return {"quote_id": quote["quote_id"], "total": quote["total"], "requested": True}


def _accepted_order(values: dict[str, Any]) -> dict[str, Any]:
    quote, approval = values["quote"], values["approval"]
    return {"quote": quote, "approval": approval if isinstance(approval, dict) else {}}


@create_step("convert-quote-to-order")
def convert_quote_to_order(values: dict[str, Any], ctx: StepContext) -> StepResponse:
    """Turn the approved quote into an order; ``{"approved": false}`` rejects it."""
    quote, approval = values["quote"], values["approval"]
    if approval.get("approved") is False:
        StepResponse.permanent_failure(
            f"Quote {quote['quote_id']} was rejected: {approval.get('reason') or 'no reason given'}"
        )
    order = orders.create(
        {
            "customer": quote["customer"],
            "lines": quote["lines"],
            "currency": quote["currency"],
            "total": quote["total"],
            "quote_id": quote["quote_id"],
            "approved_by": approval.get("approved_by") or "a sales manager",
        }
    )
    return StepResponse(order, order["id"])


@convert_quote_to_order.compensate
def cancel_quote_order(order_id: str | None, ctx: StepContext) -> None:
    if order_id:
        orders.cancel(order_id)


@create_step("send-quote-accepted-email")
def send_quote_accepted_email(order: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    subject = f"Your quote {order['quote_id']} was accepted"
    body = (
        f"Hello {order['customer']['name']},\n\n"
        f"your quote was approved by {order['approved_by']}; order {order['id']} "
        f"({money(order['total'], order['currency'])}) is on its way."
    )
    send_mail(subject, body, None, [order["customer"]["email"]])
    return {"to": order["customer"]["email"], "subject": subject}


@create_workflow("accept-quote", store=True, retention_time=30 * DAY)
def accept_quote(input: Reference) -> WorkflowResponse:
    quote = load_quote(input)
    approval = await_quote_approval(quote)
    order = convert_quote_to_order(
        transform({"quote": quote, "approval": approval}, _accepted_order)
    )
    send_quote_accepted_email(order)
    return WorkflowResponse({"order_id": order.id, "quote_id": quote.quote_id})


# ---------------------------------------------------------------------------
# notify-users: one email per user with for_each
# ---------------------------------------------------------------------------


@create_step("prepare-notifications")
def prepare_notifications(data: Any, ctx: StepContext) -> list[dict[str, str]]:
    """One message per user in ``data["users"]`` (``[{"name", "email"}]``)."""
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, list):
        StepResponse.permanent_failure('"users" must be a list of {"name", "email"}')
    subject = str(data.get("subject") or "News from the workflows demo")
    message = str(data.get("message") or "")
    return [
        {
            "to": str(user.get("email") if isinstance(user, dict) else user),
            "subject": subject,
            "body": f"Hello {user.get('name') if isinstance(user, dict) else user},\n\n{message}",
        }
        for user in users
    ]


@create_step("send-user-email")
def send_user_email(message: dict[str, str], ctx: StepContext) -> dict[str, str]:
    """Send one email; an invalid address fails this iteration for good.

    There is no compensation: a sent email cannot be taken back.
    """
    try:
        validate_email(message["to"])
    except ValidationError:
        StepResponse.permanent_failure(f"Invalid email address: {message['to']!r}")
    send_mail(message["subject"], message["body"], None, [message["to"]])
    return {"to": message["to"]}


@create_workflow("notify-users", store=True, retention_time=7 * DAY)
def notify_users(input: Reference) -> WorkflowResponse:
    messages = prepare_notifications(input)
    sent = for_each(messages, send_user_email)
    return WorkflowResponse({"sent": sent})


# ---------------------------------------------------------------------------
# executions-report: scheduled every minute (``manage.py workflows setup``)
# ---------------------------------------------------------------------------


@create_step("count-recent-executions")
def count_recent_executions(data: Any, ctx: StepContext) -> dict[str, Any]:
    """How many workflow runs started in the last hour, by state (this one aside)."""
    since = timezone.now() - datetime.timedelta(hours=1)
    rows = (
        WorkflowExecution.objects.filter(created_at__gte=since)
        .exclude(workflow_id=ctx.workflow_id, transaction_id=ctx.transaction_id)
        .values("state")
        .annotate(count=Count("id"))
        .order_by("state")
    )
    by_state = {row["state"]: row["count"] for row in rows}
    return {"since": since.isoformat(), "by_state": by_state, "total": sum(by_state.values())}


@create_workflow(
    "executions-report",
    store=True,
    retention_time={"done": 3600, "failed": 7 * DAY, "reverted": 7 * DAY},
    schedule={"cron": "* * * * *", "concurrency": "forbid"},
)
def executions_report(input: Reference) -> WorkflowResponse:
    return WorkflowResponse(count_recent_executions(input))
