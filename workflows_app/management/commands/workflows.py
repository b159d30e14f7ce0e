"""``manage.py workflows <subcommand>``: run, inspect and maintain workflows.

A thin front end on :data:`workflows_app.engine.workflow_engine`: each subcommand
parses its arguments, calls the engine and prints the answer. Failures raise
``CommandError`` (non-zero exit status, message on stderr).

A subcommand is one function decorated with :func:`subcommand`; its optional
``arguments`` callback adds the subcommand's own options to its parser.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError
from django.utils import timezone

from workflows_app import jsoninput, redaction
from workflows_app.bench import runner as benchmarks
from workflows_app.checks import missing_tables
from workflows_app.engine import ExecutionNotFound, workflow_engine
from workflows_app.orchestration import runtime
from workflows_app.presentation import error_message
from workflows_app.sdk import (
    InvalidTransactionIdError,
    NonSerializableCheckpointError,
    PayloadTooLargeError,
    TransactionAlreadyStarted,
    TransactionNotFound,
    TransactionState,
    WorkflowError,
    WorkflowNotFound,
)

# Errors the engine raises on purpose for bad requests: reported without a traceback.
REQUEST_ERRORS = (
    WorkflowNotFound,
    InvalidTransactionIdError,
    TransactionAlreadyStarted,
    TransactionNotFound,
    PayloadTooLargeError,
    NonSerializableCheckpointError,
    WorkflowError,
)
STATES = tuple(state.value for state in TransactionState)
FAILED_STATES = frozenset({"failed", "reverted"})


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    handler: Callable[[Command, dict[str, Any]], None]
    arguments: Callable[[CommandParser], None] | None = None


SUBCOMMANDS: dict[str, Subcommand] = {}


def subcommand(
    name: str, help: str, arguments: Callable[[CommandParser], None] | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``handler(command, options)`` as ``manage.py workflows <name>``."""

    def register(handler: Callable[..., None]) -> Callable[..., None]:
        SUBCOMMANDS[name] = Subcommand(name, help, handler, arguments)
        return handler

    return register


