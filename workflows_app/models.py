"""Stored workflow executions and their per-attempt step log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from ulid import ULID

from .managers import StepExecutionManager, WorkflowExecutionManager
from .orchestration import codec
from .orchestration.definition import MAX_STEP_PATH
from .status import (
    FINISHED_STATES,
    UNFINISHED_STATES,
    ExecutionStatus,
    HandlerType,
    StepLogStatus,
    TransactionState,
)

EXECUTION_ID_PREFIX = "wf_exec_"


def new_execution_id() -> str:
    """A fresh primary key for :class:`WorkflowExecution`: ``"wf_exec_" + ULID``."""
    return EXECUTION_ID_PREFIX + str(ULID())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class WorkflowExecution(models.Model):
    """One run of a stored workflow: the checkpointed transaction plus its log summary."""

    id = models.CharField(
        _("ID"),
        max_length=40,
        primary_key=True,
        default=new_execution_id,
        editable=False,
        help_text=_('"wf_exec_" followed by a ULID.'),
    )
    workflow_id = models.CharField(
        _("workflow ID"),
        max_length=255,
        help_text=_("Name the workflow is registered under."),
    )
    transaction_id = models.CharField(
        _("transaction ID"),
        max_length=255,
        help_text=_("Caller-chosen or generated id of the transaction."),
    )
    run_id = models.CharField(
        _("run ID"),
        max_length=255,
        help_text=_("Id of this run; new for every re-run of a finished transaction."),
    )
    state = models.CharField(
        _("state"),
        max_length=32,
        choices=TransactionState,
        default=TransactionState.NOT_STARTED,
        help_text=_("State of the transaction in the orchestrator."),
    )
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=ExecutionStatus,
        default=ExecutionStatus.RUNNING,
        help_text=_("Log status, derived from the state and how the run ended."),
    )
    execution = models.JSONField(
        _("execution"),
        encoder=codec.Encoder,
        null=True,
        blank=True,
        help_text=_("The checkpointed flow: steps, states, attempts, definitions."),
    )
    context = models.JSONField(
        _("context"),
        encoder=codec.Encoder,
        null=True,
        blank=True,
        help_text=_("Payload, step outputs and errors of the run."),
    )
    input_payload = models.JSONField(
        _("input"),
        encoder=codec.Encoder,
        null=True,
        blank=True,
        help_text=_("Input the workflow was started with (sensitive keys redacted)."),
    )
    output_payload = models.JSONField(
        _("output"),
        encoder=codec.Encoder,
        null=True,
        blank=True,
        help_text=_("Final result of the workflow (sensitive keys redacted)."),
    )
    error = models.TextField(
        _("error"),
        blank=True,
        default="",
        help_text=_(
            "Message of the top-level error (the structured error is in the context "
            "and the step log)."
        ),
    )
    error_stack = models.TextField(
        _("error stack"),
        blank=True,
        default="",
        help_text=_("Traceback of the top-level error."),
    )
    retention_time = models.PositiveIntegerField(
        _("retention time"),
        null=True,
        blank=True,
        help_text=_("Seconds to keep the finished row; empty: deleted at the end."),
    )
    started_at = models.DateTimeField(
        _("started at"),
        null=True,
        blank=True,
        help_text=_("When the first step began."),
    )
    ended_at = models.DateTimeField(
        _("ended at"),
        null=True,
        blank=True,
        help_text=_("When the transaction reached a finished state."),
    )
    duration_ms = models.PositiveIntegerField(
        _("duration (ms)"),
        null=True,
        blank=True,
        help_text=_("Milliseconds from start to end."),
    )
    definition_hash = models.CharField(
        _("definition hash"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("Hash of the step graph the run started with."),
    )
    parent_step_idempotency_key = models.CharField(
        _("parent step idempotency key"),
        max_length=512,
        blank=True,
        default="",
        help_text=_("Idempotency key of the parent step of a nested run."),
    )
    owner = models.CharField(
        _("owner"),
        max_length=255,
        blank=True,
        default="",
        help_text=_("Worker currently holding the lease on this execution."),
    )
    lease_expires_at = models.DateTimeField(
        _("lease expires at"),
        null=True,
        blank=True,
        help_text=_("After this moment the recovery sweep may resume the execution."),
    )
    version = models.PositiveIntegerField(
        _("version"),
        default=0,
        help_text=_("Incremented on every state write (optimistic concurrency)."),
    )
    created_at = models.DateTimeField(
        _("created at"),
        default=timezone.now,
        editable=False,
        help_text=_("When the row was inserted."),
    )
    updated_at = models.DateTimeField(
        _("updated at"),
        default=timezone.now,
        help_text=_("Last write of the row."),
    )
    cancel_requested_at = models.DateTimeField(
        _("cancel requested at"),
        null=True,
        blank=True,
        help_text=_(
            "When a cancel was asked for while another process executed the run; that "
            "process stops at its next step boundary and compensates."
        ),
    )
    recovery_failures = models.PositiveIntegerField(
        _("recovery failures"),
        default=0,
        help_text=_(
            "Consecutive recoveries that failed with the same error; at "
            "WORKFLOWS['MAX_RECOVERY_FAILURES'] the run is marked failed."
        ),
    )
    recovery_error = models.TextField(
        _("recovery error"),
        blank=True,
        default="",
        help_text=_("Error of the last failed recovery."),
    )
    expires_at = models.DateTimeField(
        _("expires at"),
        null=True,
        blank=True,
        help_text=_("End of the finished run's retention; the cleanup deletes it from then on."),
    )
    deleted_at = models.DateTimeField(
        _("deleted at"),
        null=True,
        blank=True,
        help_text=_("Soft-deletion time, if any."),
    )

    objects = WorkflowExecutionManager()

    class Meta:
        db_table = "workflow_execution"
        verbose_name = _("workflow execution")
        verbose_name_plural = _("Workflows")
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=["workflow_id", "transaction_id", "run_id"],
                name="workflow_execution_run_unique",
            ),
            # At most one unfinished execution per transaction id: concurrent starts
            # of the same transaction collide here.
            models.UniqueConstraint(
                fields=["workflow_id", "transaction_id"],
                condition=Q(state__in=UNFINISHED_STATES),
                name="workflow_execution_one_unfinished",
            ),
        ]
        indexes = [
            models.Index(fields=["state"], name="wf_exec_state_idx"),
            models.Index(fields=["workflow_id"], name="wf_exec_workflow_idx"),
            models.Index(fields=["transaction_id"], name="wf_exec_transaction_idx"),
            models.Index(fields=["created_at", "id"], name="wf_exec_created_id_idx"),
            models.Index(fields=["state", "updated_at"], name="wf_exec_state_updated_idx"),
            models.Index(
                fields=["expires_at", "id"],
                condition=Q(expires_at__isnull=False),
                name="wf_exec_expires_idx",
            ),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(state__in=UNFINISHED_STATES),
                name="wf_exec_lease_idx",
            ),
        ]
        permissions = [
            ("cancel_workflowexecution", _("Can cancel workflow executions")),
            ("retry_workflowexecution", _("Can retry workflow steps")),
            ("complete_step_workflowexecution", _("Can mark waiting steps succeeded or failed")),
            ("run_workflow", _("Can run workflows")),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} / {self.transaction_id} [{self.state}] ({self.id})"

    @property
    def is_finished(self) -> bool:
        """Whether the transaction is done, failed or reverted."""
        return self.state in FINISHED_STATES

    def top_error(self) -> dict[str, Any] | None:
        """The structured top-level error (``message``, ``name``, ``stack``) from the
        context: the first invoke error, else the first error; ``None`` without one."""
        errors = (self.context or {}).get("errors") or []
        entries = [e for e in errors if isinstance(e, dict) and isinstance(e.get("error"), dict)]
        first = next((e for e in entries if e.get("handlerType") == "invoke"), None)
        if first is None and entries:
            first = entries[0]
        if first is not None:
            return first["error"]
        if self.error:
            return {"message": self.error, "name": "Error", "stack": self.error_stack}
        return None

    def steps_log(self) -> list[dict[str, Any]]:
        """The step attempts as execution-log entries (camelCase keys).

        Ordered by ``started_at`` (rows without one last), then ``id``. Uses prefetched
        ``step_executions`` when available.
        """
        steps = sorted(
            self.step_executions.all(),
            key=lambda step: (step.started_at is None, step.started_at or 0, step.pk or 0),
        )
        return [step.as_log_entry() for step in steps]


class StepExecution(models.Model):
    """One attempt of a step's invoke or compensate handler (a step-log entry)."""

    execution = models.ForeignKey(
        WorkflowExecution,
        on_delete=models.CASCADE,
        related_name="step_executions",
        verbose_name=_("execution"),
        help_text=_("Execution this attempt belongs to."),
        # The unique constraint below starts with this column and serves its lookups.
        db_index=False,
        # No foreign key in the database: its check fired once per deleted execution
        # and cost the retention cleanup over a third of its time. Step rows are only
        # written by the holder of an unfinished run, which no deletion touches, and
        # deleted with their execution (the ORM's cascade, the cleanup's statement).
        db_constraint=False,
    )
    step_id = models.CharField(
        _("step ID"),
        max_length=255,
        help_text=_("Id of the step in its workflow (its name in the flow)."),
    )
    step_path = models.CharField(
        _("step path"),
        max_length=MAX_STEP_PATH,
        help_text=_('Position of the step in the flow, e.g. "_root.a.b".'),
    )
    step_name = models.CharField(
        _("step name"),
        max_length=255,
        blank=True,
        default="",
        help_text=_("Display name of the step."),
    )
    handler_type = models.CharField(
        _("handler type"),
        max_length=16,
        choices=HandlerType,
        default=HandlerType.INVOKE,
        help_text=_("Whether the invoke or the compensate handler ran."),
    )
    operation = models.CharField(
        _("operation"),
        max_length=32,
        default="step",
        help_text=_("step, hook, sub-workflow, when, builtin:loop or transform."),
    )
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=StepLogStatus,
        default=StepLogStatus.RUNNING,
        help_text=_("Outcome of this attempt."),
    )
    attempt = models.PositiveIntegerField(
        _("attempt"),
        default=1,
        help_text=_("1-based attempt number of this handler."),
    )
    input = models.JSONField(
        _("input"),
        encoder=codec.Encoder,
        null=True,
        blank=True,
        help_text=_("Input the handler received (sensitive values redacted)."),
    )
    output = models.JSONField(
        _("output"),
        encoder=codec.Encoder,
        null=True,
        blank=True,
        help_text=_("Output the handler returned (sensitive values redacted)."),
    )
    compensate_input = models.JSONField(
        _("compensate input"),
        encoder=codec.Encoder,
        null=True,
        blank=True,
        help_text=_("Data handed to the compensation of this step."),
    )
    error = models.JSONField(
        _("error"),
        encoder=codec.Encoder,
        null=True,
        blank=True,
        help_text=_('Error of the attempt as {"message", "name", "stack"}.'),
    )
    started_at = models.DateTimeField(
        _("started at"),
        null=True,
        blank=True,
        help_text=_("When the attempt began."),
    )
    ended_at = models.DateTimeField(
        _("ended at"),
        null=True,
        blank=True,
        help_text=_("When the attempt finished."),
    )
    duration_ms = models.PositiveIntegerField(
        _("duration (ms)"),
        null=True,
        blank=True,
        help_text=_("Milliseconds the attempt took."),
    )
    iteration = models.PositiveIntegerField(
        _("iteration"),
        default=0,
        help_text=_("1-based loop iteration; 0 when the step is not a loop iteration."),
    )
    total_items = models.PositiveIntegerField(
        _("total items"),
        null=True,
        blank=True,
        help_text=_("Number of items of the loop this iteration belongs to."),
    )
    task_id = models.CharField(
        _("task ID"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("Id of the django-q2 task that ran the attempt; empty when in-process."),
    )
    worker = models.CharField(
        _("worker"),
        max_length=255,
        blank=True,
        default="",
        help_text=_('"host:pid" of the process that ran the attempt.'),
    )
    answer_kind = models.CharField(
        _("answer kind"),
        max_length=16,
        blank=True,
        default="",
        # The hot path's hand-written step-row INSERT leaves this column out.
        db_default="",
        help_text=_(
            '"success" or "failure": an answer given while another process held the run, '
            "applied when the run is free."
        ),
    )
    answer = models.JSONField(
        _("answer"),
        encoder=codec.Encoder,
        null=True,
        blank=True,
        help_text=_("The recorded answer's response or error; cleared once applied."),
    )
    answered_at = models.DateTimeField(
        _("answered at"),
        null=True,
        blank=True,
        help_text=_("When the recorded answer arrived."),
    )

    objects = StepExecutionManager()

    class Meta:
        db_table = "workflow_step_execution"
        verbose_name = _("step execution")
        verbose_name_plural = _("step executions")
        ordering = ("started_at", "id")
        constraints = [
            # A second executor of the same attempt fails on insert.
            models.UniqueConstraint(
                fields=["execution", "step_path", "handler_type", "attempt", "iteration"],
                name="wf_step_attempt_unique",
            ),
        ]
        indexes = [
            # The few attempts waiting for an answer: recovery looks for nested ones,
            # and WorkflowExecution.objects.waiting() for runs that need a person.
            models.Index(
                fields=["execution"],
                condition=Q(status=StepLogStatus.WAITING),
                name="wf_step_waiting_idx",
            ),
            # Answers recorded while the run was held and not applied yet (recovery).
            models.Index(
                fields=["execution"],
                condition=Q(status=StepLogStatus.WAITING, answered_at__isnull=False),
                name="wf_step_answer_pending_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step_path} {self.handler_type} #{self.attempt} [{self.status}]"

    def as_log_entry(self) -> dict[str, Any]:
        """This attempt in the execution-log schema's shape (camelCase keys)."""
        return {
            "id": self.pk,
            "stepId": self.step_id,
            "stepPath": self.step_path,
            "stepName": self.step_name,
            "handlerType": self.handler_type,
            "operation": self.operation,
            "status": self.status,
            "attempt": self.attempt,
            "input": self.input,
            "output": self.output,
            "compensateInput": self.compensate_input,
            "error": self.error,
            "startedAt": _iso(self.started_at),
            "endedAt": _iso(self.ended_at),
            "durationMs": self.duration_ms,
            "iteration": self.iteration or None,
            "totalItems": self.total_items,
        }


class WorkflowDefinitionEntry(WorkflowExecution):
    """Proxy that gives the admin a "Workflow definitions" entry (the definitions browser)."""

    class Meta:
        proxy = True
        verbose_name = _("workflow definition")
        verbose_name_plural = _("Workflow definitions")
