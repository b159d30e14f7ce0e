"""Step definition: create_step forms, options, handlers, StepResponse and the step context."""

import asyncio
import datetime

import pytest

from workflows_app.sdk import (
    CompositionError,
    StepContext,
    StepResponse,
    WorkflowError,
    create_step,
    create_workflow,
)

from .helpers import Recorder, flow_steps, invoke_state, uname

pytestmark = pytest.mark.django_db


def test_plain_function_step_output_becomes_result():
    double = create_step("double", lambda inp, ctx: inp["n"] * 2)

    def composer(input):
        return double(input)

    wf = create_workflow(uname(), composer)
    assert wf.run(input={"n": 21}).result == 42


def test_decorator_form_with_compensate_decorator():
    calls = []

    @create_step("charge", max_retries=2)
    def charge(inp, ctx):
        calls.append(("charge", ctx.attempt))
        return StepResponse({"paid": inp}, {"refund": inp})

    @charge.compensate
    def refund(cinput, ctx):
        calls.append(("refund", cinput))

    boom = create_step("boom", lambda inp, ctx: 1 / 0)

    def composer(input):
        charge(input)
        boom()

    wf = create_workflow(uname(), composer)
    res = wf.run(input=7, throw_on_error=False)
    assert res.transaction.get_state() == "reverted"
    assert calls == [("charge", 1), ("refund", {"refund": 7})]


def test_dict_config_form_applies_options():
    attempts = []

    def flaky(inp, ctx):
        attempts.append(ctx.attempt)
        if ctx.attempt < 2:
            raise RuntimeError("not yet")
        return "ok"

    step = create_step({"name": "flaky", "max_retries": 1}, flaky)

    def composer(input):
        return step()

    res = create_workflow(uname(), composer).run()
    assert res.result == "ok"
    assert attempts == [1, 2]


def test_unknown_option_raises_type_error():
    with pytest.raises(TypeError):
        create_step("bad", lambda inp, ctx: None, max_retry=3)


def test_unknown_option_in_dict_config_raises_type_error():
    with pytest.raises(TypeError):
        create_step({"name": "bad", "bogus": True}, lambda inp, ctx: None)


def test_unknown_option_in_decorator_form_raises_type_error():
    with pytest.raises(TypeError):

        @create_step("bad", retries=1)
        def bad(inp, ctx):
            return None


def test_step_called_outside_composer_raises():
    step = create_step("outside", lambda inp, ctx: None)
    with pytest.raises(CompositionError):
        step({"a": 1})


def test_async_def_invoke_and_compensate():
    log = []

    async def invoke(inp, ctx):
        await asyncio.sleep(0.01)
        log.append("invoke")
        return StepResponse(inp + 1, "undo-me")

    async def compensate(cinput, ctx):
        await asyncio.sleep(0.01)
        log.append(("compensate", cinput))

    def explode(inp, ctx):
        raise ValueError("x")

    a = create_step("async-a", invoke, compensate)
    fail = create_step("fail", explode)

    def composer(input):
        a(input)
        fail()

    wf_ok_name = uname()

    def ok_composer(input):
        return a(input)

    assert create_workflow(wf_ok_name, ok_composer).run(input=1).result == 2
    log.clear()
    res = create_workflow(uname(), composer).run(input=1, throw_on_error=False)
    assert log == ["invoke", ("compensate", "undo-me")]
    assert res.transaction.get_state() == "reverted"


def test_invoke_context_fields():
    seen = {}

    def invoke(inp, ctx):
        seen["ctx"] = ctx
        seen.update(
            workflow_id=ctx.workflow_id,
            step_name=ctx.step_name,
            action=ctx.action,
            key=ctx.idempotency_key,
            attempt=ctx.attempt,
            transaction_id=ctx.transaction_id,
            run_id=ctx.run_id,
            metadata=ctx.metadata,
            context=ctx.context,
        )

    step = create_step("inspect", invoke)
    name = uname()

    def composer(input):
        step()

    res = create_workflow(name, composer).run(transaction_id="tx-ctx-1")
    assert isinstance(seen["ctx"], StepContext)
    assert seen["workflow_id"] == name
    assert seen["step_name"] == "inspect"
    assert seen["action"] == "invoke"
    assert seen["attempt"] == 1
    assert seen["transaction_id"] == "tx-ctx-1"
    assert seen["key"] == f"{name}:tx-ctx-1:inspect:invoke"
    assert seen["run_id"] == res.transaction.run_id
    assert isinstance(seen["metadata"], dict)
    assert isinstance(seen["context"], dict)


