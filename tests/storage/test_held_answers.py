"""An answer that arrives while another process holds the run is never dropped
(issue 16 item 2): it is recorded on the waiting attempt's row and applied when the
holder releases the run, by the answering process if the run was freed meanwhile, or
by recovery; the first answer wins."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.orchestration import InvalidStepStateError, orchestrator, runtime
from workflows_app.sdk import StepResponse, create_step, create_workflow, get_workflow, parallelize
from workflows_app.step_address import TransactionFinishedError
from workflows_app.storage import answers

from .helpers import Calls, uname

pytestmark = pytest.mark.django_db(transaction=True)
WAIT_SECONDS = 30


def _approval(calls: Calls, retries: int = 0) -> str:
    """``ask`` waits for an answer; ``after`` gets what it was answered."""
    name = uname("held")

    def after(value, ctx):
        calls.hit("invoke", "after")
        return StepResponse({"after": value})

    ask = create_step(f"{name}-ask", lambda value, ctx: None, async_=True, max_retries=retries)
    then = create_step(f"{name}-after", after)
    create_workflow(name, lambda n: then(ask(n)), store=True, retention_time=600)
    workflow_engine.run(name, input=0, transaction_id="held")
    return name


def _hold(name: str):
    """Take the run as a second executor does: a claimed handle of its own."""
    return runtime.storage.load(get_workflow(name).definition, "held")


def _answer(name: str, response) -> dict:
    result = workflow_engine.set_step_success(
        workflow_id=name, transaction_id="held", step_id=f"{name}-ask", response=response
    )
    return result.acknowledgement


def _waiting_row(name: str) -> StepExecution:
    return StepExecution.objects.get(execution__workflow_id=name, step_id=f"{name}-ask")


def test_an_answer_to_a_held_run_is_recorded_and_applied_when_the_holder_releases_it():
    calls = Calls()
    name = _approval(calls)
    holder = _hold(name)

    ack = _answer(name, {"ok": 1})

    assert ack["answer_recorded"] is True
    assert (ack["state"], ack["has_finished"]) == ("invoking", False)
    row = _waiting_row(name)
    assert (row.status, row.answer_kind) == ("WAITING", "success")
    assert row.answer == {"response": {"ok": 1}}
    assert row.answered_at is not None
    assert calls.invoked("after") == 0

    orchestrator.execute(holder)  # the holder goes on and releases the run

    execution = WorkflowExecution.objects.get(workflow_id=name)
    assert (execution.state, execution.output_payload) == ("done", {"after": {"ok": 1}})
    assert calls.invoked("after") == 1
    row = _waiting_row(name)
    assert (row.status, row.output, row.answer, row.answer_kind) == (
        "COMPLETED",
        {"ok": 1},
        None,
        "success",
    )


def test_the_first_answer_wins_and_a_second_is_refused_as_today():
    calls = Calls()
    name = _approval(calls)
    holder = _hold(name)
    assert _answer(name, "first")["answer_recorded"] is True

    with pytest.raises(InvalidStepStateError, match="already answered"):
        _answer(name, "second")
    orchestrator.execute(holder)
    with pytest.raises(TransactionFinishedError):
        _answer(name, "third")

    assert WorkflowExecution.objects.get(workflow_id=name).output_payload == {"after": "first"}
    assert calls.invoked("after") == 1


def test_a_failure_answer_is_recorded_with_its_retries_and_force():
    calls = Calls()
    name = _approval(calls, retries=3)
    holder = _hold(name)

    result = workflow_engine.set_step_failure(
        workflow_id=name,
        transaction_id="held",
        step_id=f"{name}-ask",
        error=ValueError("no"),
        force_permanent_failure=True,
    )

    assert result.acknowledgement["answer_recorded"] is True
    answer = _waiting_row(name).answer
    assert answer["force_permanent_failure"] is True
    assert (answer["error"]["name"], answer["error"]["message"]) == ("ValueError", "no")
    orchestrator.execute(holder)
    execution = WorkflowExecution.objects.get(workflow_id=name)
    # Forced: no retry of the waiting step, the run fails (nothing to compensate).
    assert execution.state == "reverted"
    assert StepExecution.objects.filter(execution=execution, step_id=f"{name}-ask").count() == 1
    assert calls.invoked("after") == 0


def test_an_answer_on_a_run_whose_holder_died_is_applied_by_recovery():
    calls = Calls()
    name = _approval(calls)
    holder = _hold(name)
    assert _answer(name, {"ok": 2})["answer_recorded"] is True
    # The holder's process dies: nothing releases the run; the answer is on the row.
    runtime.storage.abandon(holder)
    del holder

    assert workflow_engine.recover(now=timezone.now() + timedelta(seconds=1)) == 1

    execution = WorkflowExecution.objects.get(workflow_id=name)
    assert (execution.state, execution.output_payload) == ("done", {"after": {"ok": 2}})
    assert calls.invoked("after") == 1


def test_a_released_run_that_still_has_an_answer_is_found_by_recovery():
    calls = Calls()
    name = _approval(calls)
    # Recorded while held; the holder released the run and stopped before applying it.
    answer = answers.Answer(f"{name}-ask", "invoke", answers.SUCCESS, {"ok": 3})
    assert answers.record(name, "held", answer)
    pending = WorkflowExecution.objects.answer_pending()
    assert list(pending.values_list("workflow_id", flat=True)) == [name]

    assert workflow_engine.recover() == 1

    execution = WorkflowExecution.objects.get(workflow_id=name)
    assert (execution.state, execution.output_payload) == ("done", {"after": {"ok": 3}})
    assert not WorkflowExecution.objects.answer_pending().exists()


def test_an_answer_recorded_earlier_goes_before_a_command_on_a_free_run():
    calls = Calls()
    name = _approval(calls)
    assert answers.record(
        name, "held", answers.Answer(f"{name}-ask", "invoke", answers.SUCCESS, "recorded")
    )

    # The recorded answer is applied first; the run then finishes.
    with pytest.raises(TransactionFinishedError):
        _answer(name, "later")
    with pytest.raises(TransactionFinishedError):
        workflow_engine.retry_step(workflow_id=name, transaction_id="held", step_id=f"{name}-ask")

    assert WorkflowExecution.objects.get(workflow_id=name).output_payload == {"after": "recorded"}
    assert calls.invoked("after") == 1


def test_a_refused_value_is_not_recorded():
    name = _approval(Calls())
    holder = _hold(name)

    with pytest.raises(Exception, match="cannot be stored"):
        _answer(name, {"bad": float("nan")})

    assert _waiting_row(name).answered_at is None
    orchestrator.execute(holder)


def test_an_answer_while_a_thread_runs_another_branch_is_applied_when_it_finishes():
    """A real second thread holds the run, busy in another branch; the answer given
    meanwhile is applied by that thread when it releases the run."""
    calls = Calls()
    name = uname("branch")
    busy, go = threading.Event(), threading.Event()

    def slow(value, ctx):
        calls.hit("invoke", "slow")
        if ctx.attempt == 1:
            # Fails at once, so that the retry runs after "ask" has started waiting.
            raise RuntimeError("again")
        busy.set()
        assert go.wait(WAIT_SECONDS)
        return StepResponse("slow")

    def join(value, ctx):
        calls.hit("invoke", "join")
        return StepResponse(value)

    ask = create_step(f"{name}-ask", lambda value, ctx: None, async_=True)
    step = create_step(f"{name}-slow", slow, max_retries=1)
    joined = create_step(f"{name}-join", join)

    def compose(n):
        answered, done = parallelize(ask(n), step(n))
        return joined({"answer": answered, "slow": done})

    create_workflow(name, compose, store=True, retention_time=600)

    def run() -> None:
        try:
            workflow_engine.run(name, input=0, transaction_id="held", throw_on_error=False)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert busy.wait(WAIT_SECONDS)
        ack = _answer(name, {"ok": 4})
        assert ack["answer_recorded"] is True
    finally:
        go.set()
        thread.join(WAIT_SECONDS)
    assert not thread.is_alive()

    execution = WorkflowExecution.objects.get(workflow_id=name)
    assert execution.state == "done"
    assert execution.output_payload == {"answer": {"ok": 4}, "slow": "slow"}
    assert [calls.invoked("slow"), calls.invoked("join")] == [2, 1]
