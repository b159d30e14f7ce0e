"""parallelize(): concurrency of members, joining, failures inside a group, no_wait."""

import asyncio
import sys
import threading
import time

import pytest

from workflows_app.sdk import create_step, create_workflow, parallelize

from .helpers import Recorder, invoke_state, recording_step, uname

pytestmark = pytest.mark.django_db


def _sleeper(name, seconds, log, io_bound=True):
    def invoke(inp, ctx):
        log.add("start", name, time.perf_counter())
        time.sleep(seconds)
        log.add("end", name, time.perf_counter())
        return name

    return create_step(name, invoke, io_bound=io_bound)


def test_parallelize_returns_refs_in_order():
    a = create_step("a", lambda inp, ctx: "A")
    b = create_step("b", lambda inp, ctx: "B")
    c = create_step("c", lambda inp, ctx: "C")
    seen = {}

    def composer(input):
        refs = parallelize(a(), b(), c())
        seen["type"] = type(refs)
        seen["len"] = len(refs)
        x, y, z = refs
        return [x, y, z]

    wf = create_workflow(uname(), composer)
    assert seen == {"type": tuple, "len": 3}
    assert wf.run().result == ["A", "B", "C"]


def test_plain_members_without_io_bound_run_on_the_calling_thread_in_order():
    log = Recorder()
    idents = []

    def member(name):
        def invoke(inp, ctx):
            idents.append(threading.get_ident())
            log.add("start", name, time.perf_counter())
            time.sleep(0.05)
            log.add("end", name, time.perf_counter())
            return name

        return create_step(name, invoke)

    members = [member(n) for n in ("p", "q", "r")]

    def composer(input):
        return list(parallelize(*(m() for m in members)))

    assert create_workflow(uname(), composer).run().result == ["p", "q", "r"]
    assert idents == [threading.get_ident()] * 3
    starts, ends = log.payloads("start"), log.payloads("end")
    assert ends["p"] <= starts["q"] and ends["q"] <= starts["r"]


def test_io_bound_members_overlap_while_plain_ones_run_here():
    log = Recorder()
    waiting = [_sleeper(n, 0.2, log) for n in ("w1", "w2")]
    here_idents = []
    plain = create_step("plain", lambda inp, ctx: here_idents.append(threading.get_ident()))

    def composer(input):
        parallelize(*(m() for m in waiting), plain())

    create_workflow(uname(), composer).run()
    assert here_idents == [threading.get_ident()]
    assert log.most_at_once() == 2


def test_plain_members_run_in_threads_concurrently():
    log = Recorder()
    members = [_sleeper(n, 0.2, log) for n in ("p", "q", "r")]

    def composer(input):
        return list(parallelize(*(m() for m in members)))

    res = create_workflow(uname(), composer).run()
    assert res.result == ["p", "q", "r"]
    assert log.most_at_once() == 3


def test_async_members_are_gathered():
    log = Recorder()

    def make(name):
        async def invoke(inp, ctx):
            log.add("start", name, time.perf_counter())
            await asyncio.sleep(0.2)
            log.add("end", name, time.perf_counter())
            return name.upper()

        return create_step(name, invoke)

    members = [make(n) for n in ("p", "q", "r")]

    def composer(input):
        return list(parallelize(*(m() for m in members)))

    res = create_workflow(uname(), composer).run()
    assert res.result == ["P", "Q", "R"]
    assert log.most_at_once() == 3


def test_step_after_group_waits_for_all_members():
    log = Recorder()
    members = [_sleeper("slow", 0.25, log), _sleeper("fast", 0.01, log)]

    def after(inp, ctx):
        log.add("start", "after", time.perf_counter())
        return inp

    nxt = create_step("after", after)

    def composer(input):
        slow, fast = parallelize(*(m() for m in members))
        return nxt({"slow": slow, "fast": fast})

    res = create_workflow(uname(), composer).run()
    assert res.result == {"slow": "slow", "fast": "fast"}
    starts = log.payloads("start")
    ends = log.payloads("end")
    assert starts["after"] >= ends["slow"]
    assert starts["after"] >= ends["fast"]


def test_steps_before_group_run_first():
    log = Recorder()
    a = recording_step("a", log)
    p = recording_step("p", log)
    q = recording_step("q", log)
    z = recording_step("z", log)

    def composer(input):
        a()
        parallelize(p(), q())
        z()

    create_workflow(uname(), composer).run()
    order = log.names("invoke")
    assert order[0] == "a"
    assert sorted(order[1:3]) == ["p", "q"]
    assert order[3] == "z"


