"""for_each(): one loop step that runs a step or a sub-workflow once per item (in memory)."""

from __future__ import annotations

import threading

import pytest

from workflows_app.sdk import (
    CompositionError,
    StepResponse,
    WorkflowError,
    WorkflowResponse,
    create_step,
    create_workflow,
    for_each,
    transform,
)

from .helpers import Recorder, flow_steps, invoke_state, recording_step, uname

WAIT = 10  # seconds a barrier or an event may wait before the test fails (never reached)


def _item_step(name: str, log: Recorder, *, fail_on=(), compensate: bool = True, **options):
    """A step ``n -> n * 10`` that logs (kind, name, item) and fails for items in ``fail_on``."""

    def invoke(item, ctx):
        log.add("invoke", name, item)
        if item in fail_on:
            raise ValueError(f"{name} failed on {item}")
        return StepResponse(item * 10, {"undo": item})

    def undo(data, ctx):
        log.add("compensate", name, data)

    return create_step(name, invoke, undo if compensate else None, **options)


def _compensations(log: Recorder) -> list[tuple]:
    return [(e[1], e[2]) for e in log.entries if e[0] == "compensate"]


# Outputs and inputs


def test_outputs_keep_item_order_and_feed_later_steps_and_the_response():
    log = Recorder()
    times_ten = _item_step("loop-x10", log)
    seen = {}

    def total(values, ctx):
        seen["total"] = values
        return sum(values)

    summed = create_step("loop-sum", total)

    def composer(input):
        outputs = for_each(input["items"], times_ten)
        result = summed(outputs)
        doubled = transform(outputs, lambda values: [v * 2 for v in values])
        return WorkflowResponse({"outputs": outputs, "sum": result, "doubled": doubled})

    res = create_workflow(uname("loop-order"), composer).run(input={"items": [3, 1, 2]})

    assert res.result == {"outputs": [30, 10, 20], "sum": 60, "doubled": [60, 20, 40]}
    assert seen["total"] == [30, 10, 20]
    assert [e[2] for e in log.entries if e[0] == "invoke"] == [3, 1, 2]


def test_loop_is_one_step_named_after_the_inner_step():
    log = Recorder()
    step = _item_step("loop-one-node", log)
    wf = create_workflow(uname("loop-node"), lambda input: for_each(input, step))

    res = wf.run(input=[1, 2])

    steps = flow_steps(res.transaction)
    assert list(steps) == ["for-each-loop-one-node"]
    definition = steps["for-each-loop-one-node"]["definition"]
    assert definition["operation"] == "builtin:loop"
    assert invoke_state(res.transaction, "for-each-loop-one-node") == ("done", "ok")


def test_plain_list_input_with_references_inside():
    log = Recorder()
    step = _item_step("loop-plain", log)

    def composer(input):
        return for_each([input["a"], 5, input["b"]], step)

    res = create_workflow(uname("loop-plain"), composer).run(input={"a": 1, "b": 2})
    assert res.result == [10, 50, 20]


def test_plain_constant_list_and_reference_from_a_step():
    log = Recorder()
    step = _item_step("loop-const", log)
    produce = create_step("loop-produce", lambda inp, ctx: [7, 8])

    def composer(input):
        constant = for_each([1, 2], step)
        produced = for_each(produce(), step)
        return WorkflowResponse({"constant": constant, "produced": produced})

    res = create_workflow(uname("loop-const"), composer).run()
    assert res.result == {"constant": [10, 20], "produced": [70, 80]}


def test_empty_list_runs_nothing_and_returns_an_empty_list():
    log = Recorder()
    step = _item_step("loop-empty", log)
    after = create_step("loop-after-empty", lambda values, ctx: {"got": values})

    def composer(input):
        return after(for_each(input, step))

    res = create_workflow(uname("loop-empty"), composer).run(input=[])
    assert res.result == {"got": []}
    assert log.entries == []


