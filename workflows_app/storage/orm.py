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
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from ..conf import workflows_settings
from ..models import StepExecution, WorkflowExecution, new_execution_id
from ..orchestration import (
    AttemptRecord,
    AttemptStatus,
    FlowDefinition,
    HandlerType,
    Operation,
    StaleTransactionError,
    StepError,
    Transaction,
    TransactionAlreadyStarted,
    TransactionState,
    orchestrator,
    runtime,
    storable,
)
from ..orchestration.orchestrator import needs_worker
from ..redaction import RunRedactor, for_run, mask_sensitive
from ..status import FINISHED_STATES
from ..worker import current_task_id, process_label
from .answers import Answer, after_release
from .cancels import cancel_requested, request_cancel
from .leases import Handle, give_up, lease_keeper, lease_seconds, new_owner
from .sql import (
    async_prefix,
    atomic_if_nested,
    claim_execution,
    claim_latest,
    delete_without_flush,
    insert_checkpoint,
    insert_execution,
    latest_execution,
    step_rows,
    to_datetime,
    to_ms,
    update_execution,
)

logger = logging.getLogger("workflows_app")

_CANCELABLE = (TransactionState.NOT_STARTED, TransactionState.INVOKING)


def execution_status(tx: Transaction) -> str:
    """The log status of an execution, from its state and how it ended."""
    state = tx.state
    if state not in FINISHED_STATES:
        return AttemptStatus.RUNNING
    if state == TransactionState.DONE:
        return AttemptStatus.COMPLETED
    if tx.cancelled_at:
        return AttemptStatus.CANCELED
    if tx.timed_out_at:
        return AttemptStatus.TIMED_OUT
    return AttemptStatus.FAILED


def retention_for(options: dict, state: str) -> int | None:
    """Seconds to keep a finished execution (``None``: delete it at the end)."""
    retention = options.get("retention_time")
    if isinstance(retention, dict):
        value = retention.get(str(state))
        return None if value is None else int(value)
    return None if retention is None else int(retention)


