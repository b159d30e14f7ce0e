"""Long-running workflows on the immediate backend: async and background steps,
outside responses, retry intervals, timeouts of waiting steps, cancel in flight,
nested async sub-workflows and scheduled workflows (SPEC 6, reference section 5).

Work meant for a worker runs in-process at once; delays wait on the virtual clock
that ``workflows_app.testing.advance`` moves.
"""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.orchestration import InvalidStepStateError, TransactionNotFound
from workflows_app.orchestration import clock as clock_module
from workflows_app.sdk import StepResponse, create_step, create_workflow, parallelize
from workflows_app.testing import advance, pending

pytestmark = pytest.mark.django_db

calls: list[str] = []


@pytest.fixture(autouse=True)
def _clear_calls():
    calls.clear()
    yield
    calls.clear()


def record(name):
    def handler(value, ctx):
        calls.append(name)
        return StepResponse(value, name)

    return handler


def undo(name):
    def handler(value, ctx):
        calls.append(f"undo {name}")

    return handler


def latest(workflow_id: str) -> WorkflowExecution:
    return WorkflowExecution.objects.filter(workflow_id=workflow_id).latest("created_at")


def step_rows(
    execution: WorkflowExecution, step_id: str, handler_type: str = "invoke"
) -> list[StepExecution]:
    rows = execution.step_executions.filter(step_id=step_id, handler_type=handler_type)
    return list(rows.order_by("attempt", "id"))


@pytest.fixture(params=["moving", "standing still"])
def wall_clock(request, monkeypatch):
    """With the wall clock standing still, everything happens in one millisecond, as
    it may on a fast machine: a timer fires on the very millisecond it was armed for
    (a CI run once found a timed-out step still waiting, the check on resume asked
    for a later moment) and retry_step() comes in the millisecond of the attempt it
    retries (it was taken for an attempt already made)."""
    if request.param == "standing still":
        frozen = clock_module.time.time()
        monkeypatch.setattr(clock_module, "time", SimpleNamespace(time=lambda: frozen))
    return request.param


# Workflows

prepare = create_step("lr-prepare", record("prepare"), undo("prepare"))
finish = create_step("lr-finish", record("finish"), undo("finish"))


def _auto(value, ctx):
    calls.append("auto")
    return StepResponse({"auto": value})


def _approve(value, ctx):
    calls.append("approve asked")
    return {"pending": True}


def _approve_undo(value, ctx):
    calls.append("undo approve")


auto_step = create_step("lr-auto", _auto, async_=True)
approve = create_step("lr-approve", _approve, _approve_undo, async_=True)


@create_workflow("lr-auto-flow", store=True, retention_time=3600)
def auto_flow(input):
    first = prepare(input)
    second = auto_step(first)
    return finish(second)


@create_workflow("lr-approval-flow", store=True, retention_time=3600)
def approval_flow(input):
    first = prepare(input)
    answer = approve(first)
    return finish(answer)


def test_an_async_step_that_returns_a_step_response_completes_in_the_background():
    res = workflow_engine.run("lr-auto-flow", input=1)

    # The async step's handler ran in run() and completed the step; as in Medusa the
    # rest goes to a worker, so the caller gets the run back at that point.
    assert str(res.transaction.state) == "invoking"
    assert res.result is None
    assert res.acknowledgement["has_finished"] is False
    # The immediate backend then ran the rest in this process.
    execution = latest("lr-auto-flow")
    assert execution.state == "done"
    assert execution.output_payload == {"auto": 1}
    assert calls == ["prepare", "auto", "finish"]


def test_a_waiting_step_is_completed_from_outside():
    res = workflow_engine.run("lr-approval-flow", input=5)
    tx_id = res.transaction.transaction_id
    execution = latest("lr-approval-flow")
    assert execution.state == "invoking"
    assert [row.status for row in step_rows(execution, "lr-approve")] == ["WAITING"]
    assert calls == ["prepare", "approve asked"]

    done = workflow_engine.set_step_success(
        workflow_id="lr-approval-flow",
        transaction_id=tx_id,
        step_id="lr-approve",
        response={"approved_by": "ops"},
    )

    assert str(done.transaction.state) == "done"
    assert done.result == {"approved_by": "ops"}
    execution.refresh_from_db()
    assert execution.state == "done"
    assert [row.status for row in step_rows(execution, "lr-approve")] == ["COMPLETED"]
    assert calls[-1] == "finish"


