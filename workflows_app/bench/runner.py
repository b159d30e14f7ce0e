"""Times the selected workloads and builds the report of ``workflows bench``."""

from __future__ import annotations

import gc
import platform
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import django
from django.conf import settings
from django.db import connection
from django.test.utils import override_settings

import workflows_app

from ..conf import workflows_settings
from .background import measure_background
from .concurrency import measure_concurrently, parse_concurrency
from .workloads import (
    BACKGROUND_KEY,
    DEFAULT_KEYS,
    DURABILITY_MODES,
    OPT_IN_KEYS,
    WORKLOAD_KEYS,
    BenchmarkError,
    BenchmarkUnavailable,
    Workload,
    select,
    timing,
    warmup_runs,
    workload,
)

__all__ = [
    "BACKGROUND_KEY",
    "DEFAULT_KEYS",
    "DURABILITY_MODES",
    "OPT_IN_KEYS",
    "WORKLOAD_KEYS",
    "BenchmarkError",
    "BenchmarkUnavailable",
    "Workload",
    "measure",
    "measure_concurrently",
    "parse_concurrency",
    "run_benchmarks",
    "select",
    "versions",
    "warmup_runs",
    "workload",
]


def measure(item: Workload, n: int) -> dict:
    """Warm up, then time ``n`` checked runs of the workload ``item``."""
    run_once = item.run_once
    for i in range(warmup_runs(n)):
        run_once(i)
    gc.collect()
    started = time.perf_counter()
    for i in range(n):
        run_once(i)
    return timing(item, n, time.perf_counter() - started)


def database_version() -> str:
    """The vendor and server version of the default database, e.g. ``PostgreSQL 15.20``."""
    connection.ensure_connection()
    vendor = connection.vendor
    if vendor == "postgresql":
        version = connection.pg_version
        return f"PostgreSQL {version // 10000}.{version % 10000}"
    if vendor == "sqlite":
        return f"SQLite {connection.Database.sqlite_version}"
    if vendor == "mysql":
        return f"{connection.display_name} {'.'.join(map(str, connection.mysql_version))}"
    return connection.display_name


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "django": django.get_version(),
        "workflows_app": workflows_app.__version__,
        "database": database_version(),
    }


def run_benchmarks(
    n: int,
    only: Iterable[str] | None = None,
    durability: str | None = None,
    on_result: Callable[[str, dict], Any] | None = None,
    allow_sqlite: bool = False,
    concurrency: list[int] | None = None,
    rate: float | None = None,
) -> dict:
    """Run the selected workloads ``n`` times each; return the JSON-ready report.

    ``durability`` (``"step"`` or ``"boundary"``) applies to the stored workloads; by
    default they use ``WORKFLOWS["DURABILITY"]``. The runs use ``DEBUG = False`` so that
    Django's query log (a development aid) is not part of the measurement.
    ``allow_sqlite`` lets the ``background`` workload try SQLite, which it refuses otherwise.
    With ``concurrency`` (runner counts, e.g. ``[1, 4, 8]``) each workload runs in that
    many processes at once, ``n`` runs each, and its entry maps each count to a result.
    ``rate`` (runs per second) paces the starts of the ``background`` workload.
    """
    if n < 1:
        raise ValueError("n must be a positive integer.")
    if durability is not None and durability not in DURABILITY_MODES:
        raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}.")
    keys = select(only)
    if concurrency and BACKGROUND_KEY in keys:
        raise ValueError(f"--concurrency does not apply to {BACKGROUND_KEY!r}.")
    if rate is not None and BACKGROUND_KEY not in keys:
        raise ValueError(f"--rate applies only to {BACKGROUND_KEY!r}.")
    report: dict[str, Any] = {}
    stored_settings = {**getattr(settings, "WORKFLOWS", {})}
    if durability is not None:
        stored_settings["DURABILITY"] = durability

    def report_result(label: str, result: dict) -> dict:
        if on_result is not None:
            on_result(label, result)
        return result

    with override_settings(DEBUG=False):
        for key in keys:
            item = workload(key)
            stored = override_settings(WORKFLOWS=stored_settings) if item.stored else nullcontext()
            with stored:
                if concurrency:
                    report[key] = {
                        str(runners): report_result(
                            f"{key} x{runners}", measure_concurrently(item, n, runners)
                        )
                        for runners in concurrency
                    }
                elif item.in_workers:
                    report[key] = report_result(
                        key, measure_background(item, n, allow_sqlite=allow_sqlite, rate=rate)
                    )
                else:
                    report[key] = report_result(key, measure(item, n))
    report["versions"] = versions()
    report["config"] = {
        "durability": durability or workflows_settings.DURABILITY,
        "parallel_threads": workflows_settings.PARALLEL_THREADS,
        "database": f"{connection.vendor}:{connection.settings_dict.get('NAME')}",
        "debug": False,
        "warmup_runs": warmup_runs(n),
    }
    if concurrency:
        report["config"]["concurrency"] = list(concurrency)
    return report
