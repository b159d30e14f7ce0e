"""The service layer: the one entry point for the admin, the API, commands and tasks.

``workflow_engine`` ties the SDK's registry, the orchestrator and the ORM storage
together (Medusa's Workflow Engine Module, in Python).
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from . import redaction
from .models import WorkflowExecution
from .orchestration import (
    Transaction,
    TransactionAlreadyStarted,
    TransactionNotFound,
    TransactionState,
    WorkflowNotFound,
    WorkflowsError,
    orchestrator,
    runtime,
)
from .sdk import RunResult, Workflow, get_workflow, list_workflows
from .sdk.workflows import EVENT_NAMES, resume_transaction
from .step_address import StepAddress, TransactionFinishedError, UnknownStepError
from .storage import answers
from .storage.answers import Answer

logger = logging.getLogger("workflows_app")

FILTER_FIELDS = frozenset({"id", "workflow_id", "transaction_id", "run_id", "state", "status"})
RANGE_FIELDS = frozenset({"created_at", "updated_at"})
RANGE_LOOKUPS = frozenset({"gt", "gte", "lt", "lte"})
ORDER_FIELDS = frozenset(
    {"created_at", "updated_at", "id", "workflow_id", "transaction_id", "state", "duration_ms"}
)
# Every event a run emits, so subscribers see all of them.
EVENT_TYPES = tuple(sorted(EVENT_NAMES))

Subscriber = Callable[[dict], Any]

SCHEDULE_PREFIX = "workflows:schedule:"
CLEANUP_SCHEDULE = "workflows:cleanup"
RECOVERY_SCHEDULE = "workflows:recover"


class ExecutionNotFound(TransactionNotFound):
    """No stored execution has that id."""


def acknowledgement(tx: Transaction) -> dict:
    """The short answer about a run: where it is and whether it ended badly."""
    return {
        "transaction_id": tx.transaction_id,
        "workflow_id": tx.workflow_id,
        "run_id": tx.run_id,
        "parent_step_idempotency_key": tx.metadata.get("parentStepIdempotencyKey"),
        "has_finished": tx.has_finished(),
        "has_failed": tx.state in (TransactionState.FAILED, TransactionState.REVERTED),
        "state": str(tx.state),
    }


def abandon(tx: Transaction) -> None:
    """Release a stored run whose executing code failed (stops its lease renewal)."""
    give_up = getattr(runtime.storage, "abandon", None)
    if tx.stored and give_up is not None:
        give_up(tx)


@contextmanager
def released_on_error(tx: Transaction) -> Iterator[None]:
    """Any exception out of the orchestrator or the storage releases the run before it
    propagates: otherwise the run stays held (commands answer "already started") until
    its lease runs out, or for good while this process keeps renewing it. That holds
    for interruptions too (``ExecutorInterrupted``, a worker's task timeout)."""
    try:
        yield
    except runtime.releasing():
        abandon(tx)
        raise


def schedule_recurrence(schedule: Any) -> tuple[Any, str]:
    """The recurrence and concurrency policy of a workflow's ``schedule`` option."""
    from .background import Recurrence

    if isinstance(schedule, str):
        return Recurrence(cron=schedule), "forbid"
    times = schedule.get("number_of_executions")
    return (
        Recurrence(cron=schedule.get("cron"), every=schedule.get("interval"), times=times),
        schedule.get("concurrency", "forbid"),
    )


class WorkflowEngine:
    """Run, resume, inspect and maintain workflow executions."""

    def __init__(self) -> None:
        self._subscribers: dict[str, dict[Any, tuple[Subscriber, str | None]]] = {}
        self._lock = threading.Lock()

    # Definitions

    def get_workflow(self, workflow_id: str) -> Workflow:
        return get_workflow(workflow_id)

    def list_definitions(self) -> list[Workflow]:
        return list_workflows()

    def describe(self, workflow: Workflow) -> dict:
        """A JSON-ready description of a definition (options, steps, hooks, graph)."""
        definition = workflow.definition
        depends_on: dict[int, list[str]] = {node.index: [] for node in definition.nodes}
        for node in definition.nodes:
            for index in node.dependents:
                depends_on[index].append(node.id)
        steps = []
        for node in definition.nodes:
            steps.append(
                {
                    "id": node.id,
                    "step_id": node.step_id,
                    "depth": node.depth,
                    "operation": node.operation,
                    "definition": node.definition(),
                    "next": [child.id for child in node.tree_children],
                    "depends_on": depends_on[node.index],
                }
            )
        options = {k: v for k, v in workflow.options.items() if k != "name"}
        return {
            "name": workflow.name,
            "options": options,
            "steps": steps,
            "hooks": [hook.name for hook in workflow.hooks],
            "definition": definition.describe(),
            "definition_hash": definition.hash,
        }

    # Running

    def run(
        self,
        workflow_id: str,
        input: Any = None,
        transaction_id: str | None = None,
        context: dict | None = None,
        throw_on_error: bool = True,
        events: dict[str, Callable[..., Any]] | None = None,
    ) -> RunResult:
        """Run a registered workflow by name, or resume its unfinished transaction."""
        workflow = get_workflow(workflow_id)
        tx = workflow.begin(input, transaction_id, context, events)
        tx.events = self._events(tx, events)
        if not tx.has_finished():
            with released_on_error(tx):
                orchestrator.execute(tx)
        return self._result(workflow, tx, throw_on_error)

    def set_step_success(
        self,
        address: StepAddress | str | None = None,
        *,
        response: Any = None,
        compensate_input: Any = None,
        **parts: str,
    ) -> RunResult:
        """Complete a step waiting for a response and continue its transaction.

        ``address`` is a :class:`StepAddress` or an idempotency key; or give its parts
        (``workflow_id``, ``transaction_id``, ``step_id``, ``action``) as keywords.
        When another worker or thread holds the run, the answer is recorded and applied
        when the run is free: the call returns at once with
        ``acknowledgement["answer_recorded"]`` (see :mod:`workflows_app.storage.answers`).
        """
        at = StepAddress.of(address, **parts)
        answer = Answer(at.step_id, at.action, answers.SUCCESS, response, compensate_input)
        return self._on_waiting_step(at, "set step success", answer=answer)

    def set_step_failure(
        self,
        address: StepAddress | str | None = None,
        *,
        error: Any = None,
        force_permanent_failure: bool = False,
        **parts: str,
    ) -> RunResult:
        """Fail a step waiting for a response (its retries apply unless forced); recorded
        like :meth:`set_step_success` when another process holds the run."""
        at = StepAddress.of(address, **parts)
        answer = Answer.failure(at.step_id, at.action, error, force_permanent_failure)
        return self._on_waiting_step(at, "set step failure", answer=answer)

    def retry_step(self, address: StepAddress | str | None = None, **parts: str) -> RunResult:
        """Invoke a step that is waiting for a response once more."""
        at = StepAddress.of(address, **parts)
        return self._on_waiting_step(
            at, "retry step", lambda tx: orchestrator.retry_step(tx, at.step_id, at.action)
        )

    def cancel(self, workflow_id: str, transaction_id: str) -> RunResult:
        """Revert a running or ``done`` transaction through compensation.

        When another worker or thread executes the run, the cancel is recorded and the
        call returns at once, with ``acknowledgement["cancel_requested"]``: that
        executor starts no further step and compensates (Medusa's cancel in flight).
        """
        workflow = get_workflow(workflow_id)
        try:
            tx = runtime.storage.load(workflow.definition, transaction_id, include_finished=True)
        except TransactionAlreadyStarted:
            return self._request_cancel(workflow, transaction_id)
        if tx is None:
            raise TransactionNotFound(f"Transaction {transaction_id} could not be found.")
        tx.events = self._events(tx, None)
        with released_on_error(tx):
            orchestrator.cancel(tx)
        return self._result(workflow, tx, throw_on_error=False)

    def retry_compensation(self, workflow_id: str, transaction_id: str) -> RunResult:
        """Run the failed compensations of a ``failed`` transaction again."""
        workflow = get_workflow(workflow_id)
        tx = runtime.storage.load(workflow.definition, transaction_id, include_finished=True)
        if tx is None:
            raise TransactionNotFound(f"Transaction {transaction_id} could not be found.")
        tx.events = self._events(tx, None)
        with released_on_error(tx):
            orchestrator.retry_compensation(tx)
        return self._result(workflow, tx, throw_on_error=False)

    def rerun(self, execution_id: str, throw_on_error: bool = False) -> RunResult:
        """Run a stored execution's workflow again with the same input (new transaction)."""
        execution = self.retrieve_workflow_execution(execution_id)
        return self.run(
            execution.workflow_id, input=execution.input_payload, throw_on_error=throw_on_error
        )

    def resume(self, workflow_id: str, transaction_id: str) -> Transaction | None:
        """Continue an unfinished run in this process as a worker does (the
        ``workflows_app.tasks.resume`` task). ``None`` when there is nothing to do."""
        try:
            workflow = get_workflow(workflow_id)
        except WorkflowNotFound:
            logger.error(
                "Cannot resume %s:%s: workflow not registered", workflow_id, transaction_id
            )
            return None
        held: list[Transaction] = []

        def prepare(tx: Transaction) -> None:
            self._attach_events(tx)
            held.append(tx)

        try:
            return resume_transaction(workflow.name, transaction_id, prepare=prepare)
        except runtime.releasing():
            # Interruptions too (a task timeout): recovery continues the run.
            for tx in held:
                abandon(tx)
            raise

    def run_scheduled(self, workflow_id: str) -> RunResult | None:
        """One scheduled run; ``None`` when ``concurrency: forbid`` finds one unfinished."""
        workflow = get_workflow(workflow_id)
        schedule = workflow.options.get("schedule")
        if schedule is None:
            logger.warning("Workflow %s has no schedule option; not running it", workflow_id)
            return None
        _recurrence, concurrency = schedule_recurrence(schedule)
        if (
            concurrency == "forbid"
            and workflow.options["store"]
            and WorkflowExecution.objects.unfinished().filter(workflow_id=workflow_id).exists()
        ):
            logger.info("Skipping scheduled %s: an earlier run has not finished", workflow_id)
            return None
        return self.run(workflow_id, throw_on_error=False)

    def setup_schedules(self) -> list[tuple[str, str]]:
        """Create or update the recurring jobs: one per workflow with a ``schedule``,
        the cleanup of expired executions and the recovery sweep. Returns
        ``(schedule name, what was done)`` pairs."""
        from .background import Recurrence
        from .conf import workflows_settings

        scheduler = runtime.scheduler
        done: list[tuple[str, str]] = []
        keep: set[str] = set()
        for workflow in list_workflows():
            schedule = workflow.options.get("schedule")
            if schedule is None:
                continue
            recurrence, _concurrency = schedule_recurrence(schedule)
            name = SCHEDULE_PREFIX + workflow.name
            keep.add(name)
            action = scheduler.repeat(
                name, "workflows_app.tasks.run_scheduled", (workflow.name,), recurrence
            )
            done.append((name, action))
        for name in scheduler.remove_repeats(SCHEDULE_PREFIX, keep):
            done.append((name, "removed"))
        minutes = int(workflows_settings.CLEANUP_INTERVAL_MINUTES)
        cleanup = Recurrence(every=max(minutes, 1) * 60)
        done.append(
            (
                CLEANUP_SCHEDULE,
                scheduler.repeat(
                    CLEANUP_SCHEDULE, "workflows_app.tasks.clear_expired_executions", (), cleanup
                ),
            )
        )
        seconds = int(workflows_settings.RECOVERY_INTERVAL_SECONDS)
        recovery = Recurrence(every=max(60, -(-seconds // 60) * 60))
        done.append(
            (
                RECOVERY_SCHEDULE,
                scheduler.repeat(RECOVERY_SCHEDULE, "workflows_app.tasks.recover", (), recovery),
            )
        )
        return done

    def complete_parent(self, tx: Transaction) -> None:
        """A nested child that waited has finished: complete its parent's step."""
        from .sdk.nesting import complete_parent_step

        complete_parent_step(tx)

    def get_running_transaction(self, workflow_id: str, transaction_id: str) -> Transaction | None:
        """The unfinished stored transaction, without taking it over, or ``None``."""
        workflow = get_workflow(workflow_id)
        return runtime.storage.peek(workflow.definition, transaction_id)

    # Stored executions

    def list_workflow_executions(
        self,
        filters: dict[str, Any] | None = None,
        q: str | None = None,
        order: str | list[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> QuerySet[WorkflowExecution]:
        """Stored executions, filtered, searched and ordered (newest first by default).

        ``filters`` maps a column to a value or a list of values, a date column to
        ``{"gte": ..., "lt": ...}``; ``{"waiting": True}`` keeps the runs waiting for a
        response (``WorkflowExecution.objects.waiting()``).
        """
        queryset = WorkflowExecution.objects.all()
        for key, value in (filters or {}).items():
            field, _, lookup = key.partition("__")
            if key == "waiting":
                if value:
                    queryset = queryset.waiting()
            elif field in FILTER_FIELDS and not lookup:
                if isinstance(value, list | tuple | set | frozenset):
                    queryset = queryset.filter(**{f"{field}__in": list(value)})
                else:
                    queryset = queryset.filter(**{field: value})
            elif field in RANGE_FIELDS and (lookup in RANGE_LOOKUPS or not lookup):
                if isinstance(value, dict):
                    for op, bound in value.items():
                        if op not in RANGE_LOOKUPS:
                            raise ValueError(f"Unknown range operator {op!r} for {field}.")
                        queryset = queryset.filter(**{f"{field}__{op}": bound})
                else:
                    queryset = queryset.filter(**{key: value})
            else:
                raise ValueError(f"Cannot filter executions on {key!r}.")
        if q:
            queryset = queryset.search(q)
        orders = [order] if isinstance(order, str) else list(order or ["-created_at", "-id"])
        for item in orders:
            if item.lstrip("-") not in ORDER_FIELDS:
                raise ValueError(f"Cannot order executions by {item!r}.")
        queryset = queryset.order_by(*orders)
        start = offset or 0
        if limit is not None:
            return queryset[start : start + limit]
        return queryset[start:] if start else queryset

    def retrieve_workflow_execution(self, id: str) -> WorkflowExecution:
        """One stored execution by its ``wf_exec_...`` id."""
        try:
            return WorkflowExecution.objects.get(pk=id)
        except WorkflowExecution.DoesNotExist:
            raise ExecutionNotFound(f"Workflow execution {id} could not be found.") from None

    def clear_expired_executions(
        self, batch_size: int = 10000, progress: Callable[[int], Any] | None = None
    ) -> int:
        """Delete finished executions whose retention is over, in batches (see
        :meth:`~workflows_app.managers.WorkflowExecutionQuerySet.delete_expired`)."""
        return WorkflowExecution.objects.delete_expired(batch_size, progress=progress)

    def recover(
        self, now: datetime.datetime | None = None, limit: int = 1000, hand_over: bool = False
    ) -> int:
        """Resume unfinished executions whose worker's lease expired, whose worker was
        a process of this machine that is gone, or that were released with a cancel
        request; returns the count (see :func:`workflows_app.storage.recovery.recover`).

        With ``hand_over`` each run is queued for the background workers instead of
        run here (``manage.py workflows recover``), keeping a lease deadline so
        that a lost task is recovered again."""
        from .storage import OrmStorage
        from .storage.recovery import recover

        if not isinstance(runtime.storage, OrmStorage):
            return 0
        return recover(now or timezone.now(), limit, hand_over, prepare=self._attach_events)

    # Subscriptions

    def subscribe(
        self,
        workflow_id: str,
        subscriber: Subscriber,
        transaction_id: str | None = None,
        subscriber_id: str | None = None,
    ) -> None:
        """Call ``subscriber(event_dict)`` for events of the workflow (or one transaction)."""
        with self._lock:
            subscribers = self._subscribers.setdefault(workflow_id, {})
            subscribers[subscriber_id or subscriber] = (subscriber, transaction_id)

    def unsubscribe(
        self,
        workflow_id: str,
        subscriber_or_id: Subscriber | str,
        transaction_id: str | None = None,
    ) -> None:
        with self._lock:
            subscribers = self._subscribers.get(workflow_id, {})
            subscribers.pop(subscriber_or_id, None)
            for key, (function, _tx) in list(subscribers.items()):
                if function is subscriber_or_id:
                    subscribers.pop(key, None)

    # Internals

    def _on_waiting_step(
        self,
        address: StepAddress,
        what: str,
        command: Callable[[Transaction], Any] | None = None,
        answer: Answer | None = None,
    ) -> RunResult:
        """The one path of the step commands: check that the addressed step waits,
        take the transaction over, apply ``command`` (or ``answer``) and report. An
        answer recorded earlier goes first; an answer for a run held elsewhere is
        recorded."""
        workflow = get_workflow(address.workflow_id)
        if address.step_id not in workflow.definition.by_step_id:
            raise UnknownStepError(f"Workflow {workflow.name} has no step {address.step_id!r}.")
        # Each round but the last applies one answer recorded earlier.
        for _round in range(len(workflow.definition.nodes) + 1):
            peeked = runtime.storage.peek(workflow.definition, address.transaction_id)
            if peeked is None:
                raise self._not_running(address)
            orchestrator.check_waiting(peeked, address.step_id, address.action, what)
            try:
                tx = runtime.storage.load(workflow.definition, address.transaction_id)
            except TransactionAlreadyStarted:
                if answer is None:
                    raise
                return self._record_answer(workflow, address, answer, what)
            if tx is None:
                raise self._not_running(address)
            tx.events = self._events(tx, None)
            with released_on_error(tx):
                if answers.apply_first(tx):
                    continue
                if answer is None:
                    command(tx)
                elif answers.record(address.workflow_id, address.transaction_id, answer):
                    # On the row first: a concurrent answer now finds the step answered.
                    answer.apply(tx)
                else:
                    # Another process recorded one since the load: release, it goes first.
                    orchestrator.execute(tx)
                    continue
            return self._result(workflow, tx, throw_on_error=False)
        raise TransactionAlreadyStarted(address.transaction_id)

    def _record_answer(
        self, workflow: Workflow, address: StepAddress, answer: Answer, what: str
    ) -> RunResult:
        """Record an answer for a run held elsewhere (applied at once if it was freed)."""
        tx, recorded = answers.submit(
            workflow.definition, address.transaction_id, answer, what, self._attach_events
        )
        if tx is None:
            raise self._not_running(address)
        result = self._result(workflow, tx, throw_on_error=False)
        if recorded:
            result.acknowledgement["answer_recorded"] = True
        return result

    def _not_running(self, address: StepAddress) -> WorkflowsError:
        """Conflict when the transaction is stored but finished, else not found."""
        filters = {"workflow_id": address.workflow_id, "transaction_id": address.transaction_id}
        if self.list_workflow_executions(filters=filters).exists():
            return TransactionFinishedError(
                f"Transaction {address.transaction_id} of {address.workflow_id} has already "
                "finished."
            )
        return TransactionNotFound(f"Transaction {address.transaction_id} could not be found.")

    def _request_cancel(self, workflow: Workflow, transaction_id: str) -> RunResult:
        request = getattr(runtime.storage, "request_cancel", None)
        if request is None or not request(workflow.definition, transaction_id):
            raise TransactionAlreadyStarted(transaction_id)
        tx = runtime.storage.peek(workflow.definition, transaction_id)
        if tx is None:
            # It finished meanwhile: answer with how it ended.
            tx = runtime.storage.load(
                workflow.definition, transaction_id, include_finished=True, claim=False
            )
        if tx is None:
            raise TransactionNotFound(f"Transaction {transaction_id} could not be found.")
        result = self._result(workflow, tx, throw_on_error=False)
        result.acknowledgement["cancel_requested"] = True
        return result

    def _attach_events(self, tx: Transaction) -> None:
        tx.events = self._events(tx, None)

    def _result(self, workflow: Workflow, tx: Transaction, throw_on_error: bool) -> RunResult:
        result = workflow.result_of(tx, throw_on_error=throw_on_error)
        result.acknowledgement = acknowledgement(tx)
        return result

    def _events(self, tx: Transaction, events: dict | None) -> dict | None:
        subscribers = self._subscribers.get(tx.workflow_id)
        if not subscribers:
            return events
        engine = self

        def dispatcher(name: str) -> Callable[..., None]:
            own = (events or {}).get(name)

            def dispatch(transaction: Transaction, **kwargs: Any) -> None:
                if own is not None:
                    own(transaction=transaction, **kwargs)
                engine._notify(name, transaction, kwargs)

            return dispatch

        return {name: dispatcher(name) for name in EVENT_TYPES}

    def _notify(self, name: str, tx: Transaction, kwargs: dict) -> None:
        step = kwargs.get("step")
        # Subscribers get what the run shows, not what its steps see.
        redact = redaction.for_run(tx)
        response = None
        if step is not None:
            response = redact.masked(kwargs.get("result"), step.node.options.sensitive, "output")
        payload = redact(
            {
                "event_type": name,
                "workflow_id": tx.workflow_id,
                "transaction_id": tx.transaction_id,
                "state": str(tx.state),
                "step": step.step_id if step is not None else None,
                "result": kwargs.get("result") if name == "on_finish" else None,
                "errors": [e.to_dict() for e in kwargs.get("errors") or []],
            }
        )
        payload["response"] = response
        with self._lock:
            targets = list(self._subscribers.get(tx.workflow_id, {}).items())
        for key, (function, transaction_id) in targets:
            if transaction_id is not None and transaction_id != tx.transaction_id:
                continue
            try:
                function(payload)
            except Exception:
                logger.exception("Subscriber of %s failed on %s", tx.workflow_id, name)
            if name == "on_finish" and transaction_id is not None:
                with self._lock:
                    self._subscribers.get(tx.workflow_id, {}).pop(key, None)


workflow_engine = WorkflowEngine()