def test_an_outside_failure_reverts_the_run():
    res = workflow_engine.run("lr-approval-flow", input=5)
    failed = workflow_engine.set_step_failure(
        f"lr-approval-flow:{res.transaction.transaction_id}:lr-approve:invoke",
        error={"message": "rejected by ops"},
    )

    assert str(failed.transaction.state) == "reverted"
    assert failed.errors[0].error["message"] == "rejected by ops"
    assert calls == ["prepare", "approve asked", "undo approve", "undo prepare"]
    assert latest("lr-approval-flow").state == "reverted"


@pytest.mark.usefixtures("wall_clock")
def test_retry_step_invokes_a_waiting_step_again():
    res = workflow_engine.run("lr-approval-flow", input=5)
    tx_id = res.transaction.transaction_id

    workflow_engine.retry_step(
        workflow_id="lr-approval-flow", transaction_id=tx_id, step_id="lr-approve"
    )

    execution = latest("lr-approval-flow")
    assert [(r.attempt, r.status) for r in step_rows(execution, "lr-approve")] == [
        (1, "WAITING"),
        (2, "WAITING"),
    ]
    assert calls.count("approve asked") == 2
    workflow_engine.set_step_success(
        workflow_id="lr-approval-flow", transaction_id=tx_id, step_id="lr-approve", response=1
    )
    assert latest("lr-approval-flow").state == "done"


def test_a_retry_request_stored_before_attempt_counts_were_kept_is_still_made():
    res = workflow_engine.run("lr-approval-flow", input=5)
    tx_id = res.transaction.transaction_id
    execution = latest("lr-approval-flow")
    # As an older release stored a retry_step() that no worker had acted on yet:
    # a request time (here a second) after the last attempt, and no attempt count.
    flow = execution.execution
    step = next(v for v in flow["steps"].values() if v["id"].endswith("lr-approve"))
    step["retryRescheduledAt"] = step["lastAttempt"] + 1000
    step.pop("retryRequest", None)
    WorkflowExecution.objects.filter(pk=execution.pk).update(execution=flow)

    workflow_engine.resume("lr-approval-flow", tx_id)

    rows = step_rows(latest("lr-approval-flow"), "lr-approve")
    assert [(r.attempt, r.status) for r in rows] == [(1, "WAITING"), (2, "WAITING")]
    assert calls.count("approve asked") == 2


def test_set_step_success_on_a_step_that_is_not_waiting_is_refused_and_changes_nothing():
    res = workflow_engine.run("lr-approval-flow", input=5)
    tx_id = res.transaction.transaction_id
    execution = latest("lr-approval-flow")
    before = (execution.version, execution.state, StepExecution.objects.count())

    with pytest.raises(InvalidStepStateError, match="Cannot set step success when status is"):
        workflow_engine.set_step_success(
            workflow_id="lr-approval-flow", transaction_id=tx_id, step_id="lr-prepare"
        )
    with pytest.raises(InvalidStepStateError):
        workflow_engine.set_step_success(
            workflow_id="lr-approval-flow", transaction_id=tx_id, step_id="lr-finish"
        )

    execution.refresh_from_db()
    assert (execution.version, execution.state, StepExecution.objects.count()) == before
    assert calls == ["prepare", "approve asked"]


# Retry intervals

flaky_state = {"failures": 0}


def _flaky(value, ctx):
    calls.append(f"flaky attempt {ctx.attempt}")
    if flaky_state["failures"] > 0:
        flaky_state["failures"] -= 1
        raise RuntimeError("not yet")
    return StepResponse("ok")


flaky = create_step("lr-flaky", _flaky, max_retries=2, retry_interval=30)


@create_workflow("lr-retry-flow", store=True, retention_time=3600)
def retry_flow(input):
    return flaky(prepare(input))


def test_retry_interval_retries_after_the_clock_moves():
    flaky_state["failures"] = 2
    res = workflow_engine.run("lr-retry-flow", input=1, throw_on_error=False)

    assert str(res.transaction.state) == "invoking"
    assert [key for key, _ in pending()] == [
        f"retry:lr-retry-flow:{res.transaction.transaction_id}:lr-flaky"
    ]

    advance(29)
    assert calls == ["prepare", "flaky attempt 1"]
    advance(2)
    assert calls == ["prepare", "flaky attempt 1", "flaky attempt 2"]
    assert latest("lr-retry-flow").state == "invoking"
    advance(31)

    execution = latest("lr-retry-flow")
    assert execution.state == "done"
    assert [(r.attempt, r.status) for r in step_rows(execution, "lr-flaky")] == [
        (1, "FAILED"),
        (2, "FAILED"),
        (3, "COMPLETED"),
    ]
    assert calls.count("prepare") == 1


# Waiting steps: retry_interval_awaiting, step timeout, transaction timeout

