"""Statements the ORM storage sends as written SQL, and the time conversions they use.

A step checkpoint is written once per step, so its INSERT is precompiled; a write
may travel with ``SET LOCAL synchronous_commit TO OFF`` in the same round trip
(``STEP_COMMIT = "async"`` on PostgreSQL).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from functools import cache
from typing import Any

from django.db import connection, transaction
from django.db.models import sql

from ..conf import workflows_settings
from ..models import StepExecution, WorkflowExecution
from ..orchestration import codec

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


def update_without_flush(queryset: Any, values: dict[str, Any]) -> int:
    """``queryset.update(**values)`` behind :func:`async_prefix`."""
    query = queryset.query.chain(sql.UpdateQuery)
    query.add_update_values(values)
    text, params = query.get_compiler(connection=connection).as_sql()
    with connection.cursor() as cursor:
        cursor.execute(async_prefix() + text, params)
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
