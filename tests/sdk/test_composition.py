"""Composition: definition-time graph building, references and their traps, return values."""

import pytest

from workflows_app.orchestration import TransactionState
from workflows_app.sdk import (
    CompositionError,
    WorkflowResponse,
    create_step,
    create_workflow,
    transform,
)

from .helpers import Recorder, flow_steps, recording_step, uname

pytestmark = pytest.mark.django_db


def test_composer_runs_once_at_definition():
    calls = []
    step = create_step("s", lambda inp, ctx: inp)

    def composer(input):
        calls.append("composed")
        return step(input)

    wf = create_workflow(uname(), composer)
    assert calls == ["composed"]
    wf.run(input=1)
    wf.run(input=2)
    assert calls == ["composed"]


def test_steps_run_in_call_order():
    log = Recorder()
    a = recording_step("a", log)
    b = recording_step("b", log)
    c = recording_step("c", log)

    def composer(input):
        out_a = a()
        c_ref = c()
        b(out_a)
        return c_ref

    create_workflow(uname(), composer).run()
    assert log.names("invoke") == ["a", "c", "b"]


def test_sequential_steps_nest_in_flow_ids():
    a = create_step("step-a", lambda inp, ctx: 1)
    b = create_step("step-b", lambda inp, ctx: 2)

    def composer(input):
        a()
        b()

    tx = create_workflow(uname(), composer).run().transaction
    steps = tx.get_flow()["steps"]
    assert "_root.step-a" in steps
    assert "_root.step-a.step-b" in steps
    assert steps["_root.step-a"]["id"] == "_root.step-a"
    assert steps["_root.step-a"]["depth"] == 1
    assert steps["_root.step-a.step-b"]["depth"] == 2


def test_attribute_access_on_reference():
    produce = create_step("produce", lambda inp, ctx: {"a": {"b": "deep"}})
    echo = create_step("echo", lambda inp, ctx: inp)

    def composer(input):
        out = produce()
        return echo(out.a.b)

    assert create_workflow(uname(), composer).run().result == "deep"


def test_item_access_on_reference():
    produce = create_step("produce", lambda inp, ctx: {"a": [{"x": 10}, {"x": 20}]})
    echo = create_step("echo", lambda inp, ctx: inp)

    def composer(input):
        out = produce()
        return echo({"first": out["a"][0]["x"], "second": out.a[1].x})

    assert create_workflow(uname(), composer).run().result == {"first": 10, "second": 20}


def test_missing_key_on_reference_resolves_to_none():
    produce = create_step("produce", lambda inp, ctx: {"a": 1})
    seen = []
    look = create_step("look", lambda inp, ctx: seen.append(inp))

    def composer(input):
        out = produce()
        look({"missing": out.nope, "deep": out["nope"]["deeper"]})

    create_workflow(uname(), composer).run()
    assert len(seen) == 1
    assert seen[0].get("missing") is None
    assert seen[0].get("deep") is None


def test_input_reference_access():
    echo = create_step("echo", lambda inp, ctx: inp)

    def composer(input):
        return echo({"id": input.cart_id, "first": input["items"][0]})

    res = create_workflow(uname(), composer).run(input={"cart_id": "c1", "items": ["x", "y"]})
    assert res.result == {"id": "c1", "first": "x"}


TRAPS = {
    "bool": lambda r: bool(r),
    "if": lambda r: 1 if r else 0,
    "not": lambda r: not r,
    "and": lambda r: r and 1,
    "iter": lambda r: iter(r),
    "for": lambda r: [x for x in r],
    "eq": lambda r: r == 1,
    "lt": lambda r: r < 1,
}


@pytest.mark.parametrize("trap", sorted(TRAPS))
def test_reference_misuse_raises_composition_error(trap):
    produce = create_step("produce", lambda inp, ctx: 1)

    def composer(input):
        out = produce()
        TRAPS[trap](out)

    with pytest.raises(CompositionError) as exc:
        create_workflow(uname(), composer)
    assert "when()" in str(exc.value)
    assert "transform()" in str(exc.value)


def test_input_reference_bool_raises():
    def composer(input):
        if input:
            pass

    with pytest.raises(CompositionError):
        create_workflow(uname(), composer)


def test_workflow_response_result():
    a = create_step("a", lambda inp, ctx: {"v": inp})

    def composer(input):
        return WorkflowResponse(a(input))

    assert create_workflow(uname(), composer).run(input=3).result == {"v": 3}


def test_returning_dict_mixing_refs_and_literals():
    a = create_step("a", lambda inp, ctx: "A")
    b = create_step("b", lambda inp, ctx: ["B"])

    def composer(input):
        return {"a": a(), "b": b(), "literal": 5, "nested": {"inp": input}}

    res = create_workflow(uname(), composer).run(input={"k": 1})
    assert res.result == {"a": "A", "b": ["B"], "literal": 5, "nested": {"inp": {"k": 1}}}


def test_returning_nothing_gives_none():
    a = create_step("a", lambda inp, ctx: "A")

    def composer(input):
        a()

    assert create_workflow(uname(), composer).run().result is None


def test_save_response_false_resolves_to_none():
    a = create_step("a", lambda inp, ctx: {"v": 1}, save_response=False)
    seen = []
    b = create_step("b", lambda inp, ctx: seen.append(inp))

    def composer(input):
        out = a()
        b({"from_a": out})

    res = create_workflow(uname(), composer).run()
    assert res.transaction.get_state() == "done"
    assert len(seen) == 1
    assert seen[0].get("from_a") is None


def test_output_of_skipped_step_resolves_to_none():
    from workflows_app.sdk import StepResponse

    a = create_step("a", lambda inp, ctx: StepResponse.skip())

    def composer(input):
        return {"a": a()}

    res = create_workflow(uname(), composer).run()
    assert (res.result or {}).get("a") is None
    assert flow_steps(res.transaction)["a"]["invoke"]["state"] == "skipped"


def test_decimal_and_uuid_inputs_are_json_encoded():
    import decimal
    import uuid

    seen = []
    look = create_step("look", lambda inp, ctx: seen.append(inp))

    def composer(input):
        look(input)

    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    create_workflow(uname(), composer).run(input={"price": decimal.Decimal("1.50"), "id": ident})
    assert seen == [{"price": "1.50", "id": "12345678-1234-5678-1234-567812345678"}]


def test_datetime_output_reaches_next_step_as_iso_string():
    import datetime

    moment = datetime.datetime(2024, 1, 2, 3, 4, 5)
    produce = create_step("produce", lambda inp, ctx: {"at": moment})
    seen = []
    look = create_step("look", lambda inp, ctx: seen.append(inp))

    def composer(input):
        look(produce())

    create_workflow(uname(), composer).run()
    assert seen == [{"at": "2024-01-02T03:04:05"}]


def test_attribute_access_on_transform_result():
    a = create_step("a", lambda inp, ctx: {"x": 2})
    echo = create_step("echo", lambda inp, ctx: inp)

    def composer(input):
        t = transform(a(), lambda v: {"doubled": {"value": v["x"] * 2}})
        return echo(t.doubled.value)

    assert create_workflow(uname(), composer).run().result == 4


def test_flow_reports_reverted_steps():
    log = Recorder()
    a = recording_step("a", log)
    b = recording_step("b", log, fail=True)

    def composer(input):
        a()
        b()

    tx = create_workflow(uname(), composer).run(throw_on_error=False).transaction
    flow = tx.get_flow()
    assert flow["hasRevertedSteps"] is True
    assert flow["hasWaitingSteps"] is False
    assert isinstance(tx.get_state(), TransactionState)
