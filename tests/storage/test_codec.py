"""The JSON codec on stored runs: refused values end the run ``reverted`` before anything
is written, accepted ones are stored exactly as the next step received them.

Runs on the database of the suite (SQLite, or PostgreSQL with DATABASE_URL), so each
case is shown on both.
"""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest

from workflows_app.engine import workflow_engine
from workflows_app.models import StepExecution
from workflows_app.sdk import StepResponse, create_step, create_workflow, for_each, transform

from .helpers import Calls, counted_step, rows, step_rows, uname

pytestmark = pytest.mark.django_db(transaction=True)


def _deep(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"d": value}
    return value


class _Thing:
    pass


REFUSED = [
    pytest.param(lambda: {"items": [1, 2, {"price": float("nan")}]}, "$.items[2].price", id="nan"),
    pytest.param(lambda: {"total": float("inf")}, "$.total", id="infinity"),
    pytest.param(lambda: {"low": [float("-inf")]}, "$.low[0]", id="minus-infinity"),
    pytest.param(lambda: {"note": "a\x00b"}, "$.note", id="nul"),
    pytest.param(lambda: {"ok": {"a\x00": 1}}, "$.ok", id="nul-in-key"),
    pytest.param(lambda: {"tree": _deep(70)}, "$.tree.d.d", id="depth"),
    pytest.param(lambda: {"k": {1: "a", "1": "b"}}, "$.k", id="key-collision"),
    pytest.param(lambda: {"blob": [b"raw"]}, "$.blob[0]", id="bytes"),
    pytest.param(lambda: {"who": _Thing()}, "$.who", id="object"),
]


@pytest.mark.parametrize(("bad", "path"), REFUSED)
def test_refused_value_reverts_the_run_and_compensates_the_step_before(bad, path):
    calls = Calls()
    name = uname("codec-no")
    first = counted_step(f"{name}-a", calls)
    after = counted_step(f"{name}-after", calls)
    bad_name = f"{name}-bad"

    def produce(value, ctx):
        calls.hit("invoke", bad_name)
        return bad()

    step = create_step(bad_name, produce, lambda data, ctx: calls.hit("compensate", bad_name))
    create_workflow(name, lambda inp: after(step(first(inp))), store=True, retention_time=3600)

    res = workflow_engine.run(name, input=0, transaction_id="codec-1", throw_on_error=False)

    assert calls.invoked(bad_name) == 1, "a refused value is a permanent failure"
    assert calls.invoked(f"{name}-after") == 0
    assert calls.compensated(f"{name}-a") == 1
    [error] = res.errors
    assert error.step_id == bad_name
    assert error.error["name"] == "NonSerializableCheckpointError"
    message = error.error["message"]
    assert bad_name in message and path in message, message
    [row] = rows(name)
    assert row.state == "reverted"
    assert row.status == "FAILED"
    assert row.error == message
    assert "NonSerializableCheckpointError" in row.error_stack
    failed = [s for s in step_rows(row) if s.status == "FAILED"]
    assert [s.step_id for s in failed] == [bad_name]
    assert failed[0].output is None


def test_refused_iteration_value_names_the_iteration_and_path():
    calls = Calls()
    name = uname("codec-loop")
    first = counted_step(f"{name}-a", calls)
    inner = create_step(f"{name}-inner", lambda item, ctx: {"v": item or float("nan")})

    def compose(inp):
        first(inp)
        return for_each([1, 0], inner)

    create_workflow(name, compose, store=True, retention_time=3600)

    res = workflow_engine.run(name, input=0, transaction_id="codec-2", throw_on_error=False)

    [error] = res.errors
    assert error.error["name"] == "NonSerializableCheckpointError"
    assert "iteration 2" in error.error["message"]
    assert "$.v" in error.error["message"]
    assert calls.compensated(f"{name}-a") == 1
    assert rows(name)[0].state == "reverted"


MOMENT = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
IDENT = uuid.UUID("12345678-1234-5678-1234-567812345678")