def test_failing_member_reverts_siblings_and_skips_followers():
    log = Recorder()
    a = recording_step("a", log)
    p = recording_step("p", log)
    q = recording_step("q", log, fail=True)
    r = recording_step("r", log)
    z = recording_step("z", log)

    def composer(input):
        a()
        parallelize(p(), q(), r())
        z()

    res = create_workflow(uname(), composer).run(throw_on_error=False)
    tx = res.transaction
    assert tx.get_state() == "reverted"
    assert "z" not in log.names("invoke")
    comp = log.names("compensate")
    assert sorted(comp[:3]) == ["p", "q", "r"]
    assert comp[3:] == ["a"]
    assert invoke_state(tx, "q") == ("failed", "permanent_failure")
    assert invoke_state(tx, "z")[0] == "not_started"


def test_no_wait_lets_next_step_start_early():
    log = Recorder()
    a = _sleeper("background-ish", 0.25, log)
    b = _sleeper("eager", 0.0, log)

    def composer(input):
        a().config(no_wait=True)
        b()

    res = create_workflow(uname(), composer).run()
    assert res.transaction.get_state() == "done"
    starts = log.payloads("start")
    ends = log.payloads("end")
    assert starts["eager"] < ends["background-ish"]


def test_no_wait_as_step_option():
    log = Recorder()

    def slow(inp, ctx):
        log.add("start", "slow", time.perf_counter())
        time.sleep(0.25)
        log.add("end", "slow", time.perf_counter())

    a = create_step("slow", slow, no_wait=True)
    b = _sleeper("eager", 0.0, log)

    def composer(input):
        a()
        b()

    create_workflow(uname(), composer).run()
    assert log.payloads("start")["eager"] < log.payloads("end")["slow"]


def test_lone_step_runs_in_calling_thread():
    import threading

    idents = []
    a = create_step("a", lambda inp, ctx: idents.append(threading.get_ident()))
    b = create_step("b", lambda inp, ctx: idents.append(threading.get_ident()))

    def composer(input):
        a()
        b()

    create_workflow(uname(), composer).run()
    assert idents == [threading.get_ident()] * 2


def test_thread_pool_is_bounded_by_default():
    log = Recorder()
    members = [_sleeper(f"m{i}", 0.12, log) for i in range(8)]

    def composer(input):
        parallelize(*(m() for m in members))

    create_workflow(uname(), composer).run()
    assert len(log.names("end")) == 8
    # PARALLEL_THREADS defaults to 4 pool threads; the calling thread runs members too.
    assert 2 <= log.most_at_once() <= 5


def test_one_parallel_thread_runs_members_sequentially(settings):
    settings.WORKFLOWS = {**getattr(settings, "WORKFLOWS", {}), "PARALLEL_THREADS": 1}
    log = Recorder()
    members = [_sleeper(n, 0.1, log) for n in ("p", "q", "r")]

    def composer(input):
        parallelize(*(m() for m in members))

    wf = create_workflow(uname(), composer)
    start = time.perf_counter()
    wf.run()
    elapsed = time.perf_counter() - start
    assert elapsed >= 0.29
    starts = log.payloads("start")
    ends = log.payloads("end")
    spans = sorted((starts[n], ends[n]) for n in ("p", "q", "r"))
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(2))


def _statements(run) -> int:
    """Python statements executed by ``run()`` on this thread (a deterministic measure
    of work, unlike time under load); the previous tracer is restored afterwards."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    previous = sys.gettrace()
    sys.settrace(lambda frame, event, arg: local)
    try:
        run()
    finally:
        sys.settrace(previous)
    return count


def test_cost_per_step_does_not_grow_with_chain_length():
    threads: set[int] = set()

    def chain(n):
        def invoke(inp, ctx):
            threads.add(threading.get_ident())
            return inp

        steps = [create_step(f"s{i}", invoke) for i in range(n)]

        def composer(input):
            for step in steps:
                step(input)

        return create_workflow(uname(), composer)

    def per_step(n):
        wf = chain(n)
        wf.run(input=1)
        return _statements(lambda: wf.run(input=1)) / n

    short = per_step(20)
    long = per_step(200)
    # Every handler ran on the traced thread: the count covers the whole run.
    assert threads == {threading.get_ident()}
    # Linear work is a constant per step (the run's fixed cost spreads thinner over a
    # longer chain); work that grows with the chain would make it 10 times larger.
    assert short > 50
    assert long < short * 1.25
