"""``manage.py workflows bench``: the SPEC 11 workloads, their checks and output format."""

from __future__ import annotations

import dataclasses
import io
import json
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from workflows_app.bench import runner as bench
from workflows_app.bench import workloads
from workflows_app.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = {"runs", "seconds", "runs_per_s", "us_per_step", "steps_per_run"}
STEPS_PER_RUN = {
    "chain5": 5,
    "chain20": 20,
    "compensate5": 5,
    "parallel": 5,
    "transform_when": 2,
    "chain5_stored": 5,
    "chain20_stored": 20,
    "compensate5_stored": 5,
}


def bench_output(*args: str) -> str:
    out = io.StringIO()
    call_command("workflows", "bench", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_json_is_one_line_with_every_workload_and_field():
    text = bench_output("--n", "20", "--json")
    lines = text.splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert set(report) == set(STEPS_PER_RUN) | {"versions", "config"}
    for key, steps in STEPS_PER_RUN.items():
        result = report[key]
        assert set(result) >= FIELDS, key
        assert result["runs"] == 20
        assert result["steps_per_run"] == steps
        assert result["seconds"] > 0
        assert result["runs_per_s"] == pytest.approx(20 / result["seconds"], rel=0.01)
        assert result["us_per_step"] == pytest.approx(
            result["seconds"] * 1e6 / (20 * steps), rel=0.01
        )
    assert set(report["versions"]) >= {"python", "django", "workflows_app", "database"}
    assert report["versions"]["database"].split()[0] in ("SQLite", "PostgreSQL")
    assert set(report["config"]) >= {"durability", "parallel_threads", "database"}
    assert report["config"]["durability"] == "step"


def test_only_limits_the_workloads():
    report = json.loads(bench_output("--n", "20", "--only", "chain5", "--json"))
    assert set(report) == {"chain5", "versions", "config"}


def test_stored_workloads_keep_their_rows():
    before = WorkflowExecution.objects.filter(workflow_id="bench-chain5-stored").count()
    bench_output("--n", "20", "--only", "chain5_stored", "--json")
    after = WorkflowExecution.objects.filter(workflow_id="bench-chain5-stored")
    # 20 warm-up runs plus 20 timed ones, each kept for an hour.
    assert after.count() - before == 40
    assert set(after.values_list("state", flat=True)) == {"done"}
    assert set(after.values_list("retention_time", flat=True)) == {3600}


def test_durability_option_applies_to_the_stored_workloads():
    report = json.loads(
        bench_output(
            "--n", "20", "--only", "compensate5_stored", "--durability", "boundary", "--json"
        )
    )
    assert report["config"]["durability"] == "boundary"
    rows = WorkflowExecution.objects.filter(workflow_id="bench-compensate5-stored")
    assert set(rows.values_list("state", flat=True)) == {"reverted"}


def test_readable_output_is_one_line_per_workload():
    text = bench_output("--n", "20", "--only", "chain5,parallel")
    lines = text.splitlines()
    assert [line.split()[0] for line in lines] == ["chain5", "parallel"]
    assert all("runs/s" in line and "us/step" in line for line in lines)


def test_unknown_workload_is_an_error():
    with pytest.raises(CommandError, match="Unknown workload"):
        bench_output("--n", "20", "--only", "chain5,nope")


def test_bad_n_is_an_error():
    with pytest.raises(CommandError, match="positive integer"):
        bench_output("--n", "0")


def test_a_wrong_result_fails_the_benchmark(monkeypatch):
    def wrong(result, i):
        raise bench.BenchmarkError("chain5: expected something else")

    broken = dataclasses.replace(bench.workload("chain5"), check=wrong)
    monkeypatch.setattr(bench, "workload", lambda key: broken)
    with pytest.raises(CommandError, match="Benchmark failed: chain5: expected"):
        bench_output("--n", "20", "--only", "chain5")


def test_checks_reject_wrong_answers():
    chain = bench.workload("chain5")
    chain.run_once(3)
    with pytest.raises(bench.BenchmarkError, match="expected 9, got 8"):
        chain.check(SimpleNamespace(result=8), 4)

    parallel = bench.workload("parallel")
    with pytest.raises(bench.BenchmarkError, match="parallel: expected 66"):
        parallel.check(SimpleNamespace(result=0), 1)

    transform_when = bench.workload("transform_when")
    with pytest.raises(bench.BenchmarkError, match="branch"):
        transform_when.check(SimpleNamespace(result={"branch": "big", "value": 1}), 0)

    compensate = bench.workload("compensate5")
    compensate.run_once(1)
    workloads._compensated.reverse()
    with pytest.raises(bench.BenchmarkError, match="compensation order"):
        compensate.check(SimpleNamespace(), 1)


def test_warmup_is_a_tenth_of_n_and_at_least_20():
    assert bench.warmup_runs(20) == 20
    assert bench.warmup_runs(2000) == 200


def test_background_is_opt_in():
    assert "background" in bench.WORKLOAD_KEYS
    assert "background" not in bench.select(None)
    assert bench.select(["background"]) == ["background"]


def test_background_refuses_sqlite(is_postgres):
    if is_postgres:
        pytest.skip("the refusal is for SQLite")
    with pytest.raises(CommandError, match="needs a database that worker processes can share"):
        bench_output("--n", "20", "--only", "background", "--json")


@pytest.mark.postgres
@pytest.mark.slow
def test_background_runs_through_a_django_q_cluster():
    report = json.loads(bench_output("--n", "20", "--only", "background", "--json"))
    assert set(report) == {"background", "versions", "config"}
    result = report["background"]
    assert set(result) >= FIELDS | {"p50_ms", "p95_ms", "max_ms", "workers", "broker"}
    assert result["runs"] == 20
    assert result["steps_per_run"] == 3
    assert result["workers"] == 2
    # The app's default broker on PostgreSQL.
    assert result["broker"] == "postgres"
    assert result["runs_per_s"] == pytest.approx(20 / result["seconds"], rel=0.01)
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"]
    # Every run (20 warm-up + 20 timed) finished in the workers and kept its row.
    rows = WorkflowExecution.objects.filter(workflow_id="bench-background")
    assert rows.count() == 40
    assert set(rows.values_list("state", flat=True)) == {"done"}
    assert not rows.filter(step_executions__status="FAILED").exists()


@pytest.mark.postgres
@pytest.mark.slow
def test_background_rate_paces_the_starts():
    report = json.loads(bench_output("--n", "20", "--only", "background", "--rate", "40", "--json"))
    result = report["background"]
    assert result["offered_per_s"] == 40
    # The 20th start has its slot 19/40 s after the first.
    assert result["enqueue_seconds"] >= 19 / 40
    assert result["enqueue_per_s"] <= 40 * 20 / 19 + 0.1
    assert result["runs"] == 20
    assert 0 < result["p50_ms"] <= result["p95_ms"]


@pytest.mark.parametrize("value", ["0", "-2", "fast", "inf", "nan"])
def test_bad_rate_is_an_error(value):
    with pytest.raises(CommandError, match="positive number"):
        bench_output("--n", "20", "--only", "background", "--rate", value)


def test_rate_applies_only_to_background():
    with pytest.raises(CommandError, match="applies only to 'background'"):
        bench_output("--n", "20", "--only", "chain5", "--rate", "10")


def test_concurrency_reports_each_runner_count():
    report = json.loads(
        bench_output("--n", "20", "--only", "chain5", "--concurrency", "1,2", "--json")
    )
    assert set(report) == {"chain5", "versions", "config"}
    assert set(report["chain5"]) == {"1", "2"}
    for runners in (1, 2):
        result = report["chain5"][str(runners)]
        assert set(result) >= FIELDS | {"runners", "runs_per_runner"}
        assert result["runners"] == runners
        assert result["runs"] == 20 * runners
        assert result["runs_per_s"] == pytest.approx(result["runs"] / result["seconds"], rel=0.01)
    assert report["config"]["concurrency"] == [1, 2]


def test_concurrency_readable_output_names_the_runner_count():
    text = bench_output("--n", "20", "--only", "chain5", "--concurrency", "3")
    assert text.split()[:3] == ["chain5", "x3", "60"]


@pytest.mark.parametrize("value", ["0", "two", "1,,4", "-1"])
def test_bad_concurrency_is_an_error(value):
    with pytest.raises(CommandError, match="positive integers"):
        bench_output("--n", "20", "--only", "chain5", "--concurrency", value)


def test_concurrency_does_not_apply_to_background():
    with pytest.raises(CommandError, match="does not apply"):
        bench_output("--n", "20", "--only", "background", "--concurrency", "2")


def test_concurrent_stored_runs_refuse_sqlite(is_postgres):
    if is_postgres:
        pytest.skip("the refusal is for SQLite")
    with pytest.raises(CommandError, match="--concurrency needs a database"):
        bench_output("--n", "20", "--only", "chain5_stored", "--concurrency", "2")


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_stored_runs_are_all_stored():
    report = json.loads(
        bench_output("--n", "20", "--only", "chain5_stored", "--concurrency", "3", "--json")
    )
    assert report["chain5_stored"]["3"]["runs"] == 60
    rows = WorkflowExecution.objects.filter(workflow_id="bench-chain5-stored")
    # Three runners, each with 20 warm-up and 20 timed runs.
    assert rows.count() == 120
    assert set(rows.values_list("state", flat=True)) == {"done"}
