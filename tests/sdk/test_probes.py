"""Combinations: stored runs with parallel groups and nesting, concurrent runs, empty inputs."""

import threading
import time

import pytest

from workflows_app.sdk import create_step, create_workflow, parallelize, transform

from .helpers import Recorder, recording_step, uname

pytestmark = pytest.mark.django_db


def test_stored_workflow_with_parallel_group():
    log = Recorder()

    def make(name):
        def invoke(inp, ctx):
            time.sleep(0.15)
            log.add("invoke", name, inp)
            return name

        return create_step(name, invoke, io_bound=True)

    members = [make(n) for n in ("p", "q", "r")]

    def composer(input):
        return list(parallelize(*(m(input) for m in members)))

    wf = create_workflow(uname(), composer, retention_time=600)
    assert wf.options["store"] is True
    start = time.perf_counter()
    res = wf.run(input=1)
    assert res.result == ["p", "q", "r"]
    assert time.perf_counter() - start < 0.4
    assert res.transaction.get_state() == "done"


def test_stored_workflow_reverts_and_compensates():
    log = Recorder()
    a = recording_step("a", log)
    b = recording_step("b", log, fail=True)

    def composer(input):
        a()
        b()

    res = create_workflow(uname(), composer, retention_time=600).run(throw_on_error=False)
    assert res.transaction.get_state() == "reverted"
    assert log.names("compensate") == ["b", "a"]


def test_nested_child_inside_parallel_group():
    log = Recorder()
    c1 = recording_step("c1", log, output="child-out")

    def child_composer(input):
        return c1(input)

    child = create_workflow(uname("child"), child_composer)
    side = recording_step("side", log, output="side-out")

    def composer(input):
        nested, other = parallelize(child.run_as_step(input=input), side())
        return {"nested": nested, "other": other}

    res = create_workflow(uname(), composer).run(input=2)
    assert res.result == {"nested": "child-out", "other": "side-out"}


def test_concurrent_runs_of_one_workflow_are_independent():
    def invoke(inp, ctx):
        time.sleep(0.05)
        return {"seen": inp, "tx": ctx.transaction_id}

    a = create_step("a", invoke)
    b = create_step("b", lambda inp, ctx: inp)

    def composer(input):
        return b(a(input))

    wf = create_workflow(uname(), composer)
    results = {}

    def worker(i):
        res = wf.run(input=i, transaction_id=f"conc-{i}")
        results[i] = res.result

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: {"seen": i, "tx": f"conc-{i}"} for i in range(4)}


def test_attribute_access_on_none_input_resolves_to_none():
    seen = []
    a = create_step("a", lambda inp, ctx: seen.append(inp))

    def composer(input):
        a({"x": input.x, "y": input["y"]["z"]})

    create_workflow(uname(), composer).run()
    assert len(seen) == 1
    assert seen[0].get("x") is None
    assert seen[0].get("y") is None


def test_transform_error_in_step_input_fails_the_run():
    log = Recorder()
    a = recording_step("a", log)
    b = recording_step("b", log)

    def composer(input):
        a()
        b(transform(input, lambda v: v["missing"]))

    res = create_workflow(uname(), composer).run(input={}, throw_on_error=False)
    assert res.transaction.get_state() == "reverted"
    assert "b" not in log.names("invoke")
    assert res.errors
    assert log.names("compensate")[-1] == "a"
