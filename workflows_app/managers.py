"""Queries on stored executions, in one place for the engine, the admin and the API.

``WorkflowExecution.objects`` is a :class:`WorkflowExecutionQuerySet`: the questions
the service layer, the recovery sweep, the retention cleanup and the admin list ask
of the table are methods here, each written so that an index answers it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import connections, models, transaction
from django.db.models import Exists, F, Max, Min, OuterRef, Q, Subquery
from django.db.models.expressions import RawSQL
from django.utils import timezone

from .status import FINISHED_STATES, UNFINISHED_STATES, StepLogStatus

#: Step-log status of an attempt that waits for a response.
WAITING = StepLogStatus.WAITING.value

#: Columns that hold run data (flow, context, payloads); lists leave them out.
HEAVY_COLUMNS = ("execution", "context", "input_payload", "output_payload", "error", "error_stack")


@dataclass(frozen=True)
class ListCount:
    """How many rows a list shows: exact, the planner's estimate, or capped."""

    count: int
    estimated: bool = False
    capped: bool = False


class WorkflowExecutionQuerySet(models.QuerySet):
    """Queries on :class:`~workflows_app.models.WorkflowExecution` rows."""

    # States

    def unfinished(self) -> WorkflowExecutionQuerySet:
        """Runs not yet done, failed or reverted (the partial indexes' condition)."""
        return self.filter(state__in=UNFINISHED_STATES)

    def finished(self) -> WorkflowExecutionQuerySet:
        return self.filter(state__in=FINISHED_STATES)

    def waiting(self) -> WorkflowExecutionQuerySet:
        """Unfinished runs with a step handler waiting for a response from outside
        (an async step to be completed by a person or another system): what needs
        attention. The admin's "Waiting for a response" filter, the API's
        ``?waiting=true`` and ``workflows executions --waiting`` all ask this.

        An ``EXISTS`` on the step log's partial index of waiting attempts."""
        attempts = self.model._meta.get_field("step_executions").related_model
        return self.unfinished().filter(
            Exists(attempts.objects.filter(execution=OuterRef("pk"), status=WAITING))
        )

    def lease_expired(self, now: datetime.datetime) -> WorkflowExecutionQuerySet:
        """Unfinished runs whose holder's lease (or hand-over deadline) passed before
        ``now``: recovery may take them over."""
        return self.unfinished().filter(lease_expires_at__lt=now)

    def cancel_pending(self) -> WorkflowExecutionQuerySet:
        """Unfinished runs released by their executor with a cancel request not yet
        applied: the recovery sweep takes them and compensates."""
        return self.unfinished().filter(cancel_requested_at__isnull=False, owner="")

    def answer_pending(self) -> WorkflowExecutionQuerySet:
        """Unfinished runs released with an answer recorded while they were held and
        not applied yet (their holder stopped first): the recovery sweep applies it."""
        attempts = self.model._meta.get_field("step_executions").related_model
        recorded = attempts.objects.filter(
            execution=OuterRef("pk"), status=WAITING, answered_at__isnull=False
        )
        return self.unfinished().filter(Exists(recorded), owner="")

    def held_on_host(self, host: str, now: datetime.datetime) -> WorkflowExecutionQuerySet:
        """Unfinished runs leased, until after ``now``, by a process of ``host``."""
        return self.unfinished().filter(owner__startswith=host + ":", lease_expires_at__gte=now)

    def counts_by_workflow_and_state(self, since: datetime.datetime) -> models.QuerySet:
        """``{"workflow_id", "state", "count"}`` rows for the runs created since ``since``:
        one aggregate over the ``(created_at, id)`` index range (the admin's dashboard)."""
        return (
            self.filter(created_at__gte=since)
            .order_by()
            .values("workflow_id", "state")
            .annotate(count=models.Count("pk"))
        )

    # Retention

    def expired(self, now: datetime.datetime) -> WorkflowExecutionQuerySet:
        """Finished runs whose retention ended at or before ``now`` (``expires_at`` is
        set when a run finishes with a retention, cleared if it runs again)."""
        return self.finished().filter(expires_at__lte=now)

    def delete_expired(
        self,
        batch_size: int = 10_000,
        now: datetime.datetime | None = None,
        progress: Callable[[int], Any] | None = None,
    ) -> int:
        """Delete expired runs with their step rows, ``batch_size`` at a time, by
        set-based statements in the database; returns how many runs were deleted.

        A batch is the next ``batch_size`` expired runs in ``(expires_at, id)`` order,
        a unique key the ``wf_exec_expires_idx`` index walks, starting after the last
        key of the previous batch: ties of any size cannot stall it, and no batch
        walks again over the index entries of rows deleted before it (PostgreSQL
        leaves them until VACUUM; re-reading them made the sweep quadratic). The cost
        is that of what is deleted; with nothing expired a sweep is one index probe.
        On PostgreSQL a batch is one statement; elsewhere three in one transaction.
        """
        now = now or timezone.now()
        size = max(int(batch_size), 1)
        total = 0
        after: tuple[datetime.datetime, str] | None = None
        while True:
            deleted, after = self._delete_expired_batch(now, size, after)
            total += deleted
            if deleted and progress is not None:
                progress(total)
            if after is None:
                return total

    def _expired_after(
        self, now: datetime.datetime, after: tuple[datetime.datetime, str] | None
    ) -> WorkflowExecutionQuerySet:
        """Expired runs whose ``(expires_at, id)`` is greater than ``after``, written
        so that the index range starts at ``after``'s expiry."""
        expired = self.expired(now)
        if after is None:
            return expired
        moment, pk = after
        return expired.filter(expires_at__gte=moment).filter(
            Q(expires_at__gt=moment) | Q(id__gt=pk)
        )

    def _delete_expired_batch(
        self, now: datetime.datetime, size: int, after: tuple[datetime.datetime, str] | None
    ) -> tuple[int, tuple[datetime.datetime, str] | None]:
        """Delete the batch after the key ``after``: ``(deleted, last key of the
        batch)``, the key ``None`` when the batch was the last one. A chosen run
        re-opened meanwhile is kept (``deleted`` is then smaller than the batch)."""
        StepExecution = self.model._meta.get_field("step_executions").related_model
        connection = connections[self.db]
        candidates = self._expired_after(now, after).order_by("expires_at", "id")
        with transaction.atomic(using=self.db):
            if connection.vendor == "postgresql":
                batch, params = candidates[:size].values("id", "expires_at").query.sql_with_params()
                qn = connection.ops.quote_name
                executions = qn(self.model._meta.db_table)
                steps = qn(StepExecution._meta.db_table)
                column = qn(StepExecution._meta.get_field("execution").column)
                finished = ", ".join(["%s"] * len(FINISHED_STATES))
                with connection.cursor() as cursor:
                    # The DELETE repeats the batch's conditions: a row changed meanwhile
                    # (a run re-opened) is checked again and kept. Step rows go with
                    # their executions, found through the index that starts with the
                    # execution id (= ANY(ARRAY(...)): a join was planned as a hash join
                    # over the whole step table, 4 s a batch at 5,000,000 step rows).
                    cursor.execute(
                        f"WITH batch AS ({batch}), gone AS (DELETE FROM {executions} e "
                        f"USING batch WHERE e.id = batch.id AND e.expires_at <= %s "
                        f"AND e.state IN ({finished}) RETURNING e.id), "
                        f"steps AS (DELETE FROM {steps} s "
                        f"WHERE s.{column} = ANY(ARRAY(SELECT id FROM gone))) "
                        f"SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM gone), "
                        f"last.expires_at, last.id FROM (SELECT 1) one LEFT JOIN ("
                        f"SELECT expires_at, id FROM batch ORDER BY expires_at DESC, id DESC "
                        f"LIMIT 1) last ON true",
                        [*params, now, *FINISHED_STATES],
                    )
                    chosen, deleted, moment, pk = cursor.fetchone()
                    return deleted, (moment, pk) if chosen == size else None
            # Elsewhere: the batch's last key (None: fewer rows than a batch left),
            # then the rows up to it.
            last = next(iter(candidates.values_list("expires_at", "id")[size - 1 : size]), None)
            if last is not None:
                moment, pk = last
                candidates = candidates.filter(
                    Q(expires_at__lt=moment) | Q(expires_at=moment, id__lte=pk)
                )
            ids = Subquery(candidates.order_by().values("pk"))
            StepExecution.objects.using(self.db).filter(execution_id__in=ids)._raw_delete(self.db)
            runs = self.model._base_manager.using(self.db).filter(pk__in=ids)
            return runs._raw_delete(self.db), last

    # Searching and listing

    def search(self, q: str) -> WorkflowExecutionQuerySet:
        """Rows with ``q`` in their id, workflow id, transaction id, run id or state
        (the API's and the engine's ``q``; a substring match, so a scan)."""
        if not q:
            return self
        return self.filter(
            Q(id__icontains=q)
            | Q(workflow_id__icontains=q)
            | Q(transaction_id__icontains=q)
            | Q(run_id__icontains=q)
            | Q(state__icontains=q)
        )

    def matching(self, term: str, id_prefix: str = "") -> WorkflowExecutionQuerySet:
        """Rows whose id (with or without ``id_prefix``), transaction id or workflow
        id equals ``term``: exact matches only, each answered by a b-tree index
        (the admin's search box on a large table)."""
        term = term.strip()
        if not term:
            return self
        ids = {term}
        if id_prefix and not term.startswith(id_prefix):
            ids.add(id_prefix + term)
        return self.filter(Q(pk__in=ids) | Q(transaction_id=term) | Q(workflow_id=term))

    def of_run(self, acknowledgement: Mapping[str, Any]) -> WorkflowExecutionQuerySet:
        """The stored row of the run an acknowledgement (``RunResult.acknowledgement``)
        describes, by the ``(workflow_id, transaction_id, run_id)`` unique key; empty
        when the run is not stored."""
        return self.filter(
            workflow_id=acknowledgement.get("workflow_id"),
            transaction_id=acknowledgement.get("transaction_id"),
            run_id=acknowledgement.get("run_id"),
        )

    def newest_of(self, workflow_id: str) -> WorkflowExecutionQuerySet:
        """Runs of ``workflow_id``, newest first (by the ULID primary key)."""
        return self.filter(workflow_id=workflow_id).order_by("-pk")

    def light(self) -> WorkflowExecutionQuerySet:
        """Without the JSON columns of run data: what a list of runs needs."""
        return self.defer(*HEAVY_COLUMNS)

    def with_progress(self) -> WorkflowExecutionQuerySet:
        """Annotated with ``progress_done``/``progress_total``, counted by the database
        from the flow JSON so that only two numbers leave it (PostgreSQL, SQLite);
        unchanged on other databases, where the flow is read and counted in Python."""
        return self.annotate(**progress_annotations(self))

    def count_up_to(self, cap: int) -> int:
        """``min(count, cap + 1)``, reading at most ``cap + 1`` index entries."""
        return self.order_by().values("pk")[: cap + 1].count()

    def list_count(self, cap: int, estimate_from: int) -> ListCount:
        """The count a paginated list shows, without counting a whole large table:
        unfiltered on PostgreSQL, the planner's estimate when it is at least
        ``estimate_from``; otherwise a count that stops after ``cap`` rows."""
        if not self.query.where:
            estimate = self.estimated_total()
            if estimate is not None and estimate >= estimate_from:
                return ListCount(estimate, estimated=True)
        found = self.count_up_to(cap)
        if found > cap:
            return ListCount(cap, capped=True)
        return ListCount(found)

    def estimated_total(self) -> int | None:
        """The planner's row estimate of the whole table on PostgreSQL (kept fresh by
        autovacuum/ANALYZE); ``None`` elsewhere or when never analysed."""
        connection = connections[self.db]
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [connection.ops.quote_name(self.model._meta.db_table)],
            )
            row = cursor.fetchone()
        # -1 (PostgreSQL 14+) or 0: never analysed.
        return int(row[0]) if row and row[0] and row[0] > 0 else None

    # Date hierarchy: buckets from index probes, not a table scan.

    bucket_field = "created_at"
    max_buckets = 400

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None):
        """Django's ``datetimes()`` (the admin's date hierarchy) without a scan.

        The stock query is ``SELECT DISTINCT date_trunc(...)`` over every matching row
        (~120 ms at 100,000 rows on PostgreSQL, growing linearly). Here the candidate
        years, months or days between the first and last ``created_at`` (two index
        look-ups) are each checked with an ``EXISTS`` on the ``(created_at, id)``
        index: at most 31 tiny queries.
        """
        if field_name != self.bucket_field or kind not in ("year", "month", "day"):
            return super().datetimes(field_name, kind, order, tzinfo)
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        tz = tzinfo or timezone.get_current_timezone()
        first = timezone.localtime(bounds["first"], tz)
        last = timezone.localtime(bounds["last"], tz)
        buckets = list(_buckets(first, last, kind, tz))
        if len(buckets) > self.max_buckets:
            return super().datetimes(field_name, kind, order, tzinfo)
        found = [
            start
            for start, end in buckets
            if self.filter(**{f"{field_name}__gte": start, f"{field_name}__lt": end}).exists()
        ]
        return found[::-1] if order == "DESC" else found