def test_compensate_context_fields():
    seen = {}

    def undo(cinput, ctx):
        seen.update(action=ctx.action, key=ctx.idempotency_key, step=ctx.step_name)

    a = create_step("undoable", lambda inp, ctx: 1, undo)
    b = create_step("breaks", lambda inp, ctx: 1 / 0)
    name = uname()

    def composer(input):
        a()
        b()

    create_workflow(name, composer).run(transaction_id="tx-comp", throw_on_error=False)
    assert seen == {
        "action": "compensate",
        "key": f"{name}:tx-comp:undoable:compensate",
        "step": "undoable",
    }


def test_get_step_result_reads_earlier_output():
    seen = []
    a = create_step("produce", lambda inp, ctx: StepResponse({"v": 5}, "ignored"))

    def read(inp, ctx):
        seen.append(ctx.get_step_result("produce"))
        return None

    b = create_step("consume", read)

    def composer(input):
        a()
        b()

    create_workflow(uname(), composer).run()
    assert seen == [{"v": 5}]


def test_step_response_output_and_compensate_input_are_separate():
    log = Recorder()

    def invoke_a(inp, ctx):
        return StepResponse({"public": 1}, {"secret": 2})

    def comp_a(cinput, ctx):
        log.add("compensate", "a", cinput)

    def invoke_b(inp, ctx):
        log.add("invoke", "b", inp)
        raise ValueError("b broke")

    a = create_step("a", invoke_a, comp_a)
    b = create_step("b", invoke_b)

    def composer(input):
        out = a()
        b(out)

    create_workflow(uname(), composer).run(throw_on_error=False)
    assert log.payloads("invoke") == {"b": {"public": 1}}
    assert log.payloads("compensate") == {"a": {"secret": 2}}


def test_step_response_compensate_input_defaults_to_output():
    got = []
    a = create_step("a", lambda inp, ctx: StepResponse([1, 2]), lambda ci, ctx: got.append(ci))
    b = create_step("b", lambda inp, ctx: 1 / 0)

    def composer(input):
        a()
        b()

    create_workflow(uname(), composer).run(throw_on_error=False)
    assert got == [[1, 2]]


def test_skip_response_marks_step_skipped_and_flow_continues():
    ran = []
    a = create_step("maybe", lambda inp, ctx: StepResponse.skip())
    b = create_step("after", lambda inp, ctx: ran.append(inp) or "after-out")

    def composer(input):
        out = a()
        return b(out)

    res = create_workflow(uname(), composer).run()
    tx = res.transaction
    assert tx.get_state() == "done"
    assert invoke_state(tx, "maybe") == ("skipped", "ok")
    assert invoke_state(tx, "after") == ("done", "ok")
    assert tx.get_flow()["hasSkippedSteps"] is True
    assert ran == [None]
    assert res.result == "after-out"


def test_inputs_are_json_round_tripped():
    seen = []
    step = create_step("look", lambda inp, ctx: seen.append(inp))

    def composer(input):
        step(input)

    payload = {"pair": (1, 2), "day": datetime.date(2024, 5, 17)}
    create_workflow(uname(), composer).run(input=payload)
    assert seen == [{"pair": [1, 2], "day": "2024-05-17"}]


def test_step_receives_a_copy_of_its_input():
    seen = []
    source = create_step("source", lambda inp, ctx: {"items": [1]})

    def mutate(inp, ctx):
        inp["items"].append(99)
        return None

    mutator = create_step("mutator", mutate)
    reader = create_step("reader", lambda inp, ctx: seen.append(inp))

    def composer(input):
        out = source()
        mutator(out)
        reader(out)

    create_workflow(uname(), composer).run()
    assert seen == [{"items": [1]}]


def test_step_without_input_receives_an_empty_dict():
    # Medusa gives a step called without input ``{}``.
    seen = []
    step = create_step("no-input", lambda inp, ctx: seen.append(inp))

    def composer(input):
        step()

    create_workflow(uname(), composer).run(input={"ignored": True})
    assert seen == [{}]


