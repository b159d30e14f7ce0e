"""Error serialisation and the exception surface of run()."""

import pytest

from workflows_app.sdk import CompositionError, WorkflowError, create_step, create_workflow

from .helpers import Recorder, recording_step, uname

pytestmark = pytest.mark.django_db


class InventoryShortError(Exception):
    pass


def _raising(exc, log=None, name="raiser"):
    log = log or Recorder()
    a = recording_step("first", log)

    def invoke(inp, ctx):
        raise exc

    step = create_step(name, invoke)

    def composer(input):
        a()
        step()

    return create_workflow(uname(), composer), log


def test_custom_exception_is_serialised():
    wf, _ = _raising(InventoryShortError("only 2 left"))
    res = wf.run(throw_on_error=False)
    (err,) = res.errors
    assert err.error["message"] == "only 2 left"
    assert err.error["name"] == "InventoryShortError"
    assert "InventoryShortError" in err.error["stack"]
    assert "invoke" in err.error["stack"] or "Traceback" in err.error["stack"]


def test_error_message_is_str_of_exception():
    wf, _ = _raising(ValueError(1, 2))
    res = wf.run(throw_on_error=False)
    assert res.errors[0].error["message"] == str(ValueError(1, 2))


def test_system_exit_is_a_step_failure():
    wf, log = _raising(SystemExit(3))
    res = wf.run(throw_on_error=False)
    assert res.transaction.get_state() == "reverted"
    assert res.errors[0].error["name"] == "SystemExit"
    assert log.names("compensate") == ["first"]


def test_system_exit_raises_workflow_error_with_throw():
    wf, _ = _raising(SystemExit("bye"))
    with pytest.raises(WorkflowError) as exc:
        wf.run()
    assert str(exc.value) == "bye"


def test_workflow_error_carries_errors_and_transaction():
    wf, _ = _raising(InventoryShortError("short"))
    with pytest.raises(WorkflowError) as exc:
        wf.run(transaction_id="err-tx")
    err = exc.value
    assert err.transaction.transaction_id == "err-tx"
    assert [(e.handler_type, e.error["name"]) for e in err.errors] == [
        ("invoke", "InventoryShortError")
    ]


def test_step_error_step_id_names_the_step():
    wf, _ = _raising(ValueError("x"), name="the-raiser")
    res = wf.run(throw_on_error=False)
    assert "the-raiser" in res.errors[0].step_id


def test_run_errors_exclude_compensation_errors():
    def bad_undo(ci, ctx):
        raise RuntimeError("compensate broke")

    a = create_step("a", lambda inp, ctx: 1, bad_undo)

    def explode(inp, ctx):
        raise ValueError("invoke broke")

    b = create_step("b", explode)

    def composer(input):
        a()
        b()

    res = create_workflow(uname(), composer).run(throw_on_error=False)
    assert [e.handler_type for e in res.errors] == ["invoke"]
    handler_types = sorted(e.handler_type for e in res.transaction.get_errors())
    assert handler_types == ["compensate", "invoke"]
    comp = next(e for e in res.transaction.get_errors() if e.handler_type == "compensate")
    assert comp.error["message"] == "compensate broke"
    assert comp.error["name"] == "RuntimeError"


def test_workflow_error_is_an_exception():
    assert issubclass(WorkflowError, Exception)
    assert issubclass(CompositionError, Exception)


def test_error_in_workflow_does_not_leak_to_next_run():
    calls = []

    def sometimes(inp, ctx):
        calls.append(inp)
        if inp == "bad":
            raise ValueError("bad input")
        return inp

    step = create_step("sometimes", sometimes)

    def composer(input):
        return step(input)

    wf = create_workflow(uname(), composer)
    assert wf.run(input="bad", throw_on_error=False).errors
    ok = wf.run(input="good")
    assert ok.result == "good"
    assert ok.errors == []