poll = create_step(
    "lr-poll",
    lambda value, ctx: calls.append(f"poll {ctx.attempt}"),
    async_=True,
    retry_interval_awaiting=10,
    max_awaiting_retries=3,
)


@create_workflow("lr-poll-flow", store=True, retention_time=3600)
def poll_flow(input):
    return poll(input)


def test_retry_interval_awaiting_invokes_a_waiting_step_again_up_to_the_cap():
    workflow_engine.run("lr-poll-flow", input=None)
    assert calls == ["poll 1"]

    advance(10.5)
    assert calls == ["poll 1", "poll 2"]
    advance(10.5)
    assert calls == ["poll 1", "poll 2", "poll 3"]
    advance(60)
    assert calls == ["poll 1", "poll 2", "poll 3"]  # max_awaiting_retries=3 attempts
    assert latest("lr-poll-flow").state == "invoking"


slow_reply = create_step("lr-slow-reply", _approve, _approve_undo, async_=True, timeout=60)


@create_workflow("lr-step-timeout-flow", store=True, retention_time=3600)
def step_timeout_flow(input):
    return slow_reply(prepare(input))


@pytest.mark.usefixtures("wall_clock")
def test_a_waiting_step_past_its_timeout_reverts_the_run_and_refuses_a_late_answer():
    res = workflow_engine.run("lr-step-timeout-flow", input=1)
    tx_id = res.transaction.transaction_id

    advance(59)
    assert latest("lr-step-timeout-flow").state == "invoking"
    advance(2)

    execution = latest("lr-step-timeout-flow")
    assert execution.state == "reverted"
    assert execution.top_error()["name"] == "TransactionStepTimeoutError"
    assert [r.status for r in step_rows(execution, "lr-slow-reply")] == ["TIMED_OUT"]
    assert calls == ["prepare", "approve asked", "undo approve", "undo prepare"]
    # The run has ended: a late answer finds nothing waiting.
    with pytest.raises(TransactionNotFound):
        workflow_engine.set_step_success(
            workflow_id="lr-step-timeout-flow", transaction_id=tx_id, step_id="lr-slow-reply"
        )


def _busy(value, ctx):
    calls.append("busy")
    # A handler that works on past the waiting step's timeout (the virtual clock
    # stands in for the seconds it takes; no timer fires meanwhile).
    clock_module.clock.advance(90)
    return StepResponse(value, "busy")


busy = create_step("lr-busy", _busy, undo("busy"))
ask_briefly = create_step("lr-ask-briefly", _approve, _approve_undo, async_=True, timeout=60)


@create_workflow("lr-timeout-while-busy-flow", store=True, retention_time=3600)
def timeout_while_busy_flow(input):
    return parallelize(ask_briefly(input), busy(input))


@pytest.mark.usefixtures("wall_clock")
def test_a_step_timeout_that_passes_while_the_run_is_busy_reverts_the_run_at_once():
    res = workflow_engine.run("lr-timeout-while-busy-flow", input=1, throw_on_error=False)

    # No timer armed for a moment already gone (its resume would have found the run
    # still held by this call): the timeout is acted on before the call returns.
    assert str(res.transaction.state) == "reverted"
    execution = latest("lr-timeout-while-busy-flow")
    assert execution.state == "reverted"
    assert execution.top_error()["name"] == "TransactionStepTimeoutError"
    assert [r.status for r in step_rows(execution, "lr-ask-briefly")] == ["TIMED_OUT"]
    assert sorted(calls) == sorted(["approve asked", "busy", "undo approve", "undo busy"])
    assert pending() == []


@create_workflow("lr-tx-timeout-flow", store=True, retention_time=3600, timeout=120)
def tx_timeout_flow(input):
    first = prepare(input)
    return approve(first).config(name="lr-approve-in-time")


@pytest.mark.usefixtures("wall_clock")
def test_the_transaction_timeout_reverts_a_run_whose_step_still_waits():
    workflow_engine.run("lr-tx-timeout-flow", input=1)

    advance(119)
    assert latest("lr-tx-timeout-flow").state == "invoking"
    advance(2)

    execution = latest("lr-tx-timeout-flow")
    assert execution.state == "reverted"
    assert execution.status == "TIMED_OUT"
    assert execution.top_error()["name"] == "TransactionTimeoutError"
    assert calls == ["prepare", "approve asked", "undo approve", "undo prepare"]


# Cancel in flight