class Command(BaseCommand):
    help = "Run, inspect and maintain workflows (list, run, executions, show, cleanup, ...)."

    def add_arguments(self, parser: CommandParser) -> None:
        subparsers = parser.add_subparsers(
            dest="subcommand", metavar="subcommand", title="subcommands", required=True
        )
        for sub in SUBCOMMANDS.values():
            sub_parser = subparsers.add_parser(sub.name, help=sub.help, description=sub.help)
            if sub.arguments is not None:
                sub.arguments(sub_parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            SUBCOMMANDS[options["subcommand"]].handler(self, options)
        except DatabaseError as exc:
            missing = missing_tables()
            if not missing:
                raise
            raise CommandError(
                f"The database has no table {', '.join(missing)}: "
                "run `python manage.py migrate` first."
            ) from exc

    # Output helpers

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Print ``rows`` as left-aligned columns under ``headers``."""
        cells = [[_cell(value) for value in row] for row in rows]
        widths = [len(h) for h in headers]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

        def line(values: Sequence[str]) -> str:
            return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

        self.stdout.write(line(headers))
        self.stdout.write(line(["-" * w for w in widths]))
        for row in cells:
            self.stdout.write(line(row))


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "isoformat"):
        value = timezone.localtime(value) if timezone.is_aware(value) else value
        return value.isoformat(sep=" ", timespec="seconds")
    return " ".join(str(value).split())


def _to_json(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# list


@subcommand("list", "List the registered workflow definitions.")
def list_definitions(command: Command, options: dict) -> None:
    definitions = workflow_engine.list_definitions()
    if not definitions:
        command.stdout.write("No workflows are registered.")
        return
    command.table(
        ("name", "steps", "store", "hooks"),
        (
            (
                workflow.name,
                len(workflow.definition.nodes),
                bool(workflow.options.get("store")),
                ", ".join(hook.name for hook in workflow.hooks),
            )
            for workflow in definitions
        ),
    )


# run


def _run_arguments(parser: CommandParser) -> None:
    parser.add_argument("workflow", help="Name the workflow is registered under.")
    parser.add_argument("--input", dest="input", help="The workflow's input, as JSON.")
    parser.add_argument(
        "--transaction-id", dest="transaction_id", help="Transaction id (default: generated)."
    )


@subcommand("run", "Run a registered workflow and print its outcome.", _run_arguments)
def run_workflow(command: Command, options: dict) -> None:
    payload = None
    if options["input"] is not None:
        try:
            payload = jsoninput.loads(options["input"], "--input")
        except jsoninput.JSONInputError as exc:
            raise CommandError(str(exc)) from None
    name = options["workflow"]
    try:
        result = workflow_engine.run(
            name,
            input=payload,
            transaction_id=options["transaction_id"],
            throw_on_error=False,
        )
    except REQUEST_ERRORS as exc:
        raise CommandError(str(exc)) from None
    tx = result.transaction
    redact = redaction.for_result(result)
    state = str(tx.state)
    execution_id = tx.stored and (
        workflow_engine.list_workflow_executions(
            filters={
                "workflow_id": tx.workflow_id,
                "transaction_id": tx.transaction_id,
                "run_id": tx.run_id,
            }
        )
        .values_list("id", flat=True)
        .first()
    )
    command.stdout.write(f"State: {state}")
    command.stdout.write(f"Execution: {execution_id or '- (not stored)'}")
    command.stdout.write(f"Transaction: {tx.transaction_id}")
    command.stdout.write(f"Run: {tx.run_id}")
    if tx.has_finished():
        command.stdout.write(f"Result: {_to_json(redact(result.result))}")
    else:
        command.stdout.write("The transaction continues in the background.")
    if state in FAILED_STATES:
        errors = "; ".join(
            f"{error.step_id} ({error.handler_type}): {error.error.get('message')}"
            for error in result.errors
        )
        errors = redact.text(errors)
        raise CommandError(f"Workflow {name} {state}" + (f": {errors}" if errors else "."))


# executions


def _executions_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--state",
        action="append",
        choices=STATES,
        help="Only executions in this state (repeatable).",
    )
    parser.add_argument("--workflow", help="Only executions of this workflow.")
    parser.add_argument(
        "--waiting",
        action="store_true",
        help="Only unfinished executions with a step waiting for a response.",
    )
    parser.add_argument(
        "--limit", type=_positive_int, default=50, help="Show at most this many (default 50)."
    )


@subcommand("executions", "List stored executions, newest first.", _executions_arguments)
def list_executions(command: Command, options: dict) -> None:
    filters: dict[str, Any] = {}
    if options["state"]:
        filters["state"] = options["state"]
    if options["workflow"]:
        filters["workflow_id"] = options["workflow"]
    if options["waiting"]:
        filters["waiting"] = True
    executions = list(
        workflow_engine.list_workflow_executions(filters=filters, limit=options["limit"])
    )
    if not executions:
        command.stdout.write("No workflow executions.")
        return
    command.table(
        ("id", "workflow", "transaction", "state", "status", "created"),
        (
            (e.pk, e.workflow_id, e.transaction_id, e.state, e.status, e.created_at)
            for e in executions
        ),
    )


# show


def _show_arguments(parser: CommandParser) -> None:
    parser.add_argument("id", help="Execution id (wf_exec_...) or transaction id.")
    parser.add_argument(
        "--workflow",
        help="The workflow of the transaction id, when several workflows use that id.",
    )


def _find_execution(identifier: str, workflow_id: str | None) -> Any:
    """The execution with this id, else the newest run of this transaction id."""
    if workflow_id is None:
        try:
            return workflow_engine.retrieve_workflow_execution(identifier)
        except ExecutionNotFound:
            pass
    filters = {"transaction_id": identifier}
    if workflow_id is not None:
        filters["workflow_id"] = workflow_id
    runs = list(workflow_engine.list_workflow_executions(filters=filters, limit=100))
    workflows = sorted({run.workflow_id for run in runs})
    if len(workflows) > 1:
        raise CommandError(
            f"Transaction {identifier} exists in several workflows ({', '.join(workflows)}): "
            "choose one with --workflow."
        )
    if not runs:
        where = f" of workflow {workflow_id}" if workflow_id else ""
        raise CommandError(
            f"No workflow execution has the id or transaction id {identifier}{where}."
        )
    return runs[0]


@subcommand("show", "Show one stored execution and its step log.", _show_arguments)
def show_execution(command: Command, options: dict) -> None:
    execution = _find_execution(options["id"], options["workflow"])
    header = (
        ("ID", execution.pk),
        ("Workflow", execution.workflow_id),
        ("Transaction", execution.transaction_id),
        ("Run", execution.run_id),
        ("State", execution.state),
        ("Status", execution.status),
        ("Started", execution.started_at),
        ("Ended", execution.ended_at),
        ("Duration ms", execution.duration_ms),
        ("Error", error_message(execution.error)),
    )
    for label, value in header:
        command.stdout.write(f"{label + ':':13} {_cell(value)}")
    steps = execution.steps_log()
    command.stdout.write("")
    if not steps:
        command.stdout.write("No step attempts recorded.")
        return
    command.table(
        ("step", "handler", "attempt", "status", "duration ms", "error"),
        (
            (
                step["stepId"],
                step["handlerType"],
                step["attempt"],
                step["status"],
                step["durationMs"],
                error_message(step["error"]),
            )
            for step in steps
        ),
    )


# cleanup


def _cleanup_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--batch-size",
        dest="batch_size",
        type=_positive_int,
        default=10000,
        help="Rows deleted per batch (default 10000).",
    )


@subcommand("cleanup", "Delete finished executions past their retention.", _cleanup_arguments)
def cleanup(command: Command, options: dict) -> None:
    out = command.stdout
    progress = None
    if out.isatty():

        def progress(deleted: int) -> None:
            out.write(f"\rDeleting expired workflow executions... {deleted}", ending="")
            out.flush()

    deleted = workflow_engine.clear_expired_executions(options["batch_size"], progress=progress)
    prefix = "\r\033[K" if progress is not None else ""
    out.write(f"{prefix}Deleted {deleted} expired workflow executions.")


# recover


@subcommand(
    "recover",
    "Hand stored executions whose worker died back to the background workers.",
)
def recover(command: Command, options: dict) -> None:
    # The command only queues: steps run in the workers (or, with the immediate
    # backend, here), never in a process that the operator may stop at any time.
    count = workflow_engine.recover(hand_over=True)
    command.stdout.write(f"Handed {count} workflow executions to the workers.")


# setup


@subcommand(
    "setup",
    "Create or update the background schedules: scheduled workflows, cleanup, recovery.",
)
def setup(command: Command, options: dict) -> None:
    try:
        done = workflow_engine.setup_schedules()
    except (ValueError, ImproperlyConfigured) as exc:
        raise CommandError(str(exc)) from None
    for name, action in done:
        command.stdout.write(f"{action:<10} {name}")
    backend = getattr(runtime.scheduler, "name", "?")
    command.stdout.write(f"{len(done)} schedules ({backend} backend).")


# bench


def _bench_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--n", type=_positive_int, default=2000, help="Timed runs per workload (default 2000)."
    )
    parser.add_argument(
        "--only",
        help="Comma-separated workloads to run (default: all but background, which starts "
        "a django-q2 cluster of 2 workers and needs PostgreSQL).",
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object on one line.")
    parser.add_argument(
        "--durability",
        choices=benchmarks.DURABILITY_MODES,
        help="WORKFLOWS['DURABILITY'] for the stored workloads (default: the setting).",
    )
    parser.add_argument(
        "--allow-sqlite",
        action="store_true",
        help="Run the background workload on SQLite too (refused by default: it locks).",
    )
    parser.add_argument(
        "--concurrency",
        help="Runner processes at once, e.g. 8 or 1,4,8: each runs --n runs of every "
        "selected workload; reports the combined runs/s per count (PostgreSQL for the "
        "stored workloads).",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        help="Start the background runs at this many per second (default: as fast as one "
        "process starts them), to read the latency at a load the workers can sustain.",
    )


@subcommand("bench", "Benchmark the SPEC workloads (see workflows_app.bench).", _bench_arguments)
def bench(command: Command, options: dict) -> None:
    only = options["only"].split(",") if options["only"] else None
    try:
        keys = benchmarks.select(only)
        concurrency = (
            benchmarks.parse_concurrency(options["concurrency"]) if options["concurrency"] else None
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None

    def print_line(key: str, result: dict) -> None:
        command.stdout.write(
            f"{key:24} {result['runs']:>7} runs {result['seconds']:>10.3f} s "
            f"{result['runs_per_s']:>10.1f} runs/s {result['us_per_step']:>10.2f} us/step"
        )

    try:
        report = benchmarks.run_benchmarks(
            options["n"],
            only=keys,
            durability=options["durability"],
            on_result=None if options["json"] else print_line,
            allow_sqlite=options["allow_sqlite"],
            concurrency=concurrency,
            rate=options["rate"],
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    except benchmarks.BenchmarkUnavailable as exc:
        raise CommandError(str(exc)) from None
    except benchmarks.BenchmarkError as exc:
        raise CommandError(f"Benchmark failed: {exc}") from None
    if options["json"]:
        command.stdout.write(json.dumps(report, separators=(",", ":")))