def test_items_that_are_not_a_list_fail_the_loop_step():
    log = Recorder()
    step = _item_step("loop-not-list", log)
    wf = create_workflow(uname("loop-not-list"), lambda input: for_each(input["items"], step))

    with pytest.raises(WorkflowError, match="needs a list of items, got dict"):
        wf.run(input={"items": {"a": 1}})
    assert log.entries == []


def test_each_iteration_has_its_own_step_name_and_idempotency_key():
    keys: list[tuple[str, str]] = []
    lock = threading.Lock()

    def invoke(item, ctx):
        with lock:
            keys.append((ctx.step_name, ctx.idempotency_key))
        return item

    step = create_step("loop-keys", invoke)
    name = uname("loop-keys")
    create_workflow(name, lambda input: for_each(input, step)).run(
        input=["a", "b"], transaction_id="tx-keys"
    )
    assert keys == [
        ("for-each-loop-keys-1", f"{name}:tx-keys:for-each-loop-keys-1:invoke"),
        ("for-each-loop-keys-2", f"{name}:tx-keys:for-each-loop-keys-2:invoke"),
    ]


def test_async_inner_step():
    async def invoke(item, ctx):
        return item + 1

    step = create_step("loop-async-handler", invoke)
    wf = create_workflow(uname("loop-async"), lambda input: for_each(input, step, concurrency=2))
    assert wf.run(input=[1, 2, 3]).result == [2, 3, 4]


def test_skipped_iteration_outputs_none_and_is_not_compensated():
    log = Recorder()

    def invoke(item, ctx):
        log.add("invoke", "skip", item)
        return StepResponse.skip() if item == 2 else item

    step = create_step("loop-skip", invoke, lambda data, ctx: log.add("compensate", "it", data))
    boom = recording_step("loop-skip-boom", log, fail=True)

    def composer(input):
        outputs = for_each(input, step)
        boom()
        return outputs

    wf = create_workflow(uname("loop-skip"), composer)
    res = wf.run(input=[1, 2, 3], throw_on_error=False)
    assert _compensations(log) == [("loop-skip-boom", None), ("it", 3), ("it", 1)]
    assert res.transaction.get_state() == "reverted"

    ok = create_workflow(uname("loop-skip-ok"), lambda input: for_each(input, step))
    assert ok.run(input=[1, 2, 3]).result == [1, None, 3]


# Naming


def test_second_loop_over_the_same_step_gets_its_own_name_and_config_renames():
    log = Recorder()
    step = _item_step("loop-twice", log)

    def composer(input):
        first = for_each(input, step)
        second = for_each(input, step)
        third = for_each(input, step).config(name="loop-renamed")
        return WorkflowResponse([first, second, third])

    res = create_workflow(uname("loop-names"), composer).run(input=[1])
    assert res.result == [[10], [10], [10]]
    assert list(flow_steps(res.transaction)) == [
        "for-each-loop-twice",
        "for-each-loop-twice-2",
        "loop-renamed",
    ]


# Composition errors


def test_composition_errors():
    log = Recorder()
    step = _item_step("loop-errors", log)
    waits = _item_step("loop-errors-async", log, async_=True)

    def run(composer):
        create_workflow(uname("loop-bad"), composer)

    with pytest.raises(CompositionError, match="create_step"):
        run(lambda input: for_each(input, lambda item, ctx: item))
    with pytest.raises(CompositionError, match="concurrency"):
        run(lambda input: for_each(input, step, concurrency=0))
    with pytest.raises(CompositionError, match="reference or a list"):
        run(lambda input: for_each("abc", step))
    with pytest.raises(CompositionError, match="async_"):
        run(lambda input: for_each(input, waits))
    with pytest.raises(CompositionError, match="inside a workflow composer"):
        for_each([1], step)


# Concurrency


def test_concurrency_runs_iterations_together_and_keeps_item_order():
    barrier = threading.Barrier(3, timeout=WAIT)
    done = {2: threading.Event(), 3: threading.Event()}
    finished: list[int] = []
    lock = threading.Lock()

    def invoke(item, ctx):
        barrier.wait()  # passes only when three iterations run at the same time
        if item == 1:  # item 1 finishes last
            assert done[2].wait(WAIT) and done[3].wait(WAIT)
        with lock:
            finished.append(item)
        if item in done:
            done[item].set()
        return item * 100

    step = create_step("loop-together", invoke)
    wf = create_workflow(uname("loop-conc"), lambda input: for_each(input, step, concurrency=3))

    res = wf.run(input=[1, 2, 3])

    assert res.result == [100, 200, 300]
    assert finished[-1] == 1