def test_cancel_of_a_run_in_flight_fails_the_waiting_step_and_compensates():
    res = workflow_engine.run("lr-approval-flow", input=5)

    cancelled = workflow_engine.cancel("lr-approval-flow", res.transaction.transaction_id)

    assert str(cancelled.transaction.state) == "reverted"
    execution = latest("lr-approval-flow")
    assert execution.state == "reverted"
    assert execution.status == "CANCELED"
    assert step_rows(execution, "lr-approve")[0].error["name"] == "TransactionCanceledError"
    assert calls == ["prepare", "approve asked", "undo approve", "undo prepare"]


# background_execution, compensate_async


def _plain(value, ctx):
    calls.append("plain")
    return {"plain": value}


plain_background = create_step("lr-plain-bg", _plain, async_=True, background_execution=True)


@create_workflow("lr-background-flow", store=True, retention_time=3600)
def background_flow(input):
    return plain_background(input)


def test_background_execution_completes_with_a_plain_return_value():
    workflow_engine.run("lr-background-flow", input=3)

    execution = latest("lr-background-flow")
    assert execution.state == "done"
    assert execution.output_payload == {"plain": 3}


def _boom(value, ctx):
    raise RuntimeError("boom")


def _release_later(value, ctx):
    calls.append("release asked")


hold = create_step("lr-hold", record("hold"), _release_later, compensate_async=True)
boom = create_step("lr-boom", _boom)


@create_workflow("lr-compensate-async-flow", store=True, retention_time=3600)
def compensate_async_flow(input):
    first = prepare(input)
    held = hold(first)
    return boom(held)


def test_an_async_compensation_waits_for_its_outside_answer():
    res = workflow_engine.run("lr-compensate-async-flow", input=1, throw_on_error=False)
    tx_id = res.transaction.transaction_id

    execution = latest("lr-compensate-async-flow")
    assert execution.state == "compensating"
    assert calls == ["prepare", "hold", "release asked"]

    done = workflow_engine.set_step_success(
        f"lr-compensate-async-flow:{tx_id}:lr-hold:compensate", response="released"
    )

    assert str(done.transaction.state) == "reverted"
    assert calls == ["prepare", "hold", "release asked", "undo prepare"]
    execution.refresh_from_db()
    assert execution.state == "reverted"


ask_then_hold = create_step(
    "lr-ask-then-hold", _approve, _release_later, async_=True, compensate_async=True
)


@create_workflow("lr-retried-then-compensated-flow", store=True, retention_time=3600)
def retried_then_compensated_flow(input):
    return boom(ask_then_hold(prepare(input)))


@pytest.mark.usefixtures("wall_clock")
def test_a_retry_step_of_the_invoke_is_not_taken_for_one_of_the_compensation():
    res = workflow_engine.run("lr-retried-then-compensated-flow", input=1)
    tx_id = res.transaction.transaction_id
    address = f"lr-retried-then-compensated-flow:{tx_id}:lr-ask-then-hold"
    workflow_engine.retry_step(f"{address}:invoke")
    workflow_engine.set_step_success(f"{address}:invoke", response="ok")
    assert calls == ["prepare", "approve asked", "approve asked", "release asked"]

    # Its compensation waits with as many attempts as the retried invoke had before
    # the retry: a rebuild must not read the old request as one for the compensation.
    workflow_engine.resume("lr-retried-then-compensated-flow", tx_id)

    assert calls.count("release asked") == 1
    assert latest("lr-retried-then-compensated-flow").state == "compensating"
    done = workflow_engine.set_step_success(f"{address}:compensate", response="released")
    assert str(done.transaction.state) == "reverted"
    assert calls[-1] == "undo prepare"


# Nested async sub-workflow


@create_workflow("lr-child-flow", store=True, retention_time=3600)
def child_flow(input):
    return approve(input).config(name="lr-child-approve")


@create_workflow("lr-parent-flow", store=True, retention_time=3600)
def parent_flow(input):
    first = prepare(input)
    child = child_flow.run_as_step(input=first)
    return finish(child)


def test_a_nested_async_child_completes_its_parent_step_when_it_ends():
    res = workflow_engine.run("lr-parent-flow", input=7)
    parent_tx = res.transaction.transaction_id
    child_tx = f"lr-child-flow-as-step-{parent_tx}"

    assert latest("lr-parent-flow").state == "invoking"
    assert latest("lr-child-flow").transaction_id == child_tx
    assert latest("lr-child-flow").parent_step_idempotency_key == (
        f"lr-parent-flow:{parent_tx}:lr-child-flow-as-step:invoke"
    )

    workflow_engine.set_step_success(
        workflow_id="lr-child-flow",
        transaction_id=child_tx,
        step_id="lr-child-approve",
        response={"approved": True},
    )

    assert latest("lr-child-flow").state == "done"
    parent = latest("lr-parent-flow")
    assert parent.state == "done"
    assert parent.output_payload == {"approved": True}
    assert calls == ["prepare", "approve asked", "finish"]