ACCEPTED = [
    pytest.param(lambda: {"tags": {"b", "c", "a"}}, {"tags": ["a", "b", "c"]}, id="set"),
    pytest.param(lambda: {"ids": frozenset({3, 1, 2})}, {"ids": [1, 2, 3]}, id="frozenset"),
    pytest.param(
        lambda: {"price": decimal.Decimal("12.50"), "tiny": decimal.Decimal("1E-30")},
        {"price": "12.50", "tiny": "1E-30"},
        id="decimal",
    ),
    pytest.param(
        lambda: {"at": MOMENT, "day": MOMENT.date(), "clock": datetime.time(7, 8, 9)},
        {"at": "2024-05-06T07:08:09.123Z", "day": "2024-05-06", "clock": "07:08:09"},
        id="datetime",
    ),
    pytest.param(lambda: {"id": IDENT}, {"id": str(IDENT)}, id="uuid"),
    pytest.param(
        lambda: {"pair": (1, (2, 3)), 7: None}, {"pair": [1, [2, 3]], "7": None}, id="tuple"
    ),
]


@pytest.mark.parametrize(("value", "stored"), ACCEPTED)
def test_accepted_value_is_stored_as_the_next_step_received_it(value, stored):
    name = uname("codec-ok")
    seen: list = []
    produce = create_step(f"{name}-produce", lambda inp, ctx: value())
    look = create_step(f"{name}-look", lambda inp, ctx: seen.append(inp) or inp)
    create_workflow(name, lambda inp: look(produce(inp)), store=True, retention_time=3600)

    res = workflow_engine.run(name, input=0, transaction_id="codec-3")

    assert seen == [stored]
    [row] = rows(name)
    assert row.state == "done"
    by_step = {s.step_id: s for s in step_rows(row)}
    assert by_step[f"{name}-produce"].output == stored
    assert by_step[f"{name}-produce"].compensate_input == stored
    assert by_step[f"{name}-look"].input == stored
    assert row.output_payload == stored
    assert res.result == stored
    reread = StepExecution.objects.get(pk=by_step[f"{name}-produce"].pk)
    assert reread.output == seen[0]


def test_original_and_rebuilt_run_see_the_same_stored_form():
    """Code that reads a step's output (a transform) sees its stored form, both in the
    process that ran the step and in one that resumes the run from the database."""
    name = uname("codec-resume")
    seen: list = []
    produce = create_step(
        f"{name}-produce", lambda inp, ctx: {"price": decimal.Decimal("9.90"), "s": {2, 1}}
    )
    before = create_step(f"{name}-before", lambda inp, ctx: seen.append(("before", inp)))
    wait = create_step(f"{name}-wait", lambda inp, ctx: None, async_=True)
    after = create_step(f"{name}-after", lambda inp, ctx: seen.append(("after", inp)))

    def describe(value):
        return [type(value["price"]).__name__, value["price"], value["s"]]

    def compose(inp):
        value = produce(inp)
        before(transform(value, describe))
        wait(value)
        return after(transform(value, describe))

    create_workflow(name, compose, store=True, retention_time=3600)

    workflow_engine.run(name, input=0, transaction_id="codec-4")
    assert seen == [("before", ["str", "9.90", [1, 2]])]
    workflow_engine.set_step_success(
        workflow_id=name, transaction_id="codec-4", step_id=f"{name}-wait", response=None
    )

    assert seen[1] == ("after", ["str", "9.90", [1, 2]])
    assert rows(name)[0].state == "done"


def test_refused_workflow_input_is_not_stored():
    name = uname("codec-input")
    step = create_step(f"{name}-a", lambda inp, ctx: StepResponse(inp))
    create_workflow(name, lambda inp: step(inp), store=True, retention_time=3600)

    with pytest.raises(Exception) as info:
        workflow_engine.run(name, input={"x": float("nan")}, transaction_id="codec-5")

    assert type(info.value).__name__ == "NonSerializableCheckpointError"
    assert "$.x" in str(info.value)
    assert rows(name) == []
