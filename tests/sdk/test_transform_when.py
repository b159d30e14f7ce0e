"""transform() laziness and pipelines; when().then() conditional blocks."""

import pytest

from workflows_app.sdk import create_step, create_workflow, parallelize, transform, when

from .helpers import Recorder, flow_steps, invoke_state, recording_step, uname

pytestmark = pytest.mark.django_db


def test_transform_pipeline_applies_functions_in_order():
    a = create_step("a", lambda inp, ctx: {"n": 3})
    echo = create_step("echo", lambda inp, ctx: inp)

    def composer(input):
        out = a()
        t = transform(
            {"out": out, "inp": input}, lambda v: v["out"]["n"] + v["inp"], lambda x: x * 10
        )
        return echo(t)

    assert create_workflow(uname(), composer).run(input=4).result == 70


def test_transform_as_workflow_result():
    a = create_step("a", lambda inp, ctx: [1, 2, 3])

    def composer(input):
        return transform({"items": a()}, lambda v: sum(v["items"]))

    assert create_workflow(uname(), composer).run().result == 6


def test_transform_is_not_evaluated_at_definition():
    calls = []

    def composer(input):
        return transform(input, lambda v: calls.append(v) or v)

    wf = create_workflow(uname(), composer)
    assert calls == []
    assert wf.run(input=5).result == 5
    assert calls == [5]


def test_unused_transform_never_runs():
    calls = []
    a = create_step("a", lambda inp, ctx: "A")

    def composer(input):
        transform(input, lambda v: calls.append(v))
        return a()

    res = create_workflow(uname(), composer).run(input=1)
    assert res.result == "A"
    assert calls == []


def test_transform_evaluated_once_per_run_when_consumed_twice():
    calls = []
    seen = Recorder()
    b = create_step("b", lambda inp, ctx: seen.add("invoke", "b", inp))
    c = create_step("c", lambda inp, ctx: seen.add("invoke", "c", inp))

    def composer(input):
        t = transform(input, lambda v: calls.append(v) or {"twice": v * 2})
        b(t)
        c(t)
        return t

    wf = create_workflow(uname(), composer)
    res = wf.run(input=2)
    assert calls == [2]
    assert res.result == {"twice": 4}
    assert seen.payloads("invoke") == {"b": {"twice": 4}, "c": {"twice": 4}}
    wf.run(input=3)
    assert calls == [2, 3]


def test_transform_receives_resolved_values():
    seen = []
    a = create_step("a", lambda inp, ctx: {"x": 1})

    def composer(input):
        return transform({"a": a(), "lit": "L"}, lambda v: seen.append(v) or "ok")

    create_workflow(uname(), composer).run()
    assert seen == [{"a": {"x": 1}, "lit": "L"}]


def test_when_true_runs_steps():
    log = Recorder()
    a = recording_step("notify", log)
    z = recording_step("z", log)

    def composer(input):
        when(input, lambda i: i["notify"]).then(lambda: a())
        z()

    tx = create_workflow(uname(), composer).run(input={"notify": True}).transaction
    assert log.names("invoke") == ["notify", "z"]
    assert invoke_state(tx, "notify") == ("done", "ok")


def test_when_false_skips_steps_but_later_steps_run():
    log = Recorder()
    a = recording_step("notify", log)
    b = recording_step("notify-2", log)
    z = recording_step("z", log)

    def composer(input):
        def block():
            a()
            b()

        when(input, lambda i: i["notify"]).then(block)
        return z()

    res = create_workflow(uname(), composer).run(input={"notify": False})
    tx = res.transaction
    assert log.names("invoke") == ["z"]
    assert invoke_state(tx, "notify")[0] == "skipped"
    assert invoke_state(tx, "notify-2")[0] == "skipped"
    assert invoke_state(tx, "z") == ("done", "ok")
    assert tx.get_state() == "done"
    assert res.result == "z"


def test_when_condition_receives_resolved_values():
    seen = []
    a = create_step("a", lambda inp, ctx: {"total": 10})
    b = create_step("b", lambda inp, ctx: "b-ran")

    def cond(values):
        seen.append(values)
        return values["a"]["total"] > 5

    def composer(input):
        out = a()
        return when({"a": out, "flag": input}, cond).then(lambda: b())

    res = create_workflow(uname(), composer).run(input="F")
    assert seen and seen[0] == {"a": {"total": 10}, "flag": "F"}
    assert res.result == "b-ran"


def test_when_value_is_none_when_false():
    b = create_step("b", lambda inp, ctx: "b-ran")

    def composer(input):
        return {"w": when(input, lambda i: i > 0).then(lambda: b())}

    wf = create_workflow(uname(), composer)
    assert wf.run(input=1).result == {"w": "b-ran"}
    assert (wf.run(input=-1).result or {}).get("w") is None


def test_when_then_returning_dict_value():
    a = create_step("a", lambda inp, ctx: "A")

    def composer(input):
        return when("pick-value", input, lambda i: i == "yes").then(lambda: {"a": a(), "const": 1})

    wf = create_workflow(uname(), composer)
    assert wf.run(input="yes").result == {"a": "A", "const": 1}
    assert wf.run(input="no").result is None


def test_named_when_runs_block():
    log = Recorder()
    a = recording_step("a", log)

    def composer(input):
        when("maybe-a", input, lambda i: bool(i)).then(lambda: a())

    wf = create_workflow(uname(), composer)
    wf.run(input=True)
    assert log.names("invoke") == ["a"]
    tx = wf.run(input=False).transaction
    assert log.names("invoke") == ["a"]
    assert flow_steps(tx)["a"]["invoke"]["state"] == "skipped"


def test_skipped_when_steps_are_not_compensated():
    log = Recorder()
    a = recording_step("a", log)
    maybe = recording_step("maybe", log)
    z = recording_step("z", log, fail=True)

    def composer(input):
        a()
        when(input, lambda i: False).then(lambda: maybe())
        z()

    res = create_workflow(uname(), composer).run(throw_on_error=False)
    assert res.transaction.get_state() == "reverted"
    assert log.names("compensate") == ["z", "a"]


def test_when_result_consumed_by_later_step():
    seen = []
    b = create_step("b", lambda inp, ctx: {"b": True})
    c = create_step("c", lambda inp, ctx: seen.append(inp))

    def composer(input):
        maybe = when(input, lambda i: i == "go").then(lambda: b())
        c({"maybe": maybe})

    wf = create_workflow(uname(), composer)
    wf.run(input="go")
    wf.run(input="stop")
    assert seen[0] == {"maybe": {"b": True}}
    assert seen[1].get("maybe") is None


def test_parallelize_inside_when_block():
    log = Recorder()
    p = recording_step("p", log)
    q = recording_step("q", log)
    z = recording_step("z", log)

    def composer(input):
        def block():
            parallelize(p(), q())

        when(input, lambda i: i).then(block)
        z()

    wf = create_workflow(uname(), composer)
    wf.run(input=True)
    assert sorted(log.names("invoke")) == ["p", "q", "z"]
    tx = wf.run(input=False).transaction
    assert sorted(log.names("invoke")) == ["p", "q", "z", "z"]
    assert invoke_state(tx, "p")[0] == "skipped"
    assert invoke_state(tx, "q")[0] == "skipped"