def test_concurrency_limit_is_respected():
    barrier = threading.Barrier(2, timeout=WAIT)
    lock = threading.Lock()
    active = 0
    peak = 0

    def invoke(item, ctx):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        barrier.wait()  # two at a time, every time
        with lock:
            active -= 1
        return item

    step = create_step("loop-limit", invoke)
    wf = create_workflow(uname("loop-limit"), lambda input: for_each(input, step, concurrency=2))

    res = wf.run(input=list(range(6)))

    assert res.result == list(range(6))
    assert peak == 2


def test_concurrent_failure_compensates_the_iterations_that_finished():
    log = Recorder()
    first_done = threading.Event()

    def invoke(item, ctx):
        log.add("invoke", "it", item)
        if item == 2:
            assert first_done.wait(WAIT)
            raise ValueError("item 2 failed")
        first_done.set()
        return item

    step = create_step(
        "loop-conc-fail", invoke, lambda data, ctx: log.add("compensate", "it", data)
    )
    before = recording_step("loop-conc-before", log)

    def composer(input):
        before()
        return for_each(input, step, concurrency=2)

    res = create_workflow(uname("loop-conc-fail"), composer).run(input=[1, 2], throw_on_error=False)
    assert res.transaction.get_state() == "reverted"
    assert _compensations(log) == [("it", 1), ("loop-conc-before", "loop-conc-before")]
    assert res.errors[0].error["message"] == "item 2 failed"


# Failures and compensation


def test_failing_iteration_compensates_finished_iterations_then_earlier_steps():
    log = Recorder()
    before = recording_step("loop-before", log)
    step = _item_step("loop-fail-2", log, fail_on=(2,))
    never = recording_step("loop-never", log)

    def composer(input):
        before()
        outputs = for_each(input, step)
        never()
        return outputs

    res = create_workflow(uname("loop-fail"), composer).run(
        input=[1, 2, 3, 4], throw_on_error=False
    )

    assert res.transaction.get_state() == "reverted"
    assert [(e[1], e[2]) for e in log.entries if e[0] == "invoke"] == [
        ("loop-before", {}),
        ("loop-fail-2", 1),
        ("loop-fail-2", 2),
    ]
    assert _compensations(log) == [("loop-fail-2", {"undo": 1}), ("loop-before", "loop-before")]
    [error] = res.errors
    assert error.step_id == "for-each-loop-fail-2"
    assert error.error["message"] == "loop-fail-2 failed on 2"
    assert error.error["name"] == "ValueError"
    assert "iteration 2 of 4" in error.error["stack"]
    assert invoke_state(res.transaction, "for-each-loop-fail-2") == ("failed", "permanent_failure")


def test_later_failure_compensates_every_iteration_in_reverse():
    log = Recorder()
    before = recording_step("loop-before-all", log)
    step = _item_step("loop-all", log)
    boom = recording_step("loop-boom", log, fail=True)

    def composer(input):
        before()
        for_each(input, step)
        boom()

    res = create_workflow(uname("loop-later"), composer).run(input=[1, 2, 3], throw_on_error=False)

    assert res.transaction.get_state() == "reverted"
    assert _compensations(log) == [
        ("loop-boom", None),
        ("loop-all", {"undo": 3}),
        ("loop-all", {"undo": 2}),
        ("loop-all", {"undo": 1}),
        ("loop-before-all", "loop-before-all"),
    ]


def test_cancel_of_a_done_run_compensates_every_iteration():
    log = Recorder()
    step = _item_step("loop-cancel", log)
    wf = create_workflow(uname("loop-cancel"), lambda input: for_each(input, step))

    res = wf.run(input=[1, 2])
    wf.cancel(transaction=res.transaction)

    assert res.transaction.get_state() == "reverted"
    assert _compensations(log) == [("loop-cancel", {"undo": 2}), ("loop-cancel", {"undo": 1})]


