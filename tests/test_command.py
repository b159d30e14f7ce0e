"""``manage.py workflows``: every subcommand through ``call_command``, errors included."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from workflows_app.engine import workflow_engine
from workflows_app.management.commands import workflows as command_module
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import StepResponse, create_hook, create_step, create_workflow

from .support import REPO_ROOT, uname


def define(*, fail: bool = False, store: bool = False, retention: int | None = None) -> str:
    """A registered two-step workflow ``n -> n + 1 -> n + 2``; the second step may fail."""
    name = uname("cmd")

    def add(n, ctx):
        return StepResponse(n + 1, n)

    def undo(n, ctx):
        return None

    def explode(n, ctx):
        raise ValueError("second step exploded")

    first = create_step(f"{name}-first", add, undo)
    second = create_step(f"{name}-second", explode if fail else add, undo)
    options = {}
    if store:
        options["store"] = True
    if retention is not None:
        options["retention_time"] = retention
    create_workflow(name, lambda input: second(first(input["n"])), **options)
    return name


def run_command(*args: str, stdout=None) -> tuple[str, str]:
    out = stdout if stdout is not None else io.StringIO()
    err = io.StringIO()
    call_command("workflows", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


class TTYStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


# Parsing


def test_a_subcommand_is_required():
    with pytest.raises(CommandError):
        run_command()


def test_unknown_subcommand_is_an_error():
    with pytest.raises(CommandError, match="invalid choice"):
        run_command("frobnicate")


def test_every_subcommand_is_registered_in_the_table():
    assert {"list", "run", "executions", "show", "cleanup", "recover", "bench"} <= set(
        command_module.SUBCOMMANDS
    )


# list


def test_list_shows_definitions_with_steps_store_and_hooks():
    plain = define()
    stored = define(store=True)
    hooked = uname("hooked")
    step = create_step(f"{hooked}-s", lambda n, ctx: n)

    def composer(input):
        value = step(input)
        create_hook(f"{hooked}-created", value)
        return value

    create_workflow(hooked, composer)
    out, _ = run_command("list")
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert out.splitlines()[0].split() == ["name", "steps", "store", "hooks"]
    assert lines[plain][1:] == ["2", "no", "-"]
    assert lines[stored][1:] == ["2", "yes", "-"]
    assert lines[hooked][1:] == ["2", "no", f"{hooked}-created"]


# run


def test_run_prints_state_transaction_and_json_result():
    name = define()
    out, err = run_command("run", name, "--input", '{"n": 40}', "--transaction-id", "tx-cmd-1")
    assert "State: done" in out
    assert "Execution: - (not stored)" in out
    assert "Transaction: tx-cmd-1" in out
    assert "Result: 42" in out
    assert err == ""


@pytest.mark.django_db(transaction=True)
def test_run_of_a_stored_workflow_is_kept_and_listed():
    name = define(store=True, retention=3600)
    out, _ = run_command("run", name, "--input", '{"n": 1}')
    assert "State: done" in out
    assert "Result: 3" in out
    execution = workflow_engine.list_workflow_executions(filters={"workflow_id": name}).get()
    assert execution.state == "done"
    assert execution.output_payload == 3
    assert f"Execution: {execution.pk}\n" in out


def test_run_that_reverts_exits_non_zero_after_printing_the_state():
    name = define(fail=True)
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"reverted.*second step exploded"):
        run_command("run", name, "--input", '{"n": 1}', stdout=out)
    assert "State: reverted" in out.getvalue()
    assert "Result: null" in out.getvalue()


def test_run_with_malformed_json_input():
    name = define()
    with pytest.raises(CommandError, match="--input is not valid JSON"):
        run_command("run", name, "--input", "{n: 1")


def test_run_of_an_unknown_workflow():
    with pytest.raises(CommandError, match="No workflow is registered under the name"):
        run_command("run", uname("missing"))


def test_run_with_an_invalid_transaction_id():
    name = define()
    with pytest.raises(CommandError, match="contains ':'"):
        run_command("run", name, "--input", '{"n": 1}', "--transaction-id", "a:b")


def test_bad_json_from_the_command_line_exits_1_without_traceback():
    proc = subprocess.run(
        [sys.executable, "manage.py", "workflows", "run", "anything", "--input", "{bad"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "CommandError: --input is not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_a_command_before_migrate_says_to_migrate_without_traceback(tmp_path):
    fresh = tmp_path / "never-migrated.sqlite3"
    proc = subprocess.run(
        [sys.executable, "manage.py", "workflows", "executions"],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{fresh}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "CommandError: The database has no table workflow_execution" in proc.stderr
    assert "run `python manage.py migrate` first." in proc.stderr
    assert "Traceback" not in proc.stderr


# executions


@pytest.mark.django_db(transaction=True)
def test_executions_table_and_filters():
    ok = define(store=True, retention=3600)
    bad = define(fail=True, store=True, retention=3600)
    for n in range(2):
        workflow_engine.run(ok, input={"n": n})
    workflow_engine.run(bad, input={"n": 0}, throw_on_error=False)

    out, _ = run_command("executions")
    header = out.splitlines()[0].split()
    assert header == ["id", "workflow", "transaction", "state", "status", "created"]
    assert out.count(ok) == 2 and out.count(bad) == 1

    out, _ = run_command("executions", "--workflow", ok)
    assert out.count(ok) == 2 and bad not in out
    assert "done" in out and "COMPLETED" in out

    out, _ = run_command("executions", "--state", "reverted")
    assert out.count(bad) == 1 and ok not in out
    assert "FAILED" in out

    out, _ = run_command("executions", "--state", "reverted", "--state", "done")
    assert out.count(ok) == 2 and out.count(bad) == 1

    out, _ = run_command("executions", "--workflow", ok, "--limit", "1")
    assert out.count(ok) == 1

    out, _ = run_command("executions", "--workflow", ok, "--state", "reverted")
    assert out.strip() == "No workflow executions."


@pytest.mark.django_db
def test_executions_rejects_unknown_states_and_bad_limits():
    with pytest.raises(CommandError, match="invalid choice"):
        run_command("executions", "--state", "exploded")
    with pytest.raises(CommandError, match="positive integer"):
        run_command("executions", "--limit", "0")


# show


@pytest.mark.django_db(transaction=True)
def test_show_prints_header_and_step_log_of_a_failed_run():
    name = define(fail=True, store=True, retention=3600)
    result = workflow_engine.run(name, input={"n": 5}, throw_on_error=False)
    execution = workflow_engine.list_workflow_executions(filters={"workflow_id": name}).get()

    out, _ = run_command("show", execution.pk)
    assert f"ID:           {execution.pk}" in out
    assert f"Workflow:     {name}" in out
    assert f"Transaction:  {result.transaction.transaction_id}" in out
    assert "State:        reverted" in out
    assert "Status:       FAILED" in out
    assert "Error:        second step exploded" in out

    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("step "))
    assert lines[start].split() == [
        "step",
        "handler",
        "attempt",
        "status",
        "duration",
        "ms",
        "error",
    ]
    rows = [line.split(None, 5) for line in lines[start + 2 :]]
    by_step = {(row[0], row[1]): row for row in rows}
    assert by_step[(f"{name}-first", "invoke")][3] == "COMPLETED"
    failed = by_step[(f"{name}-second", "invoke")]
    assert failed[2:4] == ["1", "FAILED"]
    assert failed[5].endswith("second step exploded")
    assert by_step[(f"{name}-first", "compensate")][3] == "COMPLETED"
    assert len(rows) == len(execution.steps_log())


@pytest.mark.django_db
def test_show_of_an_unknown_execution():
    with pytest.raises(CommandError, match=r"No workflow execution has the id .*wf_exec_NOPE"):
        run_command("show", "wf_exec_NOPE")


@pytest.mark.django_db(transaction=True)
def test_show_accepts_a_transaction_id():
    name = define(store=True, retention=3600)
    workflow_engine.run(name, input={"n": 1}, transaction_id="tx-show-1")
    execution = workflow_engine.list_workflow_executions(filters={"workflow_id": name}).get()

    out, _ = run_command("show", "tx-show-1")

    assert f"ID:           {execution.pk}" in out
    assert "Transaction:  tx-show-1" in out


@pytest.mark.django_db(transaction=True)
def test_show_of_a_transaction_id_used_by_two_workflows_needs_workflow():
    first, second = define(store=True, retention=3600), define(store=True, retention=3600)
    transaction_id = uname("tx-shared")
    for name in (first, second):
        workflow_engine.run(name, input={"n": 1}, transaction_id=transaction_id)

    with pytest.raises(CommandError, match=r"several workflows.*--workflow") as error:
        run_command("show", transaction_id)
    assert first in str(error.value) and second in str(error.value)

    out, _ = run_command("show", transaction_id, "--workflow", second)
    assert f"Workflow:     {second}" in out
    with pytest.raises(CommandError, match=f"of workflow {first}-nope"):
        run_command("show", transaction_id, "--workflow", f"{first}-nope")


# cleanup


def _expire(name: str) -> None:
    WorkflowExecution.objects.filter(workflow_id=name).update(
        updated_at=timezone.now() - timedelta(hours=2),
        expires_at=timezone.now() - timedelta(seconds=1),
    )


@pytest.mark.django_db(transaction=True)
def test_cleanup_deletes_expired_rows_and_prints_one_summary_line():
    old = define(store=True, retention=60)
    fresh = define(store=True, retention=3600)
    for n in range(3):
        workflow_engine.run(old, input={"n": n})
    workflow_engine.run(fresh, input={"n": 0})
    _expire(old)

    out, err = run_command("cleanup", "--batch-size", "2")
    assert out == "Deleted 3 expired workflow executions.\n"
    assert err == ""
    assert not WorkflowExecution.objects.filter(workflow_id=old).exists()
    assert WorkflowExecution.objects.filter(workflow_id=fresh).count() == 1

    out, _ = run_command("cleanup")
    assert out == "Deleted 0 expired workflow executions.\n"


@pytest.mark.django_db(transaction=True)
def test_cleanup_on_a_terminal_draws_a_progress_line():
    old = define(store=True, retention=60)
    for n in range(3):
        workflow_engine.run(old, input={"n": n})
    _expire(old)

    out, _ = run_command("cleanup", "--batch-size", "2", stdout=TTYStringIO())
    assert "\rDeleting expired workflow executions... 2" in out
    assert "\rDeleting expired workflow executions... 3" in out
    assert out.endswith("Deleted 3 expired workflow executions.\n")
    assert out.count("\n") == 1


@pytest.mark.django_db
def test_cleanup_rejects_a_bad_batch_size():
    with pytest.raises(CommandError, match="positive integer"):
        run_command("cleanup", "--batch-size", "none")


# recover


@pytest.mark.django_db(transaction=True)
def test_recover_prints_the_count():
    out, _ = run_command("recover")
    assert out == "Handed 0 workflow executions to the workers.\n"


def test_recover_asks_the_engine_to_hand_over(monkeypatch):
    calls = []
    monkeypatch.setattr(workflow_engine, "recover", lambda **kwargs: calls.append(kwargs) or 3)
    out, _ = run_command("recover")
    assert out == "Handed 3 workflow executions to the workers.\n"
    assert calls == [{"hand_over": True}]


# JSON output of run is parseable


def test_run_result_line_is_json():
    name = uname("jsonres")
    step = create_step(f"{name}-s", lambda v, ctx: {"echo": v, "ok": True})
    create_workflow(name, lambda input: step(input))
    out, _ = run_command("run", name, "--input", '{"a": [1, 2], "b": "é"}')
    line = next(line for line in out.splitlines() if line.startswith("Result: "))
    assert json.loads(line.removeprefix("Result: ")) == {
        "echo": {"a": [1, 2], "b": "é"},
        "ok": True,
    }