def test_duplicate_step_use_without_rename_raises():
    step = create_step("twice", lambda inp, ctx: None)

    def composer(input):
        step()
        step()

    with pytest.raises(CompositionError):
        create_workflow(uname(), composer)


def test_config_renames_one_use():
    calls = []
    step = create_step("reused", lambda inp, ctx: calls.append(ctx.step_name) or inp)

    def composer(input):
        first = step(1)
        second = step(2).config(name="reused-again")
        return {"first": first, "second": second}

    res = create_workflow(uname(), composer).run()
    assert res.result == {"first": 1, "second": 2}
    assert calls == ["reused", "reused-again"]
    assert set(flow_steps(res.transaction)) == {"reused", "reused-again"}


def test_config_reconfigures_one_use_only():
    attempts = {"plain": 0, "retrying": 0}

    def always_fail(inp, ctx):
        attempts[ctx.step_name] += 1
        raise RuntimeError("nope")

    step = create_step("plain", always_fail)

    def composer(input):
        step().config(name="retrying", max_retries=2)

    create_workflow(uname(), composer).run(throw_on_error=False)
    assert attempts == {"plain": 0, "retrying": 3}


def test_permanent_failure_skips_retries_and_passes_compensate_input():
    attempts = []
    got = []

    def invoke(inp, ctx):
        attempts.append(ctx.attempt)
        StepResponse.permanent_failure("gave up", compensate_input=[2, 4, 6])

    step = create_step("perm", invoke, lambda ci, ctx: got.append(ci), max_retries=3)

    def composer(input):
        step()

    with pytest.raises(WorkflowError) as exc:
        create_workflow(uname(), composer).run()
    assert attempts == [1]
    assert got == [[2, 4, 6]]
    assert str(exc.value) == "gave up"


def test_permanent_failure_default_message():
    step = create_step("perm-default", lambda inp, ctx: StepResponse.permanent_failure())

    def composer(input):
        step()

    res = create_workflow(uname(), composer).run(throw_on_error=False)
    assert [e.error["message"] for e in res.errors] == ["Permanent failure"]


def test_all_documented_options_are_accepted():
    options = {
        "max_retries": 1,
        "auto_retry": True,
        "retry_interval": 1,
        "retry_interval_awaiting": 1,
        "max_awaiting_retries": 2,
        "timeout": 0.5,
        "async_": True,
        "background_execution": True,
        "compensate_async": False,
        "no_compensation": True,
        "continue_on_permanent_failure": True,
        "skip_on_permanent_failure": "other",
        "no_wait": True,
        "save_response": False,
        "sensitive": ["card.number"],
    }
    for key, value in options.items():
        create_step(f"opt-{key}", lambda inp, ctx: None, **{key: value})
    create_step({"name": "all-opts", **options}, lambda inp, ctx: None)


def test_event_group_id_is_shared_by_steps_of_a_run():
    groups = []
    a = create_step("a", lambda inp, ctx: groups.append(ctx.event_group_id))
    b = create_step("b", lambda inp, ctx: groups.append(ctx.event_group_id))

    def composer(input):
        a()
        b()

    wf = create_workflow(uname(), composer)
    wf.run()
    wf.run()
    assert all(groups)
    assert groups[0] == groups[1]
    assert groups[2] == groups[3]
    assert groups[0] != groups[2]


def test_metadata_carries_idempotency_key_and_attempt():
    seen = []

    def invoke(inp, ctx):
        seen.append((ctx.idempotency_key, dict(ctx.metadata)))

    step = create_step("meta", invoke)

    def composer(input):
        step()

    create_workflow(uname(), composer).run()
    key, metadata = seen[0]
    assert metadata.get("idempotency_key") == key
    assert metadata.get("attempt") == 1
    assert metadata.get("step_id") == "meta"
    assert metadata.get("action_type") == "invoke"


def test_run_context_is_visible_to_steps():
    seen = []
    step = create_step("ctx-peek", lambda inp, ctx: seen.append(dict(ctx.context)))

    def composer(input):
        step()

    create_workflow(uname(), composer).run(context={"tenant": "acme"})
    assert seen[0].get("tenant") == "acme"