def test_permanent_failure_compensate_input_is_compensated_with_the_others():
    log = Recorder()

    def invoke(item, ctx):
        if item == 3:
            StepResponse.permanent_failure("no", compensate_input={"partial": 3})
        return StepResponse(item, {"undo": item})

    step = create_step("loop-perm", invoke, lambda data, ctx: log.add("compensate", "it", data))
    wf = create_workflow(uname("loop-perm"), lambda input: for_each(input, step))

    res = wf.run(input=[1, 2, 3, 4], throw_on_error=False)

    assert res.errors[0].error["name"] == "PermanentStepFailure"
    assert _compensations(log) == [("it", {"partial": 3}), ("it", {"undo": 2}), ("it", {"undo": 1})]


def test_step_without_compensation_is_not_compensated():
    log = Recorder()
    step = _item_step("loop-nocomp", log, fail_on=(2,), compensate=False)
    wf = create_workflow(uname("loop-nocomp"), lambda input: for_each(input, step))

    res = wf.run(input=[1, 2], throw_on_error=False)

    assert res.transaction.get_state() == "reverted"
    assert _compensations(log) == []
    assert flow_steps(res.transaction)["for-each-loop-nocomp"]["definition"]["noCompensation"]


def test_failed_iteration_compensation_fails_the_transaction():
    log = Recorder()

    def undo(data, ctx):
        log.add("compensate", "it", data)
        if data == 2:
            raise RuntimeError("cannot undo 2")

    step = create_step("loop-bad-undo", lambda item, ctx: item, undo, max_retries=1)
    boom = recording_step("loop-bad-undo-boom", log, fail=True)

    def composer(input):
        for_each(input, step)
        boom()

    res = create_workflow(uname("loop-bad-undo"), composer).run(
        input=[1, 2, 3], throw_on_error=False
    )

    assert res.transaction.get_state() == "failed"
    # 2 is retried once (max_retries=1); 1 is still compensated.
    assert _compensations(log) == [
        ("loop-bad-undo-boom", None),
        ("it", 3),
        ("it", 2),
        ("it", 2),
        ("it", 1),
    ]
    [comp_error] = res.transaction.get_errors("compensate")
    assert comp_error.step_id == "for-each-loop-bad-undo"
    assert comp_error.error["message"] == "cannot undo 2"


# Retries


def test_inner_max_retries_apply_to_each_iteration():
    attempts: list[tuple[int, int]] = []

    def invoke(item, ctx):
        attempts.append((item, ctx.attempt))
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return item

    step = create_step("loop-retry", invoke, max_retries=1)
    wf = create_workflow(uname("loop-retry"), lambda input: for_each(input, step))

    res = wf.run(input=[1, 2, 3])

    assert res.result == [1, 2, 3]
    assert attempts == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]


def test_iteration_fails_after_its_retries_are_used_up():
    log = Recorder()
    step = _item_step("loop-retry-out", log, fail_on=(2,), max_retries=2)
    wf = create_workflow(uname("loop-retry-out"), lambda input: for_each(input, step))

    res = wf.run(input=[1, 2, 3], throw_on_error=False)

    assert [e[2] for e in log.entries if e[0] == "invoke"] == [1, 2, 2, 2]
    assert _compensations(log) == [("loop-retry-out", {"undo": 1})]
    assert res.transaction.get_state() == "reverted"


# Sub-workflows


def _child(log: Recorder, *, fail_on=()):
    name = uname("loop-child")

    def invoke(item, ctx):
        log.add("invoke", "child", (item, ctx.transaction_id))
        if item in fail_on:
            raise ValueError(f"child failed on {item}")
        return StepResponse({"done": item}, item)

    def undo(item, ctx):
        log.add("compensate", "child", item)

    step = create_step(f"{name}-step", invoke, undo)
    return create_workflow(name, lambda input: step(input)), name