WorkflowExecutionManager = models.Manager.from_queryset(WorkflowExecutionQuerySet)


class StepExecutionQuerySet(models.QuerySet):
    """Queries on :class:`~workflows_app.models.StepExecution` rows (the step log)."""

    def in_log_order(self) -> StepExecutionQuerySet:
        """The step log's order on every database: by ``started_at`` with attempts
        not started yet last, then by ``id`` (the order of ``steps_log()``)."""
        return self.order_by(F("started_at").asc(nulls_last=True), "id")


StepExecutionManager = models.Manager.from_queryset(StepExecutionQuerySet)


def progress_annotations(queryset: models.QuerySet) -> dict[str, Any]:
    """``progress_done``/``progress_total`` expressions over the flow JSON column;
    ``{}`` on databases other than PostgreSQL and SQLite."""
    connection = connections[queryset.db]
    qn = connection.ops.quote_name
    column = f"{qn(queryset.model._meta.db_table)}.{qn('execution')}"
    if connection.vendor == "postgresql":
        steps = (
            f"jsonb_each(CASE WHEN jsonb_typeof({column} -> 'steps') = 'object' "
            f"THEN {column} -> 'steps' ELSE '{{}}'::jsonb END) AS s"
        )
        done = "s.value #>> '{invoke,state}' = 'done'"
    elif connection.vendor == "sqlite":
        steps = f"json_each({column}, '$.steps') AS s"
        done = "json_extract(s.value, '$.invoke.state') = 'done'"
    else:
        return {}
    return {
        "progress_total": RawSQL(f"(SELECT COUNT(*) FROM {steps} WHERE s.key <> '_root')", []),
        "progress_done": RawSQL(
            f"(SELECT COUNT(*) FROM {steps} WHERE s.key <> '_root' AND {done})", []
        ),
    }


def _buckets(
    first: datetime.datetime, last: datetime.datetime, kind: str, tz: Any
) -> Iterator[tuple[datetime.datetime, datetime.datetime]]:
    """``(start, end)`` of every year, month or day from ``first`` to ``last``."""

    def following(moment: datetime.datetime) -> datetime.datetime:
        if kind == "year":
            return datetime.datetime(moment.year + 1, 1, 1, tzinfo=tz)
        if kind == "month":
            year, month = divmod(moment.month, 12)
            return datetime.datetime(moment.year + year, month + 1, 1, tzinfo=tz)
        day = moment.date() + datetime.timedelta(days=1)
        return datetime.datetime(day.year, day.month, day.day, tzinfo=tz)

    if kind == "year":
        start = datetime.datetime(first.year, 1, 1, tzinfo=tz)
    elif kind == "month":
        start = datetime.datetime(first.year, first.month, 1, tzinfo=tz)
    else:
        start = datetime.datetime(first.year, first.month, first.day, tzinfo=tz)
    while start <= last:
        end = following(start)
        yield start, end
        start = end