class OrmStorage:
    """Stores transactions of ``store=True`` workflows in the default database."""

    # Configuration read on each use, so override_settings applies.

    @staticmethod
    def _redactor(tx: Transaction) -> RunRedactor:
        """The run's redactor: what it masked once, it masks everywhere it writes."""
        return for_run(tx, runtime.redactor.keys if runtime.redactor else None)

    def _flow(self, tx: Transaction, redact: RunRedactor) -> dict:
        """The flow JSON; only its metadata (the run's context) can hold user values."""
        flow = tx.get_flow()
        flow["metadata"] = redact(flow["metadata"])
        return flow

    # Protocol

    def start(self, tx: Transaction) -> None:
        # The run goes on with the stored form, as a run rebuilt from the row would.
        [tx.payload] = storable(f"The input of workflow {tx.workflow_id}", tx.payload)
        redact = self._redactor(tx)
        now = timezone.now()
        lease = lease_seconds()
        payload = redact(self._mask_payload(tx.definition, tx.payload))
        tx.metadata["context"] = tx.context
        owner = new_owner()
        pk = new_execution_id()
        # A run that stops before its first step to be queued commits its start with
        # the hand-over, one synchronous commit instead of two.
        handed_over = needs_worker(tx, tx.definition.root_indices, HandlerType.INVOKE)
        try:
            insert_execution(
                {
                    "id": pk,
                    "workflow_id": tx.workflow_id,
                    "transaction_id": tx.transaction_id,
                    "run_id": tx.run_id,
                    "state": str(TransactionState.INVOKING),
                    "status": str(AttemptStatus.RUNNING),
                    "execution": self._flow(tx, redact),
                    "context": {
                        "data": {"payload": payload, "invoke": {}, "compensate": {}},
                        "errors": [],
                    },
                    "input_payload": payload,
                    "started_at": now,
                    "definition_hash": tx.definition.hash,
                    "parent_step_idempotency_key": tx.metadata.get("parentStepIdempotencyKey", ""),
                    "owner": owner,
                    "lease_expires_at": now + datetime.timedelta(seconds=lease),
                    "version": 0,
                    "created_at": now,
                    "updated_at": now,
                },
                flush=not handed_over,
            )
        except IntegrityError:
            raise TransactionAlreadyStarted(tx.transaction_id) from None
        tx.started_at = to_ms(now)
        tx.storage_handle = Handle(pk, 0, owner, lease_until=now.timestamp() + lease)
        tx.storage_handle.start_unflushed = handed_over
        lease_keeper.hold(tx.storage_handle)

    def load(
        self,
        definition: FlowDefinition,
        transaction_id: str,
        *,
        include_finished: bool = False,
        claim: bool = True,
    ) -> Transaction | None:
        workflow_id = definition.workflow_id
        if not claim:
            row, claimed, steps = latest_execution(workflow_id, transaction_id), False, None
        else:
            owner = new_owner()
            until = timezone.now() + datetime.timedelta(seconds=lease_seconds())
            row, claimed, steps = claim_latest(workflow_id, transaction_id, owner, until)
        if row is None or (row.state in FINISHED_STATES and not include_finished):
            return None
        if not claimed:
            if claim and row.state not in FINISHED_STATES:
                raise TransactionAlreadyStarted(transaction_id)
            return self._rebuild_claimed(definition, row, row.version, "", 0.0, steps)
        lease_until = until.timestamp()
        return self._rebuild_claimed(definition, row, row.version + 1, owner, lease_until, steps)

    def claim(
        self,
        definition: FlowDefinition,
        row: WorkflowExecution,
        now: datetime.datetime,
        dead_owner: str | None = None,
    ) -> Transaction | None:
        """Take over an execution whose lease expired before ``now``, that nobody
        holds, or that is held by ``dead_owner`` (a process known to be gone)
        (recovery)."""
        lease = lease_seconds()
        until = timezone.now() + datetime.timedelta(seconds=lease)
        owner = new_owner()
        claimed = claim_execution(
            row.pk, row.version, owner, until, expired_before=now, dead_owner=dead_owner
        )
        if not claimed:
            return None
        return self._rebuild_claimed(definition, row, row.version + 1, owner, until.timestamp())

    def _rebuild_claimed(
        self,
        definition: FlowDefinition,
        row: WorkflowExecution,
        version: int,
        owner: str,
        lease_until: float,
        steps: list[dict[str, Any]] | None = None,
    ) -> Transaction:
        """Rebuild a run this process just claimed; a failure releases the claim."""
        try:
            return self.rebuild(
                definition, row, version=version, owner=owner, lease_until=lease_until, steps=steps
            )
        except Exception:
            give_up(Handle(row.pk, version, owner, lease_until))
            raise

    def abandon(self, tx: Transaction) -> None:
        """The code executing ``tx`` failed: release the run (see :func:`give_up`)."""
        handle = tx.storage_handle
        if isinstance(handle, Handle):
            give_up(handle)

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
        steps: list[dict[str, Any]] | None = None,
    ) -> Transaction:
        """Turn a stored execution and its step rows (``steps``, read here when not
        given) back into a transaction."""
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
        tx.started_at = flow.get("startedAt") or to_ms(row.started_at)
        tx.cancelled_at = flow.get("cancelledAt")
        tx.timed_out_at = flow.get("timedOutAt")
        handle = Handle(row.pk, row.version if version is None else version, owner, lease_until)
        handle.recovery_failures = row.recovery_failures
        tx.storage_handle = handle
        if owner:
            lease_keeper.hold(handle)
        by_path = {node.id: node for node in definition.nodes}
        replay: dict[tuple[int, str, int], AttemptRecord] = {}
        # Loop iterations (iteration > 0) share the loop's step path: they are not
        # attempts of the loop step, so they stay out of the replay; the loop reads
        # them from ``tx.iteration_records`` to skip the iterations already done.
        iterations: list[AttemptRecord] = []
        for step in step_rows(row.pk) if steps is None else steps:
            node = by_path.get(step["step_path"])
            if node is None:
                continue
            key = (node.index, step["handler_type"], step["attempt"])
            record = AttemptRecord(
                step_index=node.index,
                step_id=step["step_id"],
                step_path=step["step_path"],
                handler_type=step["handler_type"],
                attempt=step["attempt"],
                status=step["status"],
                input=step["input"],
                output=step["output"],
                compensate_input=step["compensate_input"],
                error=step["error"],
                started_at=to_ms(step["started_at"]),
                ended_at=to_ms(step["ended_at"]),
                operation=step["operation"],
                iteration=step["iteration"],
                total_items=step["total_items"],
            )
            if step["iteration"]:
                iterations.append(record)
                continue
            replay[key] = record
            if step["status"] == AttemptStatus.WAITING:
                handle.waiting.add(key)
                if step["answered_at"] is not None:
                    handle.answers.append(Answer.from_row(step))
        handle.answers.sort(key=lambda answer: answer.at)
        tx.replay = replay
        tx.iteration_records = iterations
        steps_json = flow.get("steps") or {}
        for run in tx.steps:
            run.restore_retry_request(steps_json.get(run.node.id) or {})
        orchestrator.fast_forward(tx)
        if row.state in FINISHED_STATES:
            tx.state = TransactionState(row.state)
            tx.result = row.output_payload
            tx.ended_at = to_ms(row.ended_at)
            errors = (row.context or {}).get("errors") or []
            tx.errors = [StepError.from_dict(e) for e in errors]
        elif row.cancel_requested_at is not None:
            # Canceled while another process held it: whoever runs it now compensates.
            handle.cancel_requested = True
            if not tx.cancelled_at and tx.state in _CANCELABLE:
                tx.cancelled_at = to_ms(row.cancel_requested_at)
                tx.result = None
        return tx

    def record_attempt(self, tx: Transaction, record: AttemptRecord) -> None:
        handle: Handle = tx.storage_handle
        redact = self._redactor(tx)
        sensitive = tx.definition.nodes[record.step_index].options.sensitive
        values = {
            "input": redact.masked(record.input, sensitive, "input"),
            "output": redact.masked(record.output, sensitive, "output"),
            "compensate_input": redact.masked(
                mask_sensitive(record.compensate_input, sensitive, "output"), sensitive, "input"
            ),
            "error": redact(record.error),
            "status": record.status,
            "started_at": to_datetime(record.started_at),
            "ended_at": to_datetime(record.ended_at),
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
            ).update(**values, answer=None)
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
                task_id=current_task_id(),
                worker=process_label(),
            )
            if workflows_settings.DURABILITY == "boundary":
                handle.buffer.append(StepExecution(**values))
            else:
                try:
                    insert_checkpoint(values)
                except IntegrityError:
                    raise StaleTransactionError(
                        f"Step {record.step_path} attempt {record.attempt} was already recorded "
                        "by another executor."
                    ) from None
            if record.status == AttemptStatus.WAITING:
                handle.waiting.add(key)
        self._renew_lease(tx)
        if not tx.cancelled_at and cancel_requested(tx):
            # A cancel asked for elsewhere: the loop stops at this step boundary.
            tx.cancelled_at = to_ms(timezone.now())
            tx.result = None

    def request_cancel(self, definition: FlowDefinition, transaction_id: str) -> bool:
        """Record a cancel of the run another process executes (see ``cancels``)."""
        return request_cancel(definition.workflow_id, transaction_id)

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
            if tx.storage_handle.waiting:
                after_release(tx)
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
        handle: Handle = tx.storage_handle
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
        handle: Handle = tx.storage_handle
        redact = self._redactor(tx)
        now = timezone.now()
        context = {
            "data": redact(self._masked_context(tx)),
            "errors": redact([e.to_dict() for e in tx.errors]),
        }
        values: dict[str, Any] = {
            "state": str(tx.state),
            "status": execution_status(tx),
            "execution": self._flow(tx, redact),
            "context": context,
            "updated_at": now,
            "version": handle.version + 1,
            # Only a finished run expires; one that runs again (a cancel of a done
            # run) is kept until it finishes anew.
            "expires_at": None,
        }
        if release:
            # A released run normally has no deadline; a queued one, or one waiting for
            # a timer, gets one that recovery uses if the task or timer is lost.
            deadline = None
            if queued:
                deadline = now + datetime.timedelta(seconds=lease_seconds())
            elif wake_at is not None:
                deadline = to_datetime(wake_at) + datetime.timedelta(seconds=lease_seconds())
            values.update(owner="", lease_expires_at=deadline)
            handle.owner = ""
            lease_keeper.release(handle)
        else:
            lease = lease_seconds()
            handle.owner = handle.owner or new_owner()
            values.update(
                owner=handle.owner, lease_expires_at=now + datetime.timedelta(seconds=lease)
            )
            handle.lease_until = now.timestamp() + lease
        if final:
            first = next((e for e in tx.errors if e.handler_type == HandlerType.INVOKE), None)
            if first is None and tx.errors:
                first = tx.errors[0]
            started = to_datetime(tx.started_at)
            ended = to_datetime(tx.ended_at) or now
            values.update(
                cancel_requested_at=None,
                retention_time=retention,
                expires_at=None
                if retention is None
                else now + datetime.timedelta(seconds=retention),
                output_payload=redact(tx.result),
                error=redact.text(str(first.error.get("message") or "")) if first else "",
                error_stack=redact.text(first.error.get("stack") or "") if first else "",
                ended_at=ended,
                duration_ms=(
                    max(int((ended - started).total_seconds() * 1000), 0) if started else None
                ),
            )
        flush = not final or handle.start_unflushed
        handle.start_unflushed = False
        if not update_execution(handle.pk, handle.version, values, flush=flush):
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
        nodes = tx.definition.by_step_id
        masked = {}
        for step_id, entry in invoke.items():
            node = nodes.get(step_id)
            sensitive = node.options.sensitive if node is not None else ()
            if sensitive:
                compensate_input = mask_sensitive(entry.get("compensateInput"), sensitive, "output")
                entry = {
                    "output": mask_sensitive(entry.get("output"), sensitive, "output"),
                    "compensateInput": mask_sensitive(compensate_input, sensitive, "input"),
                }
            masked[step_id] = entry
        payload = self._mask_payload(tx.definition, tx.payload)
        return {"payload": payload, "invoke": masked, "compensate": tx.compensate}

    def _delete(self, handle: Handle) -> None:
        """Delete a finished execution that is not kept (its step rows first)."""
        has_steps = handle.flushed or workflows_settings.DURABILITY != "boundary"
        if async_prefix():
            deleted = delete_without_flush(handle.pk, handle.version, has_steps)
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
            if node.operation == Operation.SUB_WORKFLOW:
                keys.append(f"{prefix}{node.step_id}:invoke")
            elif node.operation == Operation.LOOP and (
                node.extra.get("for_each", {}).get("operation") == Operation.SUB_WORKFLOW
            ):
                # Children of loop iterations: "<wf>:<tx>:<loop>-<i>:invoke".
                loops |= Q(parent_step_idempotency_key__startswith=f"{prefix}{node.step_id}-")
        if not keys and not loops:
            return
        children = WorkflowExecution.objects.finished().filter(
            Q(parent_step_idempotency_key__in=keys) | loops, retention_time__isnull=True
        )
        StepExecution.objects.filter(execution__in=children.values("pk")).delete()
        children.delete()

    def _flush(self, tx: Transaction) -> None:
        handle: Handle = tx.storage_handle
        if handle.buffer:
            rows, handle.buffer = handle.buffer, []
            handle.flushed = True
            fields = [f for f in StepExecution._meta.concrete_fields if not f.primary_key]
            try:
                # One multi-row INSERT, without the transaction bulk_create() opens.
                atomic_if_nested(lambda: StepExecution.objects._insert(rows, fields=fields))
            except IntegrityError:
                raise StaleTransactionError(
                    f"Steps of execution {handle.pk} were already recorded by another executor."
                ) from None

    def _renew_lease(self, tx: Transaction) -> None:
        handle: Handle = tx.storage_handle
        now = timezone.now()
        lease = lease_seconds()
        if handle.lease_until - now.timestamp() > lease / 2:
            return
        until = now + datetime.timedelta(seconds=lease)
        WorkflowExecution.objects.filter(pk=handle.pk, owner=handle.owner).update(
            lease_expires_at=until
        )
        handle.lease_until = until.timestamp()