def test_sub_workflow_body_runs_once_per_item_with_its_own_transaction():
    log = Recorder()
    child, child_name = _child(log)
    wf = create_workflow(uname("loop-sub"), lambda input: for_each(input, child))

    res = wf.run(input=[4, 5], transaction_id="parent-1")

    assert res.result == [{"done": 4}, {"done": 5}]
    action = f"for-each-{child_name}"
    assert [e[2] for e in log.entries if e[0] == "invoke"] == [
        (4, f"{action}-1-parent-1"),
        (5, f"{action}-2-parent-1"),
    ]
    assert flow_steps(res.transaction)[action]["definition"]["operation"] == "builtin:loop"


def test_sub_workflow_iterations_are_cancelled_in_reverse_when_a_later_step_fails():
    log = Recorder()
    child, _ = _child(log)
    boom = recording_step("loop-sub-boom", log, fail=True)

    def composer(input):
        for_each(input, child, concurrency=2)
        boom()

    res = create_workflow(uname("loop-sub-later"), composer).run(
        input=[1, 2, 3], throw_on_error=False
    )
    assert res.transaction.get_state() == "reverted"
    assert _compensations(log) == [
        ("loop-sub-boom", None),
        ("child", 3),
        ("child", 2),
        ("child", 1),
    ]


def test_failing_sub_workflow_iteration_cancels_the_finished_children():
    log = Recorder()
    child, _ = _child(log, fail_on=(2,))
    wf = create_workflow(uname("loop-sub-fail"), lambda input: for_each(input, child))

    res = wf.run(input=[1, 2, 3], throw_on_error=False)

    assert res.transaction.get_state() == "reverted"
    # The failing child compensates its own step (with None), then the loop cancels child 1.
    assert _compensations(log) == [("child", None), ("child", 1)]
    assert res.errors[0].error["message"] == "child failed on 2"


def test_retry_compensation_undoes_only_the_iterations_still_owed():
    from workflows_app.orchestration import orchestrator

    log = Recorder()
    broken = {"undo": True}

    def undo(data, ctx):
        log.add("compensate", "it", data)
        if data == 2 and broken["undo"]:
            raise RuntimeError("cannot undo 2 yet")

    step = create_step("loop-retry-comp", lambda item, ctx: item, undo)
    boom = recording_step("loop-retry-comp-boom", log, fail=True, compensate=False)

    def composer(input):
        for_each(input, step)
        boom()

    res = create_workflow(uname("loop-retry-comp"), composer).run(
        input=[1, 2, 3], throw_on_error=False
    )
    assert res.transaction.get_state() == "failed"
    assert _compensations(log) == [("it", 3), ("it", 2), ("it", 1)]

    broken["undo"] = False
    orchestrator.retry_compensation(res.transaction)

    assert res.transaction.get_state() == "reverted"
    assert _compensations(log) == [("it", 3), ("it", 2), ("it", 1), ("it", 2)]


@pytest.mark.parametrize("threads", [4, 2, 1])
def test_loops_in_parallel_branches_share_a_small_pool_without_deadlock(threads):
    from workflows_app.orchestration import runtime
    from workflows_app.sdk import parallelize

    previous = runtime.parallel_threads
    runtime.configure(parallel_threads=threads)
    try:
        first = create_step("loop-par-a", lambda item, ctx: f"a{item}")
        second = create_step("loop-par-b", lambda item, ctx: f"b{item}")
        third = create_step("loop-par-c", lambda inp, ctx: "c")

        def composer(input):
            a, b, c = parallelize(
                for_each(input, first, concurrency=3),
                for_each(input, second, concurrency=3),
                third(),
            )
            return WorkflowResponse({"a": a, "b": b, "c": c})

        res = create_workflow(uname("loop-par"), composer).run(input=[1, 2, 3, 4, 5])
    finally:
        runtime.configure(parallel_threads=previous)

    assert res.result == {
        "a": ["a1", "a2", "a3", "a4", "a5"],
        "b": ["b1", "b2", "b3", "b4", "b5"],
        "c": "c",
    }
