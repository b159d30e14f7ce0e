#!/usr/bin/env python
"""Measure the retention cleanup on a large table, while new runs keep running.

    python scripts/measure_cleanup.py --rows 1000000 \\
        [--database-url postgres://postgres@127.0.0.1:5432/workflows_cleanup] \\
        [--steps-per-run 0] [--batch-size 10000]

Seeds ``--rows`` executions with ``scripts/measure_list_latency.py`` (same rows, same
database set-up), then:

1. times a sweep (``WorkflowExecution.objects.delete_expired``, what
   ``workflow_engine.clear_expired_executions()`` runs) at a moment just before the
   first seeded row expires: nothing to delete;
2. adds ``--steps-per-run`` step rows per execution (0: none, as seeded), marks the
   unfinished seeded rows finished, and times a sweep a year later, which deletes
   them all, while a thread runs a stored three-step workflow again and again;
   prints how many of those runs succeeded, failed, and their slowest duration, and
   what the sweep cost the server: WAL written and CPU of its server process.

The seeded rows are deleted by the second sweep: each invocation seeds again.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import measure_list_latency as seeding  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/workflows_cleanup"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--steps-per-run", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument(
        "--expired-only",
        action="store_true",
        help="skip seeding and the first sweep: delete the seeded rows already expired",
    )
    return parser.parse_args(argv)


def seeded_sql(statement: str, params: list | None = None) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def add_steps(per_run: int) -> None:
    if per_run <= 0:
        return
    seeded_sql(
        """
        INSERT INTO workflow_step_execution (
            execution_id, step_id, step_path, step_name, handler_type, operation, status,
            attempt, iteration, input, output, started_at, ended_at, duration_ms,
            task_id, worker
        )
        SELECT e.id, 'step-' || n, '_root.step-' || n, 'step-' || n, 'invoke', 'step',
               'COMPLETED', 1, 0, '{"order": 1}'::jsonb, '{"ok": true}'::jsonb,
               e.created_at, e.created_at, 1, '', ''
        FROM workflow_execution e CROSS JOIN generate_series(1, %s) AS n
        WHERE e.workflow_id LIKE 'latency-%%'
        """,
        [per_run],
    )


class RunsMeanwhile(threading.Thread):
    """Runs a stored three-step workflow in a loop until stopped."""

    def __init__(self, name: str) -> None:
        super().__init__(daemon=True)
        self.workflow = name
        self.stop = threading.Event()
        self.succeeded = 0
        self.failed = 0
        self.slowest = 0.0

    def run(self) -> None:
        from django.db import connection

        from workflows_app.engine import workflow_engine

        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    result = workflow_engine.run(self.workflow, input=1, throw_on_error=False)
                    ok = result.transaction.state == "done"
                except Exception as exc:  # counted, the run must go on
                    if not self.failed:
                        print(f"first failed run: {exc!r}")
                    ok = False
                self.slowest = max(self.slowest, time.perf_counter() - started)
                if ok:
                    self.succeeded += 1
                else:
                    self.failed += 1
        finally:
            connection.close()


class DatabaseWork:
    """WAL bytes written by the server and CPU seconds of this connection's server
    process between two readings (the CPU only when PostgreSQL runs on this machine
    and its ``/proc`` entry is readable; ``None`` otherwise)."""

    def __init__(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), pg_current_wal_lsn()")
            pid, self.lsn = cursor.fetchone()
        self.stat = Path(f"/proc/{pid}/stat")
        self.cpu = self._cpu()

    def _cpu(self) -> float | None:
        try:
            fields = self.stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def report(self) -> str:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [self.lsn])
            wal = float(cursor.fetchone()[0])
        cpu = self._cpu()
        used = "" if cpu is None or self.cpu is None else f", server CPU {cpu - self.cpu:.1f} s"
        return f"WAL written {wal / 1e6:,.0f} MB{used}"


def register_workflow() -> str:
    from workflows_app.sdk import create_step, create_workflow

    steps = [create_step(f"cleanup-probe-{i}", lambda value, ctx: value) for i in range(3)]

    def compose(payload):
        value = payload
        for step in steps:
            value = step(value)
        return value

    # Kept for ten years: the timed sweep, a year ahead, leaves these runs alone.
    create_workflow("cleanup-probe", compose, store=True, retention_time=315_360_000)
    return "cleanup-probe"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seeding.ensure_postgres_database(args.database_url)
    seeding.setup_django(args.database_url)

    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from workflows_app.models import WorkflowExecution

    seeded = "workflow_id LIKE 'latency-%%'"
    call_command("migrate", interactive=False, verbosity=0)
    executions = WorkflowExecution.objects.filter(workflow_id__startswith="latency-")
    if not args.expired_only:
        # Seeded as the app leaves them: finished rows expire a day after they end.
        seeding.prepare(args.rows, reseed=True)
        first = executions.expired(timezone.now() + datetime.timedelta(days=3650))
        earliest = first.order_by("expires_at").values_list("expires_at", flat=True)[0]
        print(f"{WorkflowExecution.objects.count()} executions")

        # A sweep just before the first row expires: nothing to delete.
        before = earliest - datetime.timedelta(seconds=1)
        started = time.perf_counter()
        deleted = WorkflowExecution.objects.delete_expired(args.batch_size, now=before)
        elapsed = time.perf_counter() - started
        print(f"sweep with nothing expired: deleted {deleted} in {elapsed:.3f} s")

        # Every seeded run finished; the sweep below runs a year later.
        add_steps(args.steps_per_run)
        seeded_sql(
            "UPDATE workflow_execution SET state = 'done', status = 'COMPLETED', "
            f"expires_at = created_at + interval '86400 seconds' WHERE {seeded} "
            "AND state NOT IN ('done', 'failed', 'reverted')"
        )
        seeded_sql("VACUUM ANALYZE workflow_execution")
        seeded_sql("VACUUM ANALYZE workflow_step_execution")
    later = timezone.now() + datetime.timedelta(days=365)
    steps = connection.cursor()
    steps.execute("SELECT count(*) FROM workflow_step_execution")
    expired = executions.expired(later).count()
    print(f"{expired} executions expired, {steps.fetchone()[0]} step rows in the table")
    steps.close()

    runs = RunsMeanwhile(register_workflow())
    runs.start()
    time.sleep(1.0)
    before = runs.succeeded
    work = DatabaseWork()
    started = time.perf_counter()
    deleted = WorkflowExecution.objects.delete_expired(args.batch_size, now=later)
    elapsed = time.perf_counter() - started
    print(work.report())
    during = runs.succeeded - before
    runs.stop.set()
    runs.join(timeout=30)
    rate = deleted / elapsed
    print(f"sweep of expired rows: deleted {deleted} in {elapsed:.1f} s ({rate:,.0f} rows/s)")
    print(
        f"new runs meanwhile: {during} succeeded during the sweep, {runs.failed} failed, "
        f"slowest {runs.slowest * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
