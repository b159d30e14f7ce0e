"""Checkpoint storage on the Django ORM (the orchestrator's storage protocol).

Rows are written as SPEC 5.2 says: the execution row when a run starts, one
``StepExecution`` row per finished attempt (the checkpoint, in ``step`` durability),
the execution row again when a run hands over or ends. A transaction is rebuilt by
replaying its step rows through the orchestrator, so completed steps never run twice.

Every write of the execution row is a compare-and-set on ``version``; a second
executor of a step attempt collides with the unique step-attempt constraint. Either
way the stale writer gets ``StaleTransactionError`` and stops its branch.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, sql
from django.utils import timezone

from .conf import workflows_settings
from .models import StepExecution, WorkflowExecution, new_execution_id
from .orchestration import (
    AttemptRecord,
    FlowDefinition,
    NonSerializableCheckpointError,
    PayloadTooLargeError,
    StaleTransactionError,
    StepError,
    Transaction,
    TransactionAlreadyStarted,
    TransactionState,
    orchestrator,
    runtime,
    serialization,
)
from .redaction import Redactor, mask_sensitive
from .status import FINISHED_STATES

logger = logging.getLogger("workflows_app")

_UTC = datetime.UTC


def _dt(ms: int | None) -> datetime.datetime | None:
    return None if ms is None else datetime.datetime.fromtimestamp(ms / 1000, tz=_UTC)


def _ms(value: datetime.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def execution_status(tx: Transaction) -> str:
    """The log status of an execution, from its state and how it ended."""
    state = tx.state
    if state not in FINISHED_STATES:
        return "RUNNING"
    if state == TransactionState.DONE:
        return "COMPLETED"
    if tx.cancelled_at:
        return "CANCELED"
    if tx.timed_out_at:
        return "TIMED_OUT"
    return "FAILED"


def retention_for(options: dict, state: str) -> int | None:
    """Seconds to keep a finished execution (``None``: delete it at the end)."""
    retention = options.get("retention_time")
    if isinstance(retention, dict):
        value = retention.get(str(state))
        return None if value is None else int(value)
    return None if retention is None else int(retention)


_STEP_COLUMNS = (
    "execution_id",
    "step_id",
    "step_path",
    "step_name",
    "handler_type",
    "operation",
    "status",
    "attempt",
    "input",
    "output",
    "compensate_input",
    "error",
    "started_at",
    "ended_at",
    "duration_ms",
    "iteration",
    "total_items",
)
_STEP_JSON = frozenset({"input", "output", "compensate_input", "error"})
_STEP_JSON_POSITIONS = tuple(i for i, name in enumerate(_STEP_COLUMNS) if name in _STEP_JSON)


@cache
def _step_insert_sql() -> str:
    """The INSERT of one step row, with JSON values passed as text and cast."""
    meta = StepExecution._meta
    columns = [
        meta.get_field("execution" if name == "execution_id" else name).column
        for name in _STEP_COLUMNS
    ]
    values = ["%s::jsonb" if name in _STEP_JSON else "%s" for name in _STEP_COLUMNS]
    return f'INSERT INTO "{meta.db_table}" ({", ".join(columns)}) VALUES ({", ".join(values)})'


def _async_prefix() -> str:
    """``SET LOCAL synchronous_commit TO OFF; `` where a write may skip the WAL flush.

    Only on PostgreSQL, in autocommit (a caller's own transaction keeps its own
    commit), with ``STEP_COMMIT = "async"``. Sent in the same query string as the
    write, both run in one implicit transaction: still one round trip.
    """
    if (
        connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and workflows_settings.STEP_COMMIT == "async"
    ):
        return "SET LOCAL synchronous_commit TO OFF; "
    return ""


def _update_without_flush(queryset: Any, values: dict[str, Any]) -> int:
    query = queryset.query.chain(sql.UpdateQuery)
    query.add_update_values(values)
    text, params = query.get_compiler(connection=connection).as_sql()
    with connection.cursor() as cursor:
        cursor.execute(_async_prefix() + text, params)
        return cursor.rowcount


def _delete_without_flush(pk: str, version: int, has_steps: bool) -> int:
    """Delete an execution (and its step rows) in one implicit transaction."""
    steps = StepExecution._meta.db_table
    executions = WorkflowExecution._meta.db_table
    text = f'DELETE FROM "{executions}" WHERE "id" = %s AND "version" = %s'
    params: list[Any] = [pk, version]
    if has_steps:
        text = f'DELETE FROM "{steps}" WHERE "execution_id" = %s; ' + text
        params.insert(0, pk)
    with connection.cursor() as cursor:
        cursor.execute(_async_prefix() + text, params)
        return cursor.rowcount


class LeaseKeeper:
    """Renews the leases of the runs this process holds while a long step runs.

    Leases are renewed as step attempts finish; a step that runs longer than half a
    lease would otherwise let recovery hand its run to a second worker. A daemon
    thread looks every few seconds and writes only for runs whose last renewal is
    older than half a lease (so short steps cost nothing). PostgreSQL only: with
    SQLite a second writer thread only adds lock contention, and SQLite deployments
    run one worker.
    """

    def __init__(self) -> None:
        # Weak: a run abandoned by an unexpected error (its transaction dropped) stops
        # being renewed, so recovery can take it over.
        self._held: weakref.WeakValueDictionary[int, _Handle] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Set on every hold: the loop re-reads LEASE_SECONDS and its pace at once.
        self._wake = threading.Event()

    def hold(self, handle: _Handle) -> None:
        if connection.vendor != "postgresql":
            return
        with self._lock:
            self._held[id(handle)] = handle
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="workflows-lease-keeper", daemon=True
                )
                self._thread.start()

    def release(self, handle: _Handle) -> None:
        if self._held:
            with self._lock:
                self._held.pop(id(handle), None)

    def _run(self) -> None:
        while True:
            lease = float(workflows_settings.LEASE_SECONDS)
            self._wake.wait(max(min(lease / 4, 5.0), 0.05))
            self._wake.clear()
            now = time.time()
            with self._lock:
                held = list(self._held.values())
            due = [h for h in held if h.owner and h.lease_until - now < lease / 2]
            if not due:
                continue
            try:
                until = timezone.now() + datetime.timedelta(seconds=lease)
                for handle in due:
                    renewed = WorkflowExecution.objects.filter(
                        pk=handle.pk, owner=handle.owner
                    ).update(lease_expires_at=until)
                    if renewed:
                        handle.lease_until = until.timestamp()
                    else:
                        self.release(handle)
            except Exception:
                logger.exception("Renewing workflow leases failed")
            finally:
                connection.close()


@dataclass
class _Handle:
    """What the storage remembers about a transaction it holds."""

    pk: str
    version: int
    owner: str = ""
    lease_until: float = 0.0
    flushed: bool = False
    waiting: set = field(default_factory=set)
    buffer: list = field(default_factory=list)


class OrmStorage:
    """Stores transactions of ``store=True`` workflows in the default database."""

    # Configuration read on each use, so override_settings applies.

    @staticmethod
    def new_owner() -> str:
        """A lease token: which process holds the execution, unique to this claim, so
        that two threads of one process never share a claim either."""
        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    @staticmethod
    def _redactor() -> Redactor:
        return runtime.redactor or Redactor(workflows_settings.REDACT_KEYS)

    def _flow(self, tx: Transaction, redact: Redactor) -> dict:
        """The flow JSON; only its metadata (the run's context) can hold user values."""
        flow = tx.get_flow()
        flow["metadata"] = redact(flow["metadata"])
        return flow

    @staticmethod
    def _lease_seconds() -> float:
        return float(workflows_settings.LEASE_SECONDS)

    def _check_payload(self, what: str, value: Any) -> None:
        try:
            size = len(serialization.dumps(value).encode())
        except (TypeError, ValueError) as exc:
            raise NonSerializableCheckpointError(
                f"{what} cannot be stored as JSON: {exc}. Workflow inputs and step outputs "
                "must be JSON-serialisable."
            ) from None
        limit = workflows_settings.MAX_PAYLOAD_BYTES
        if limit and size > limit:
            raise PayloadTooLargeError(
                f"{what} is {size} bytes, more than WORKFLOWS['MAX_PAYLOAD_BYTES'] ({limit})."
            )

    # Protocol

    def start(self, tx: Transaction) -> None:
        self._check_payload(f"The input of workflow {tx.workflow_id}", tx.payload)
        redact = self._redactor()
        now = timezone.now()
        lease = self._lease_seconds()
        payload = redact(self._mask_payload(tx.definition, tx.payload))
        tx.metadata["context"] = tx.context
        owner = self.new_owner()
        row = WorkflowExecution(
            id=new_execution_id(),
            workflow_id=tx.workflow_id,
            transaction_id=tx.transaction_id,
            run_id=tx.run_id,
            state=TransactionState.INVOKING,
            status="RUNNING",
            execution=self._flow(tx, redact),
            context={"data": {"payload": payload, "invoke": {}, "compensate": {}}, "errors": []},
            input_payload=payload,
            started_at=now,
            definition_hash=tx.definition.hash,
            parent_step_idempotency_key=tx.metadata.get("parentStepIdempotencyKey", ""),
            owner=owner,
            lease_expires_at=now + datetime.timedelta(seconds=lease),
            version=0,
            created_at=now,
            updated_at=now,
        )
        try:
            self._atomic_if_nested(lambda: row.save(force_insert=True))
        except IntegrityError:
            raise TransactionAlreadyStarted(tx.transaction_id) from None
        tx.started_at = _ms(now)
        tx.storage_handle = _Handle(row.pk, 0, owner, lease_until=now.timestamp() + lease)
        lease_keeper.hold(tx.storage_handle)

    def load(
        self,
        definition: FlowDefinition,
        transaction_id: str,
        *,
        include_finished: bool = False,
        claim: bool = True,
    ) -> Transaction | None:
        row = (
            WorkflowExecution.objects.filter(
                workflow_id=definition.workflow_id, transaction_id=transaction_id
            )
            .order_by("-created_at", "-id")
            .first()
        )
        if row is None:
            return None
        finished = row.state in FINISHED_STATES
        if finished and not include_finished:
            return None
        version = row.version
        lease_until = 0.0
        owner = ""
        if claim and not finished:
            now = timezone.now()
            until = now + datetime.timedelta(seconds=self._lease_seconds())
            owner = self.new_owner()
            claimed = (
                WorkflowExecution.objects.filter(pk=row.pk, version=row.version)
                .filter(Q(owner="") | Q(lease_expires_at__lt=now))
                .update(owner=owner, lease_expires_at=until, version=F("version") + 1)
            )
            if not claimed:
                raise TransactionAlreadyStarted(transaction_id)
            version += 1
            lease_until = until.timestamp()
        return self.rebuild(definition, row, version=version, owner=owner, lease_until=lease_until)

    def claim(
        self,
        definition: FlowDefinition,
        row: WorkflowExecution,
        now: datetime.datetime,
        dead_owner: str | None = None,
    ) -> Transaction | None:
        """Take over an execution whose lease expired before ``now``, or that is held
        by ``dead_owner`` (a process known to be gone) (recovery)."""
        lease = self._lease_seconds()
        until = timezone.now() + datetime.timedelta(seconds=lease)
        owner = self.new_owner()
        held = Q(owner=dead_owner) if dead_owner else Q(lease_expires_at__lt=now)
        claimed = (
            WorkflowExecution.objects.filter(pk=row.pk, version=row.version)
            .filter(held)
            .update(owner=owner, lease_expires_at=until, version=F("version") + 1)
        )
        if not claimed:
            return None
        return self.rebuild(
            definition, row, version=row.version + 1, owner=owner, lease_until=until.timestamp()
        )

    def peek(self, definition: FlowDefinition, transaction_id: str) -> Transaction | None:
        """The unfinished transaction, rebuilt without taking its lease."""
        return self.load(definition, transaction_id, claim=False)

    def rebuild(
        self,
        definition: FlowDefinition,
        row: WorkflowExecution,
        *,
        version: int | None = None,
        owner: str = "",
        lease_until: float = 0.0,
    ) -> Transaction:
        """Turn a stored execution and its step rows back into a transaction."""
        flow = row.execution or {}
        if row.definition_hash and row.definition_hash != definition.hash:
            logger.warning(
                "Execution %s of %s was started with another definition of the workflow "
                "(hash %s, now %s): its step rows are matched by step path, so steps that "
                "were renamed or moved run again and removed steps are not compensated.",
                row.pk,
                row.workflow_id,
                row.definition_hash[:12],
                definition.hash[:12],
            )
        metadata = dict(flow.get("metadata") or {})
        context = metadata.get("context") or {}
        tx = Transaction(
            definition,
            transaction_id=row.transaction_id,
            run_id=row.run_id,
            payload=row.input_payload,
            context=context,
            metadata=metadata,
            stored=True,
        )
        tx.started_at = flow.get("startedAt") or _ms(row.started_at)
        tx.cancelled_at = flow.get("cancelledAt")
        tx.timed_out_at = flow.get("timedOutAt")
        handle = _Handle(row.pk, row.version if version is None else version, owner, lease_until)
        tx.storage_handle = handle
        if owner:
            lease_keeper.hold(handle)
        by_path = {node.id: node for node in definition.nodes}
        replay: dict[tuple[int, str, int], AttemptRecord] = {}
        # Loop iterations (iteration > 0) share the loop's step path: they are not
        # attempts of the loop step, so they stay out of the replay; the loop reads
        # them from ``tx.iteration_records`` to skip the iterations already done.
        iterations: list[AttemptRecord] = []
        for step in row.step_executions.all().order_by("id"):
            node = by_path.get(step.step_path)
            if node is None:
                continue
            key = (node.index, step.handler_type, step.attempt)
            record = AttemptRecord(
                step_index=node.index,
                step_id=step.step_id,
                step_path=step.step_path,
                handler_type=step.handler_type,
                attempt=step.attempt,
                status=step.status,
                input=step.input,
                output=step.output,
                compensate_input=step.compensate_input,
                error=step.error,
                started_at=_ms(step.started_at),
                ended_at=_ms(step.ended_at),
                operation=step.operation,
                iteration=step.iteration,
                total_items=step.total_items,
            )
            if step.iteration:
                iterations.append(record)
                continue
            replay[key] = record
            if step.status == "WAITING":
                handle.waiting.add(key)
        tx.replay = replay
        tx.iteration_records = iterations
        steps_json = flow.get("steps") or {}
        for run in tx.steps:
            requested = (steps_json.get(run.node.id) or {}).get("retryRescheduledAt")
            if requested:
                run.retry_rescheduled_at = requested
        orchestrator.fast_forward(tx)
        if row.state in FINISHED_STATES:
            tx.state = TransactionState(row.state)
            tx.result = row.output_payload
            tx.ended_at = _ms(row.ended_at)
            errors = (row.context or {}).get("errors") or []
            tx.errors = [StepError.from_dict(e) for e in errors]
        return tx

    def record_attempt(self, tx: Transaction, record: AttemptRecord) -> None:
        handle: _Handle = tx.storage_handle
        redact = self._redactor()
        sensitive = tx.definition.nodes[record.step_index].options.sensitive
        values = {
            "input": redact(mask_sensitive(record.input, sensitive, "input")),
            "output": redact(mask_sensitive(record.output, sensitive, "output")),
            "compensate_input": redact(
                mask_sensitive(
                    mask_sensitive(record.compensate_input, sensitive, "output"),
                    sensitive,
                    "input",
                )
            ),
            "error": record.error,
            "status": record.status,
            "started_at": _dt(record.started_at),
            "ended_at": _dt(record.ended_at),
            "duration_ms": (
                None
                if record.started_at is None or record.ended_at is None
                else max(record.ended_at - record.started_at, 0)
            ),
        }
        key = (record.step_index, record.handler_type, record.attempt)
        if key in handle.waiting:
            self._flush(tx)
            StepExecution.objects.filter(
                execution_id=handle.pk,
                step_path=record.step_path,
                handler_type=record.handler_type,
                attempt=record.attempt,
                iteration=record.iteration,
            ).update(**values)
            handle.waiting.discard(key)
        else:
            values.update(
                execution_id=handle.pk,
                step_id=record.step_id,
                step_path=record.step_path,
                step_name=record.step_id,
                handler_type=record.handler_type,
                operation=record.operation,
                attempt=record.attempt,
                iteration=record.iteration,
                total_items=record.total_items,
            )
            if workflows_settings.DURABILITY == "boundary":
                handle.buffer.append(StepExecution(**values))
            else:
                try:
                    self._insert_checkpoint(values)
                except IntegrityError:
                    raise StaleTransactionError(
                        f"Step {record.step_path} attempt {record.attempt} was already recorded "
                        "by another executor."
                    ) from None
            if record.status == "WAITING":
                handle.waiting.add(key)
        self._renew_lease(tx)

    def save(self, tx: Transaction, then: Callable[[], None] | None = None) -> None:
        """Hand-over point: the run stops without finishing and releases its lease.

        With ``then`` (the enqueue of a worker task) the run is queued: ``then`` runs
        in the same database transaction when the background backend is
        transactional (django-q2's ORM broker), and the row keeps a lease deadline
        so that recovery picks the run up should the task be lost. A run waiting for
        a timer keeps the timer's due time (plus a lease) for the same reason.
        """
        self._flush(tx)
        if then is None:
            self._write(tx, release=True, wake_at=tx.wake_at)
            return
        if getattr(runtime.scheduler, "transactional", False):
            with transaction.atomic():
                self._write(tx, release=True, wake_at=tx.wake_at, queued=True)
                then()
            return
        self._write(tx, release=True, wake_at=tx.wake_at, queued=True)
        then()

    def checkpoint(self, tx: Transaction) -> None:
        """Write the current state and keep (or take) the lease, e.g. when a cancel starts."""
        self._flush(tx)
        self._write(tx, release=False)

    def finish(self, tx: Transaction) -> None:
        handle: _Handle = tx.storage_handle
        retention = retention_for(tx.definition.options, tx.state)
        nested = bool(tx.metadata.get("parentStepIdempotencyKey"))
        if retention is None and not nested:
            handle.buffer = []
            lease_keeper.release(handle)
            self._delete(handle)
        else:
            self._flush(tx)
            self._write(tx, release=True, retention=retention, final=True)
        self._forget_children(tx)

    # Internals

    def _write(
        self,
        tx: Transaction,
        *,
        release: bool,
        retention: int | None = None,
        final: bool = False,
        wake_at: int | None = None,
        queued: bool = False,
    ) -> None:
        handle: _Handle = tx.storage_handle
        redact = self._redactor()
        now = timezone.now()
        context = {
            "data": redact(self._masked_context(tx)),
            "errors": [e.to_dict() for e in tx.errors],
        }
        values: dict[str, Any] = {
            "state": str(tx.state),
            "status": execution_status(tx),
            "execution": self._flow(tx, redact),
            "context": context,
            "updated_at": now,
            "version": handle.version + 1,
        }
        if release:
            # A released run normally has no deadline; a queued one, or one waiting for
            # a timer, gets one that recovery uses if the task or timer is lost.
            deadline = None
            if queued:
                deadline = now + datetime.timedelta(seconds=self._lease_seconds())
            elif wake_at is not None:
                deadline = _dt(wake_at) + datetime.timedelta(seconds=self._lease_seconds())
            values.update(owner="", lease_expires_at=deadline)
            handle.owner = ""
            lease_keeper.release(handle)
        else:
            lease = self._lease_seconds()
            handle.owner = handle.owner or self.new_owner()
            values.update(
                owner=handle.owner, lease_expires_at=now + datetime.timedelta(seconds=lease)
            )
            handle.lease_until = now.timestamp() + lease
        if final:
            first = next((e for e in tx.errors if e.handler_type == "invoke"), None)
            if first is None and tx.errors:
                first = tx.errors[0]
            started = _dt(tx.started_at)
            ended = _dt(tx.ended_at) or now
            values.update(
                retention_time=retention,
                output_payload=redact(tx.result),
                error=first.error if first else None,
                error_stack=(first.error.get("stack") or "") if first else "",
                ended_at=ended,
                duration_ms=(
                    max(int((ended - started).total_seconds() * 1000), 0) if started else None
                ),
            )
        queryset = WorkflowExecution.objects.filter(pk=handle.pk, version=handle.version)
        if final and _async_prefix():
            updated = _update_without_flush(queryset, values)
        else:
            updated = queryset.update(**values)
        if not updated:
            raise StaleTransactionError(
                f"Execution {handle.pk} was changed by another executor; this one stops."
            )
        handle.version += 1

    @staticmethod
    def _mask_payload(definition: FlowDefinition, payload: Any) -> Any:
        """Mask the workflow input with every step's ``input.*`` sensitive paths: the
        input is where most step inputs come from."""
        for node in definition.nodes:
            if node.options.sensitive:
                payload = mask_sensitive(payload, node.options.sensitive, "input")
        return payload

    def _masked_context(self, tx: Transaction) -> dict:
        invoke = tx.invoke
        nodes = tx.definition.by_action
        masked = {}
        for action, entry in invoke.items():
            node = nodes.get(action)
            sensitive = node.options.sensitive if node is not None else ()
            if sensitive:
                compensate_input = mask_sensitive(entry.get("compensateInput"), sensitive, "output")
                entry = {
                    "output": mask_sensitive(entry.get("output"), sensitive, "output"),
                    "compensateInput": mask_sensitive(compensate_input, sensitive, "input"),
                }
            masked[action] = entry
        payload = self._mask_payload(tx.definition, tx.payload)
        return {"payload": payload, "invoke": masked, "compensate": tx.compensate}

    def _delete(self, handle: _Handle) -> None:
        """Delete a finished execution that is not kept (its step rows first)."""
        has_steps = handle.flushed or workflows_settings.DURABILITY != "boundary"
        if _async_prefix():
            deleted = _delete_without_flush(handle.pk, handle.version, has_steps)
        else:
            if has_steps:
                StepExecution.objects.filter(execution_id=handle.pk)._raw_delete(connection.alias)
            deleted = WorkflowExecution.objects.filter(
                pk=handle.pk, version=handle.version
            )._raw_delete(connection.alias)
        if not deleted:
            raise StaleTransactionError(
                f"Execution {handle.pk} was changed by another executor; this one stops."
            )

    def _forget_children(self, tx: Transaction) -> None:
        """Delete the finished nested executions kept for this parent's compensation."""
        prefix = f"{tx.workflow_id}:{tx.transaction_id}:"
        keys = []
        loops = Q()
        for node in tx.definition.nodes:
            if node.operation == "sub-workflow":
                keys.append(f"{prefix}{node.action}:invoke")
            elif node.operation == "builtin:loop" and (
                node.extra.get("for_each", {}).get("operation") == "sub-workflow"
            ):
                # Children of loop iterations: "<wf>:<tx>:<loop>-<i>:invoke".
                loops |= Q(parent_step_idempotency_key__startswith=f"{prefix}{node.action}-")
        if not keys and not loops:
            return
        children = WorkflowExecution.objects.filter(
            Q(parent_step_idempotency_key__in=keys) | loops,
            retention_time__isnull=True,
            state__in=FINISHED_STATES,
        )
        StepExecution.objects.filter(execution__in=children.values("pk")).delete()
        children.delete()

    def _flush(self, tx: Transaction) -> None:
        handle: _Handle = tx.storage_handle
        if handle.buffer:
            rows, handle.buffer = handle.buffer, []
            handle.flushed = True
            fields = [f for f in StepExecution._meta.concrete_fields if not f.primary_key]
            try:
                # One multi-row INSERT, without the transaction bulk_create() opens.
                self._atomic_if_nested(lambda: StepExecution.objects._insert(rows, fields=fields))
            except IntegrityError:
                raise StaleTransactionError(
                    f"Steps of execution {handle.pk} were already recorded by another executor."
                ) from None

    def _renew_lease(self, tx: Transaction) -> None:
        handle: _Handle = tx.storage_handle
        now = timezone.now()
        lease = self._lease_seconds()
        if handle.lease_until - now.timestamp() > lease / 2:
            return
        until = now + datetime.timedelta(seconds=lease)
        WorkflowExecution.objects.filter(pk=handle.pk, owner=handle.owner).update(
            lease_expires_at=until
        )
        handle.lease_until = until.timestamp()

    @staticmethod
    def _insert_checkpoint(values: dict[str, Any]) -> None:
        """Insert a step row: the checkpoint of one finished attempt.

        On PostgreSQL this is one precompiled statement (it runs once per step, so it
        skips the ORM's query compilation). In autocommit with ``STEP_COMMIT =
        "async"``, a ``SET LOCAL synchronous_commit TO OFF`` travels with it in one
        implicit transaction: one round trip whose commit does not wait for the WAL
        flush. Inside the caller's own transaction the caller's commit decides.
        """
        if connection.vendor != "postgresql":
            row = StepExecution(**values)
            OrmStorage._atomic_if_nested(lambda: row.save(force_insert=True))
            return
        params = [values[name] for name in _STEP_COLUMNS]
        for i in _STEP_JSON_POSITIONS:
            value = params[i]
            params[i] = None if value is None else serialization.dumps(value)
        sql = _step_insert_sql()
        if connection.in_atomic_block:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, params)
            return
        with connection.cursor() as cursor:
            cursor.execute(_async_prefix() + sql, params)

    @staticmethod
    def _atomic_if_nested(action: Any) -> Any:
        """Run ``action`` in a savepoint only inside an outer transaction (where a failed
        statement would otherwise break it); in autocommit it costs no extra statement."""
        if connection.in_atomic_block:
            with transaction.atomic():
                return action()
        return action()


lease_keeper = LeaseKeeper()
