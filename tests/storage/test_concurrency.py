"""Two workers racing one manual transaction id (SPEC 5.4; PostgreSQL only)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.sdk import StepResponse, TransactionAlreadyStarted, create_step, create_workflow

from .helpers import Calls, counted_step, rows, uname

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TIMEOUT = 20


def _blocking_workflow(calls: Calls, entered: threading.Event, release: threading.Event):
    """A stored workflow whose first step blocks until ``release`` is set."""
    name = uname("race")
    second = counted_step(f"{name}-b", calls)

    def block(value, ctx):
        calls.hit("invoke", f"{name}-a")
        entered.set()
        release.wait(TIMEOUT)
        return StepResponse("step1")

    first = create_step(f"{name}-a", block)
    create_workflow(name, lambda inp: second(first(inp)), store=True, retention_time=3600)
    return name


def _runner(name: str, outcomes: list, start: threading.Barrier | None):
    def run() -> None:
        try:
            if start is not None:
                start.wait(TIMEOUT)
            res = workflow_engine.run(name, input=1, transaction_id="same-manual-id")
            outcomes.append(("ok", res.result))
        except TransactionAlreadyStarted as exc:
            outcomes.append(("already", str(exc)))
        except BaseException as exc:
            outcomes.append(("error", repr(exc)))
        finally:
            connection.close()

    return run


def _release_when_settled(calls, name, outcomes, entered, release, threads) -> None:
    """Let the blocked step go once the other start has given up (or also entered)."""
    assert entered.wait(TIMEOUT), "no thread reached the first step"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not outcomes and calls.invoked(f"{name}-a") < 2:
        time.sleep(0.02)
    release.set()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def _assert_one_execution(name: str, calls: Calls, outcomes: list) -> None:
    kinds = sorted(kind for kind, _ in outcomes)
    assert kinds == ["already", "ok"], (outcomes, dict(calls.counter))
    assert ("ok", 1) in outcomes
    message = next(text for kind, text in outcomes if kind == "already")
    assert message == "Transaction already started for transaction_id: same-manual-id"
    assert calls.invoked(f"{name}-a") == 1
    assert calls.invoked(f"{name}-b") == 1
    [row] = rows(name)
    assert row.transaction_id == "same-manual-id"
    assert row.state == "done"
    assert WorkflowExecution.objects.filter(transaction_id="same-manual-id").count() == 1


def test_two_simultaneous_starts_of_one_manual_id_yield_one_execution():
    calls = Calls()
    entered, release = threading.Event(), threading.Event()
    name = _blocking_workflow(calls, entered, release)
    outcomes: list = []
    start = threading.Barrier(2)
    threads = [threading.Thread(target=_runner(name, outcomes, start)) for _ in range(2)]
    for thread in threads:
        thread.start()

    _release_when_settled(calls, name, outcomes, entered, release, threads)

    _assert_one_execution(name, calls, outcomes)


def test_a_start_while_another_worker_is_inside_a_step_is_refused():
    calls = Calls()
    entered, release = threading.Event(), threading.Event()
    name = _blocking_workflow(calls, entered, release)
    outcomes: list = []
    first = threading.Thread(target=_runner(name, outcomes, None))
    first.start()
    assert entered.wait(TIMEOUT)
    second = threading.Thread(target=_runner(name, outcomes, None))
    second.start()

    _release_when_settled(calls, name, outcomes, entered, release, [first, second])

    _assert_one_execution(name, calls, outcomes)
