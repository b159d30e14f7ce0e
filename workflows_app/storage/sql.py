"""Statements the ORM storage sends as written SQL, and the time conversions they use.

The writes every stored run makes (its execution row's INSERT and UPDATEs, one step
row per checkpoint) are precompiled on PostgreSQL: building a model instance and
compiling the query cost more client CPU than the statement costs the server, and
that CPU is what limits runners working at once. A write may travel with ``SET LOCAL
synchronous_commit TO OFF`` in the same round trip (``STEP_COMMIT = "async"``).
Other databases go through the ORM.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from functools import cache
from typing import Any

from django.db import connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from ..conf import workflows_settings
from ..models import StepExecution, WorkflowExecution
from ..orchestration import codec
from ..status import FINISHED_STATES

_UTC = datetime.UTC


def to_datetime(ms: int | None) -> datetime.datetime | None:
    """Epoch milliseconds (the orchestrator's clock) as an aware datetime."""
    return None if ms is None else datetime.datetime.fromtimestamp(ms / 1000, tz=_UTC)


def to_ms(value: datetime.datetime | None) -> int | None:
    """An aware datetime as epoch milliseconds."""
    return None if value is None else int(value.timestamp() * 1000)


STEP_COLUMNS = (
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
    "task_id",
    "worker",
)
_STEP_JSON = frozenset({"input", "output", "compensate_input", "error"})
_STEP_JSON_POSITIONS = tuple(i for i, name in enumerate(STEP_COLUMNS) if name in _STEP_JSON)


@cache
def _step_insert_sql() -> str:
    """The INSERT of one step row, with JSON values passed as text and cast."""
    meta = StepExecution._meta
    columns = [
        meta.get_field("execution" if name == "execution_id" else name).column
        for name in STEP_COLUMNS
    ]
    values = ["%s::jsonb" if name in _STEP_JSON else "%s" for name in STEP_COLUMNS]
    return f'INSERT INTO "{meta.db_table}" ({", ".join(columns)}) VALUES ({", ".join(values)})'


def async_prefix() -> str:
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


@cache
def _execution_fields() -> tuple[tuple[str, str, bool, Any], ...]:
    """(name, column, is JSON, field) of every column of the execution table."""
    return tuple(
        (field.attname, field.column, isinstance(field, models.JSONField), field)
        for field in WorkflowExecution._meta.concrete_fields
    )


@cache
def _execution_json() -> frozenset[str]:
    return frozenset(name for name, _column, is_json, _field in _execution_fields() if is_json)


@cache
def _execution_insert_sql() -> str:
    fields = _execution_fields()
    columns = ", ".join(f'"{column}"' for _name, column, _json, _field in fields)
    values = ", ".join("%s::jsonb" if is_json else "%s" for _name, _column, is_json, _f in fields)
    return f'INSERT INTO "{WorkflowExecution._meta.db_table}" ({columns}) VALUES ({values})'


@cache
def _execution_update_sql(names: tuple[str, ...]) -> str:
    """The compare-and-set UPDATE of the execution row's ``names`` columns."""
    json_names = _execution_json()
    columns = {name: column for name, column, _json, _field in _execution_fields()}
    assignments = ", ".join(
        f'"{columns[name]}" = %s::jsonb' if name in json_names else f'"{columns[name]}" = %s'
        for name in names
    )
    table = WorkflowExecution._meta.db_table
    return f'UPDATE "{table}" SET {assignments} WHERE "id" = %s AND "version" = %s'


def insert_execution(values: dict[str, Any], *, flush: bool = True) -> None:
    """Insert a new execution row; the columns ``values`` leaves out take their defaults.

    Its commit waits for the WAL flush: the start of a run is what recovery finds
    after a crash. Without ``flush`` (:func:`async_prefix`) the caller commits a
    later write of the same process synchronously before anything depends on the
    row: PostgreSQL flushes the WAL in order, so that commit makes both durable.
    """
    if connection.vendor != "postgresql":
        row = WorkflowExecution(**values)
        atomic_if_nested(lambda: row.save(force_insert=True))
        return
    params = []
    for name, _column, is_json, field in _execution_fields():
        value = values[name] if name in values else field.get_default()
        params.append(codec.dumps(value) if is_json and value is not None else value)
    text = _execution_insert_sql()

    if not flush:
        text = async_prefix() + text

    def insert() -> None:
        with connection.cursor() as cursor:
            cursor.execute(text, params)

    atomic_if_nested(insert)


def update_execution(pk: str, version: int, values: dict[str, Any], *, flush: bool = True) -> int:
    """Write ``values`` to the execution ``pk`` if it is still at ``version``; the
    count of rows updated (0: another executor changed it). Without ``flush`` the
    write goes behind :func:`async_prefix`."""
    if connection.vendor != "postgresql":
        return WorkflowExecution.objects.filter(pk=pk, version=version).update(**values)
    json_names = _execution_json()
    names = tuple(values)
    params = [
        codec.dumps(value) if name in json_names and value is not None else value
        for name, value in values.items()
    ]
    params += [pk, version]
    text = _execution_update_sql(names)
    with connection.cursor() as cursor:
        cursor.execute((async_prefix() if not flush else "") + text, params)
        return cursor.rowcount


def delete_without_flush(pk: str, version: int, has_steps: bool) -> int:
    """Delete an execution (and its step rows) in one implicit transaction."""
    steps = StepExecution._meta.db_table
    executions = WorkflowExecution._meta.db_table
    text = f'DELETE FROM "{executions}" WHERE "id" = %s AND "version" = %s'
    params: list[Any] = [pk, version]
    if has_steps:
        text = f'DELETE FROM "{steps}" WHERE "execution_id" = %s; ' + text
        params.insert(0, pk)
    with connection.cursor() as cursor:
        cursor.execute(async_prefix() + text, params)
        return cursor.rowcount


def atomic_if_nested(action: Callable[[], Any]) -> Any:
    """Run ``action`` in a savepoint only inside an outer transaction (where a failed
    statement would otherwise break it); in autocommit it costs no extra statement."""
    if connection.in_atomic_block:
        with transaction.atomic():
            return action()
    return action()


def insert_checkpoint(values: dict[str, Any]) -> None:
    """Insert a step row: the checkpoint of one finished attempt.

    On PostgreSQL this is one precompiled statement (it runs once per step, so it
    skips the ORM's query compilation). In autocommit with ``STEP_COMMIT =
    "async"``, a ``SET LOCAL synchronous_commit TO OFF`` travels with it in one
    implicit transaction: one round trip whose commit does not wait for the WAL
    flush. Inside the caller's own transaction the caller's commit decides.
    """
    if connection.vendor != "postgresql":
        row = StepExecution(**values)
        atomic_if_nested(lambda: row.save(force_insert=True))
        return
    params = [values[name] for name in STEP_COLUMNS]
    for i in _STEP_JSON_POSITIONS:
        value = params[i]
        params[i] = None if value is None else codec.dumps(value)
    text = _step_insert_sql()
    if connection.in_atomic_block:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(text, params)
        return
    with connection.cursor() as cursor:
        cursor.execute(async_prefix() + text, params)


@cache
def _latest_execution_sql() -> str:
    columns = ", ".join(f'"{column}"' for _name, column, _json, _field in _execution_fields())
    return (
        f'SELECT {columns} FROM "{WorkflowExecution._meta.db_table}" '
        'WHERE "workflow_id" = %s AND "transaction_id" = %s '
        'ORDER BY "created_at" DESC, "id" DESC LIMIT 1'
    )


def _execution_from_values(found: tuple) -> WorkflowExecution:
    fields = _execution_fields()
    values = [
        codec.loads(value) if is_json and value is not None else value
        for value, (_name, _column, is_json, _field) in zip(found, fields, strict=True)
    ]
    return WorkflowExecution.from_db(
        connection.alias, [name for name, _column, _json, _field in fields], values
    )


def latest_execution(workflow_id: str, transaction_id: str) -> WorkflowExecution | None:
    """The newest execution row of a transaction."""
    if connection.vendor != "postgresql":
        return (
            WorkflowExecution.objects.filter(workflow_id=workflow_id, transaction_id=transaction_id)
            .order_by("-created_at", "-id")
            .first()
        )
    with connection.cursor() as cursor:
        cursor.execute(_latest_execution_sql(), [workflow_id, transaction_id])
        found = cursor.fetchone()
    return None if found is None else _execution_from_values(found)


@cache
def _claim_latest_sql() -> str:
    """Read the newest execution of a transaction, claim it if it is unfinished and free,
    and read its step rows: one statement where a resume took three round trips."""
    table = WorkflowExecution._meta.db_table
    fields = _execution_fields()
    columns = ", ".join(f'latest."{column}"' for _name, column, _json, _field in fields)
    meta = StepExecution._meta
    step_values = ", ".join(f's."{meta.get_field(name).column}"' for name in STEP_REPLAY_COLUMNS)
    finished = ", ".join(f"'{state}'" for state in sorted(FINISHED_STATES))
    return (
        f"WITH latest AS ({_latest_execution_sql()}), "
        f'claimed AS (UPDATE "{table}" AS t SET "owner" = %s, "lease_expires_at" = %s, '
        '"version" = t."version" + 1 FROM latest WHERE t."id" = latest."id" '
        f'AND t."version" = latest."version" AND latest."state" NOT IN ({finished}) '
        'AND (t."owner" = \'\' OR t."lease_expires_at" < %s) RETURNING t."id") '
        f"SELECT {columns}, EXISTS (SELECT 1 FROM claimed), "
        f'(SELECT json_agg(json_build_array({step_values}) ORDER BY s."id")::text '
        f'FROM "{meta.db_table}" AS s WHERE s."execution_id" = latest."id") FROM latest'
    )


_REPLAY_TIMES = frozenset({"started_at", "ended_at", "answered_at"})


def claim_latest(
    workflow_id: str, transaction_id: str, owner: str, until: datetime.datetime
) -> tuple[WorkflowExecution | None, bool, list[dict[str, Any]] | None]:
    """The newest execution of a transaction, whether ``owner`` claimed it until
    ``until`` (it was unfinished and nobody held it, or its lease had expired), and its
    step rows as :func:`step_rows` returns them (``None``: read them separately).

    On PostgreSQL one statement (behind :func:`async_prefix`, as the claim always was);
    elsewhere the read, the claim and the step rows are separate statements."""
    if connection.vendor != "postgresql":
        row = latest_execution(workflow_id, transaction_id)
        if row is None or row.state in FINISHED_STATES:
            return row, False, None
        now = timezone.now()
        return (
            row,
            bool(claim_execution(row.pk, row.version, owner, until, expired_before=now)),
            None,
        )
    with connection.cursor() as cursor:
        cursor.execute(
            async_prefix() + _claim_latest_sql(),
            [workflow_id, transaction_id, owner, until, timezone.now()],
        )
        found = cursor.fetchone()
    if found is None:
        return None, False, None
    *values, claimed, steps = found
    rows = []
    for step_values in codec.loads(steps) if steps else ():
        step = dict(zip(STEP_REPLAY_COLUMNS, step_values, strict=True))
        for name in _REPLAY_TIMES:
            if step[name] is not None:
                step[name] = datetime.datetime.fromisoformat(step[name])
        rows.append(step)
    return _execution_from_values(tuple(values)), bool(claimed), rows


def claim_execution(
    pk: str,
    version: int,
    owner: str,
    until: datetime.datetime,
    *,
    expired_before: datetime.datetime | None = None,
    dead_owner: str | None = None,
) -> int:
    """Take the lease of execution ``pk`` at ``version`` for ``owner`` until ``until``
    (and move its version on) if nobody holds it, its lease expired before
    ``expired_before``, or ``dead_owner`` holds it; the count of rows claimed.

    The claim goes behind :func:`async_prefix`, as step checkpoints do: a database
    crash that loses it frees the run again (its earlier lease deadline still
    stands) and recovery resumes it, as it would after losing the checkpoints the
    claimant wrote next. Every task a worker resumes is spared a wait for the disk."""
    if connection.vendor != "postgresql":
        free = Q(owner="") | Q(lease_expires_at__lt=expired_before)
        runs = WorkflowExecution.objects.filter(Q(owner=dead_owner) if dead_owner else free)
        return runs.filter(pk=pk, version=version).update(
            owner=owner, lease_expires_at=until, version=F("version") + 1
        )
    table = WorkflowExecution._meta.db_table
    if dead_owner:
        held, held_params = '"owner" = %s', [dead_owner]
    else:
        held, held_params = '("owner" = \'\' OR "lease_expires_at" < %s)', [expired_before]
    with connection.cursor() as cursor:
        cursor.execute(
            f'{async_prefix()}UPDATE "{table}" SET "owner" = %s, "lease_expires_at" = %s, '
            f'"version" = "version" + 1 WHERE "id" = %s AND "version" = %s AND {held}',
            [owner, until, pk, version, *held_params],
        )
        return cursor.rowcount


# What a rebuild replays: the step row's columns but the ones only the log shows, and
# an answer recorded while the run was held elsewhere (``answers``).
STEP_REPLAY_COLUMNS = (
    *(
        name
        for name in STEP_COLUMNS
        if name not in {"execution_id", "step_name", "duration_ms", "task_id", "worker"}
    ),
    "id",
    "answer_kind",
    "answer",
    "answered_at",
)
_REPLAY_JSON = _STEP_JSON | {"answer"}


@cache
def _step_rows_sql() -> str:
    meta = StepExecution._meta
    columns = ", ".join(f'"{meta.get_field(name).column}"' for name in STEP_REPLAY_COLUMNS)
    table = meta.db_table
    return f'SELECT {columns} FROM "{table}" WHERE "execution_id" = %s ORDER BY "id"'


def step_rows(pk: str) -> list[dict[str, Any]]:
    """The step rows of execution ``pk`` in the order they were written, as dicts of
    :data:`STEP_REPLAY_COLUMNS` (what a rebuild replays)."""
    if connection.vendor != "postgresql":
        rows = StepExecution.objects.filter(execution_id=pk).order_by("id")
        return list(rows.values(*STEP_REPLAY_COLUMNS))
    with connection.cursor() as cursor:
        cursor.execute(_step_rows_sql(), [pk])
        found = cursor.fetchall()
    rows = []
    for values in found:
        row = dict(zip(STEP_REPLAY_COLUMNS, values, strict=True))
        for name in _REPLAY_JSON:
            if row[name] is not None:
                row[name] = codec.loads(row[name])
        rows.append(row)
    return rows