def test_a_nested_child_failure_reverts_the_parent():
    res = workflow_engine.run("lr-parent-flow", input=7)
    child_tx = f"lr-child-flow-as-step-{res.transaction.transaction_id}"

    workflow_engine.set_step_failure(
        workflow_id="lr-child-flow",
        transaction_id=child_tx,
        step_id="lr-child-approve",
        error={"message": "no"},
    )

    assert latest("lr-child-flow").state == "reverted"
    parent = latest("lr-parent-flow")
    assert parent.state == "reverted"
    assert parent.error == "no"
    assert calls[-1] == "undo prepare"


# Scheduled workflows


@create_workflow(
    "lr-scheduled-flow",
    store=True,
    retention_time=3600,
    schedule={"interval": 60, "number_of_executions": 3},
)
def scheduled_flow(input):
    return prepare(input)


@create_workflow("lr-cron-flow", store=True, retention_time=3600, schedule="*/5 * * * *")
def cron_flow(input):
    return finish(input)


@create_workflow(
    "lr-forbid-flow",
    store=True,
    retention_time=3600,
    schedule={"interval": 60, "concurrency": "forbid"},
)
def forbid_flow(input):
    return approve(input).config(name="lr-forbid-approve")


def test_a_schedule_fires_number_of_executions_times():
    workflow_engine.setup_schedules()

    advance(60 * 10)

    assert WorkflowExecution.objects.filter(workflow_id="lr-scheduled-flow").count() == 3
    assert set(
        WorkflowExecution.objects.filter(workflow_id="lr-scheduled-flow").values_list(
            "state", flat=True
        )
    ) == {"done"}
    assert WorkflowExecution.objects.filter(workflow_id="lr-cron-flow").count() == 2


def test_concurrency_forbid_skips_a_run_while_the_previous_one_waits():
    workflow_engine.setup_schedules()

    advance(60 * 3 + 1)

    assert WorkflowExecution.objects.filter(workflow_id="lr-forbid-flow").count() == 1
    assert calls.count("approve asked") == 1


def test_setup_reports_the_schedules_it_made():
    done = dict(workflow_engine.setup_schedules())

    assert done["workflows:schedule:lr-scheduled-flow"] == "created"
    assert done["workflows:cleanup"] == "created"
    assert done["workflows:recover"] == "created"
    again = dict(workflow_engine.setup_schedules())
    assert again["workflows:schedule:lr-scheduled-flow"] == "updated"


def _child_ends_while_the_parent_is_busy() -> tuple[str, str]:
    """The child's answer arrives while another process holds the parent; that
    holder then releases the parent without knowing. Returns both transaction ids."""
    res = workflow_engine.run("lr-parent-flow", input=7)
    parent_tx = res.transaction.transaction_id
    child_tx = f"lr-child-flow-as-step-{parent_tx}"
    busy = WorkflowExecution.objects.filter(pk=latest("lr-parent-flow").pk)
    busy.update(owner="other-host:1:busy", lease_expires_at=timezone.now() + timedelta(hours=1))

    workflow_engine.set_step_success(
        workflow_id="lr-child-flow",
        transaction_id=child_tx,
        step_id="lr-child-approve",
        response={"approved": True},
    )

    assert latest("lr-child-flow").state == "done"
    assert latest("lr-parent-flow").state == "invoking"
    busy.update(owner="", lease_expires_at=None)
    return parent_tx, child_tx


@pytest.mark.django_db(transaction=True)
def test_recovery_completes_a_parent_step_whose_child_ended_while_the_parent_was_busy():
    _child_ends_while_the_parent_is_busy()

    assert workflow_engine.recover() == 1

    parent = latest("lr-parent-flow")
    assert parent.state == "done"
    assert parent.output_payload == {"approved": True}
    assert WorkflowExecution.objects.filter(workflow_id="lr-child-flow").count() == 1
    assert calls == ["prepare", "approve asked", "finish"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("wall_clock")
def test_retry_step_takes_the_ended_child_instead_of_starting_a_second():
    parent_tx, _child_tx = _child_ends_while_the_parent_is_busy()

    workflow_engine.retry_step(
        workflow_id="lr-parent-flow", transaction_id=parent_tx, step_id="lr-child-flow-as-step"
    )

    parent = latest("lr-parent-flow")
    assert parent.state == "done"
    assert parent.output_payload == {"approved": True}
    assert WorkflowExecution.objects.filter(workflow_id="lr-child-flow").count() == 1
    assert calls == ["prepare", "approve asked", "finish"]
