#!/usr/bin/env python
"""Measure the admin list of workflow executions (and the API list) on a large table.

    python scripts/measure_list_latency.py --rows 100000 \\
        [--database-url postgres://postgres@127.0.0.1:5432/workflows_latency] [--requests 20]

Creates the database if it is missing, migrates it, seeds ``--rows`` executions (on
PostgreSQL with one ``INSERT ... SELECT generate_series``; elsewhere with bulk_create in
batches) whose ``execution`` JSON has five steps, with varied states, workflows and
creation times over ~90 days. Then, logged in as a superuser through Django's test
client against that database, it requests each page ``--requests`` times (after two
warm-up requests) and prints p50/p95 in milliseconds:

* the admin list, first page;
* the admin list filtered on a state;
* the admin list searched for one transaction id;
* ``GET /api/workflow-executions/`` with the same staff session, if that URL exists.

Seeded rows are kept between runs (their workflow ids start with ``latency-``); pass
``--reseed`` to delete and insert them again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/workflows_latency"
WORKFLOWS = [
    "checkout",
    "refund-order",
    "send-invoice",
    "sync-stock",
    "import-products",
    "export-orders",
    "reindex-search",
    "notify-customer",
]
STEP_NAMES = ["validate", "reserve-stock", "charge-payment", "create-shipment", "notify"]
# (state, status, completed steps, share in percent)
STATE_MIX = [
    ("done", "COMPLETED", 5, 70),
    ("reverted", "FAILED", 2, 10),
    ("invoking", "RUNNING", 3, 10),
    ("failed", "FAILED", 3, 5),
    ("compensating", "RUNNING", 2, 2),
    ("not_started", "RUNNING", 0, 2),
    ("waiting_to_compensate", "RUNNING", 1, 1),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="executions to seed")
    parser.add_argument(
        "--database-url", default=os.environ.get("LATENCY_DATABASE_URL", DEFAULT_URL)
    )
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    parser.add_argument("--reseed", action="store_true", help="delete the seeded rows first")
    return parser.parse_args(argv)


def ensure_postgres_database(url: str) -> None:
    """CREATE DATABASE when it does not exist (connecting to the ``postgres`` database)."""
    import psycopg2

    parsed = urlparse(url)
    name = unquote(parsed.path.lstrip("/"))
    connection = psycopg2.connect(
        dbname="postgres",
        user=unquote(parsed.username or "") or None,
        password=unquote(parsed.password or "") or None,
        host=parsed.hostname or None,
        port=parsed.port or None,
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")
    connection.close()


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    # Measure what production would run: no template debugging, no query log.
    os.environ.setdefault("DJANGO_DEBUG", "0")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def flow_variant(state: str, completed: int) -> tuple[dict, dict]:
    """A realistic ``execution`` (flow) and ``context`` for five steps in sequence."""
    steps: dict = {"_root": {"id": "_root", "next": [f"_root.{STEP_NAMES[0]}"]}}
    path = "_root"
    invoke_data = {}
    for index, name in enumerate(STEP_NAMES):
        path = f"{path}.{name}"
        if index < completed:
            invoke = {"state": "done", "status": "ok"}
            invoke_data[name] = {"output": {"step": name, "ok": True}, "compensateInput": None}
        elif index == completed and state in ("invoking",):
            invoke = {"state": "invoking", "status": "waiting_response"}
        elif index == completed and state in ("failed", "reverted", "compensating"):
            invoke = {"state": "failed", "status": "permanent_failure"}
        else:
            invoke = {"state": "not_started", "status": "idle"}
        compensated = state in ("reverted", "failed") and index <= completed
        steps[path] = {
            "id": path,
            "depth": index + 1,
            "definition": {"stepId": name, "name": name, "noCompensation": False},
            "invoke": invoke,
            "compensate": {
                "state": "reverted" if compensated else "dormant",
                "status": "ok" if compensated else "idle",
            },
            "attempts": 1 if index <= completed else 0,
            "failures": 0,
            "lastAttempt": None,
            "startedAt": None,
            "saveResponse": True,
            "stepFailed": compensated,
            "next": [f"{path}.{STEP_NAMES[index + 1]}"] if index + 1 < len(STEP_NAMES) else [],
        }
    execution = {
        "modelId": "seed",
        "options": {"store": True, "retention_time": 86400},
        "metadata": {},
        "state": state,
        "hasAsyncSteps": True,
        "hasFailedSteps": state in ("failed", "reverted"),
        "steps": steps,
    }
    errors = []
    if state in ("failed", "reverted", "compensating"):
        errors.append(
            {
                "stepId": STEP_NAMES[completed],
                "handlerType": "invoke",
                "error": {"message": "Payment declined", "name": "Error", "stack": "..."},
            }
        )
    context = {"data": {"payload": {"order": 1}, "invoke": invoke_data, "compensate": {}}}
    context["errors"] = errors
    return execution, context


def variants() -> list[tuple[str, str, dict, dict]]:
    """One entry per percent of the state mix (100 entries)."""
    out = []
    for state, status, completed, share in STATE_MIX:
        execution, context = flow_variant(state, completed)
        out.extend([(state, status, execution, context)] * share)
    return out


def seed_postgres(rows: int) -> None:
    from django.db import connection

    mix = variants()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE seed_variant (k int, state text, status text, "
            "execution jsonb, context jsonb)"
        )
        cursor.executemany(
            "INSERT INTO seed_variant VALUES (%s, %s, %s, %s::jsonb, %s::jsonb)",
            [
                (k, state, status, json.dumps(execution), json.dumps(context))
                for k, (state, status, execution, context) in enumerate(mix)
            ],
        )
        names = "ARRAY[" + ", ".join(f"'latency-{w}'" for w in WORKFLOWS) + "]"
        finished = "('done', 'failed', 'reverted')"
        cursor.execute(
            f"""
            INSERT INTO workflow_execution (
                id, workflow_id, transaction_id, run_id, state, status, execution, context,
                input_payload, output_payload, error, error_stack, retention_time,
                started_at, ended_at, duration_ms, definition_hash,
                parent_step_idempotency_key, owner, lease_expires_at, version,
                created_at, updated_at, deleted_at, expires_at, recovery_failures,
                recovery_error
            )
            SELECT
                'wf_exec_' || upper(lpad(to_hex(g.i), 26, '0')),
                ({names})[1 + g.i %% {len(WORKFLOWS)}],
                'tx-' || g.i,
                'run-' || g.i,
                v.state, v.status, v.execution, v.context,
                jsonb_build_object('order_id', g.i, 'amount', g.i %% 977),
                CASE WHEN v.state = 'done' THEN jsonb_build_object('ok', true) END,
                CASE WHEN v.state IN ('failed', 'reverted')
                     THEN 'Payment declined' ELSE '' END,
                '',
                86400,
                t.created,
                CASE WHEN v.state IN {finished}
                     THEN t.created + (g.i %% 5000) * interval '1 millisecond' END,
                CASE WHEN v.state IN {finished} THEN g.i %% 5000 END,
                '', '', '', NULL, 1,
                t.created, t.created, NULL,
                CASE WHEN v.state IN {finished} THEN t.created + interval '86400 seconds' END,
                0, ''
            FROM generate_series(1, %s) AS g(i)
            JOIN seed_variant v ON v.k = (g.i * 37) %% 100
            CROSS JOIN LATERAL (
                SELECT now() - (g.i * (interval '90 days' / %s)) AS created
            ) t
            """,
            [rows, rows],
        )
        cursor.execute("ANALYZE workflow_execution")


def seed_other(rows: int, batch: int = 5000) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from workflows_app.models import WorkflowExecution

    mix = variants()
    now = timezone.now()
    step = timedelta(days=90) / rows
    for start in range(1, rows + 1, batch):
        objs = []
        for i in range(start, min(start + batch, rows + 1)):
            state, status, execution, context = mix[(i * 37) % 100]
            created = now - step * i
            finished = state in ("done", "failed", "reverted")
            objs.append(
                WorkflowExecution(
                    id=f"wf_exec_{i:026X}",
                    workflow_id=f"latency-{WORKFLOWS[i % len(WORKFLOWS)]}",
                    transaction_id=f"tx-{i}",
                    run_id=f"run-{i}",
                    state=state,
                    status=status,
                    execution=execution,
                    context=context,
                    input_payload={"order_id": i, "amount": i % 977},
                    retention_time=86400,
                    started_at=created,
                    ended_at=created + timedelta(milliseconds=i % 5000) if finished else None,
                    duration_ms=i % 5000 if finished else None,
                    created_at=created,
                    updated_at=created,
                    version=1,
                )
            )
        WorkflowExecution.objects.bulk_create(objs)


def prepare(rows: int, reseed: bool) -> None:
    from django.core.management import call_command
    from django.db import connection

    from workflows_app.models import WorkflowExecution

    call_command("migrate", interactive=False, verbosity=0)
    seeded = WorkflowExecution.objects.filter(workflow_id__startswith="latency-")
    existing = seeded.count()
    if existing and (reseed or existing != rows):
        print(f"deleting {existing} seeded rows")
        seeded.delete()
        existing = 0
    if existing == rows:
        print(f"reusing {rows} seeded rows")
        return
    started = time.perf_counter()
    if connection.vendor == "postgresql":
        seed_postgres(rows)
    else:
        seed_other(rows)
    print(f"seeded {rows} rows in {time.perf_counter() - started:.1f} s")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def measure(client, url: str, requests: int) -> tuple[list[float], int, int]:
    from django.db import connection

    for _ in range(2):
        client.get(url)
    # Count with an execute wrapper: the query log is reset by every request_started.
    executed = []

    def count(execute, sql, params, many, context):
        executed.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        response = client.get(url)
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
    return timings, response.status_code, len(executed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if urlparse(args.database_url).scheme.startswith("postgres"):
        ensure_postgres_database(args.database_url)
    setup_django(args.database_url)

    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.urls import Resolver404, resolve, reverse

    prepare(args.rows, args.reseed)
    user = User.objects.filter(username="latency-admin").first()
    if user is None:
        user = User.objects.create_superuser("latency-admin", "latency@example.com", "latency")
    client = Client()
    client.force_login(user)

    total = connection.vendor
    print(f"database: {total} {connection.settings_dict['NAME']}, rows: {args.rows}")
    listing = reverse("admin:workflows_app_workflowexecution_changelist")
    pages = [
        ("admin list, first page", listing),
        ("admin list, state=failed", f"{listing}?state__exact=failed"),
        ("admin list, search tx id", f"{listing}?q=tx-{args.rows // 2}"),
    ]
    api = "/api/workflow-executions/"
    try:
        resolve(api)
        pages.append(("API list", api))
    except Resolver404:
        print(f"note: {api} does not exist (yet); skipped")

    print(f"{'page':30} {'status':>6} {'queries':>7} {'p50 ms':>8} {'p95 ms':>8}")
    worst = 0.0
    for label, url in pages:
        timings, status, query_count = measure(client, url, args.requests)
        if label == "API list" and status == 404:
            print(f"note: {api} answered 404; skipped")
            continue
        p50, p95 = statistics.median(timings), percentile(timings, 0.95)
        if label.startswith("admin"):
            worst = max(worst, p95)
        print(f"{label:30} {status:>6} {query_count:>7} {p50:>8.1f} {p95:>8.1f}")
    print(f"admin list worst p95: {worst:.1f} ms (target < 300 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
