"""``manage.py run_examples``: run the demo's example workflows once and report.

The demo seeds its database with this command: an order that goes through, one whose
card is declined (and is compensated), a quote left waiting for approval and a
notification loop whose second iteration fails. Those failures are the point of the
demo, so they are expected; the command fails only when a run did *not* end the way
it should (the expected outcome is checked on the stored execution).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import django
from django.core import mail
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test.utils import override_settings
from django.urls import reverse

from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import WorkflowNotFound

# How long to wait for the background part of a run (an async step's handler) to be
# recorded, when it is handed to the immediate backend or a worker.
SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class Example:
    title: str
    workflow_id: str
    input: dict[str, Any]
    expected: str
    check: Callable[[WorkflowExecution], str | None]


def _state_is(*states: str) -> Callable[[WorkflowExecution], str | None]:
    def check(execution: WorkflowExecution) -> str | None:
        if execution.state not in states:
            return f"state is {execution.state!r}, expected {' or '.join(states)}"
        return None

    return check


def _compensated(execution: WorkflowExecution) -> str | None:
    problem = _state_is("reverted")(execution)
    if problem:
        return problem
    rows = execution.step_executions.filter(step_id="reserve-inventory")
    if not rows.filter(handler_type="compensate", status="COMPLETED").exists():
        return "reserve-inventory was not compensated"
    return None


def _waiting(execution: WorkflowExecution) -> str | None:
    problem = _state_is("invoking")(execution)
    if problem:
        return problem
    if not execution.step_executions.filter(
        step_id="await-quote-approval", status="WAITING"
    ).exists():
        return "await-quote-approval is not waiting for a response"
    return None


def _second_iteration_failed(execution: WorkflowExecution) -> str | None:
    problem = _state_is("reverted", "failed")(execution)
    if problem:
        return problem
    if not execution.step_executions.filter(
        handler_type="invoke", status="FAILED", iteration=2
    ).exists():
        return "iteration 2 did not fail"
    return None


EXAMPLES = [
    Example(
        "An order that goes through (a T-shirt and an e-book)",
        "create-order",
        {
            "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
            "items": [{"sku": "tshirt", "quantity": 2}, {"sku": "ebook", "quantity": 1}],
            "payment": {"token": "tok_visa"},
        },
        "done; download links issued; loyalty points awarded by the order_created hook",
        _state_is("done"),
    ),
    Example(
        "An order whose card is declined",
        "create-order",
        {
            "customer": {"name": "Grace Hopper", "email": "grace@example.com"},
            "items": [{"sku": "mug", "quantity": 3}],
            "payment": {"token": "tok_chargeDeclined"},
        },
        "reverted; authorize-payment failed, the inventory was released",
        _compensated,
    ),
    Example(
        "A quote waiting for a sales manager's approval",
        "accept-quote",
        {
            "quote_id": "Q-1001",
            "customer": {"name": "Linus Torvalds", "email": "linus@example.com"},
            "items": [{"sku": "course", "quantity": 10}],
            "discount_percent": 15,
        },
        "invoking; await-quote-approval waits (complete it in the admin or the API)",
        _waiting,
    ),
    Example(
        "A newsletter to three users, the second with an invalid address",
        "notify-users",
        {
            "subject": "Workflows are here",
            "message": "Steps, compensation and retries, now in Django.",
            "users": [
                {"name": "Ada", "email": "ada@example.com"},
                {"name": "Bob", "email": "bob-at-example.com"},
                {"name": "Carol", "email": "carol@example.com"},
            ],
        },
        "reverted; iteration 2 of send-user-email failed (invalid address)",
        _second_iteration_failed,
    ),
]


def in_memory_email() -> override_settings:
    """Send email to ``mail.outbox`` (through MAILERS on Django 6.1 and later)."""
    backend = "django.core.mail.backends.locmem.EmailBackend"
    if django.VERSION >= (6, 1):
        return override_settings(MAILERS={"default": {"BACKEND": backend}})
    return override_settings(EMAIL_BACKEND=backend)


class Command(BaseCommand):
    help = (
        "Run the example workflows once (an order, a declined order, a quote waiting "
        "for approval, a notification loop with a failing iteration) and report."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="Do nothing when the database already holds executions of the examples.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workflow_ids = sorted({example.workflow_id for example in EXAMPLES})
        if (
            options["once"]
            and workflow_engine.list_workflow_executions({"workflow_id": workflow_ids}).exists()
        ):
            self.stdout.write(
                "The example workflows have run in this database before; not running "
                "them again (`python manage.py run_examples` adds more runs)."
            )
            return
        # The emails the examples send are kept in memory and listed one line each,
        # rather than dumped whole by the console backend between the results.
        with in_memory_email():
            problems = self.run_examples()
        if problems:
            raise CommandError(
                f"{len(problems)} example(s) did not end as expected: " + "; ".join(problems)
            )
        self.stdout.write(self.style.SUCCESS(f"\nAll {len(EXAMPLES)} examples ended as expected."))

    def run_examples(self) -> list[str]:
        """Run every example and report on each; returns what went wrong."""
        problems = []
        for number, example in enumerate(EXAMPLES, start=1):
            self.stdout.write(
                f"\n[{number}/{len(EXAMPLES)}] {example.title}: {example.workflow_id}"
            )
            problem, execution = self.run_example(example)
            if execution is not None:
                url = reverse("admin:workflows_app_workflowexecution_change", args=[execution.pk])
                self.stdout.write(f"    execution {execution.pk}  ({url})")
            if problem:
                problems.append(f"{example.workflow_id}: {problem}")
                self.stdout.write(self.style.ERROR(f"    UNEXPECTED: {problem}"))
            else:
                self.stdout.write(self.style.SUCCESS(f"    as expected: {example.expected}"))
        return problems

    def run_example(self, example: Example) -> tuple[str | None, WorkflowExecution | None]:
        """Run one example; returns (what went wrong or None, its stored execution)."""
        sent_before = len(getattr(mail, "outbox", []))
        try:
            res = workflow_engine.run(
                example.workflow_id, input=example.input, throw_on_error=False
            )
        except WorkflowNotFound:
            return f"the workflow {example.workflow_id!r} is not registered", None
        except Exception as exc:
            return f"the run raised {type(exc).__name__}: {exc}", None
        for message in getattr(mail, "outbox", [])[sent_before:]:
            self.stdout.write(f"    emailed {', '.join(message.to)}: {message.subject}")
        for error in res.errors:
            self.stdout.write(f"    step {error.step_id} failed: {error.error.get('message')}")
        transaction_id = res.transaction.transaction_id
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            execution = workflow_engine.list_workflow_executions(
                {"workflow_id": example.workflow_id, "transaction_id": transaction_id}
            ).first()
            problem = "no stored execution" if execution is None else example.check(execution)
            if problem is None or time.monotonic() > deadline:
                return problem, execution
            time.sleep(0.2)
