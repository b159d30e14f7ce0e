"""Re-running with the same transaction id: new executions, resumes and idempotent replays."""

import pytest

from workflows_app.sdk import WorkflowError, create_step, create_workflow

from .helpers import Recorder, recording_step, uname

pytestmark = pytest.mark.django_db


def test_rerun_of_finished_non_idempotent_transaction_executes_again():
    log = Recorder()
    a = recording_step("a", log)

    def composer(input):
        return a(input)

    wf = create_workflow(uname(), composer, store=True, retention_time=60)
    first = wf.run(input=1, transaction_id="again-tx")
    second = wf.run(input=2, transaction_id="again-tx")
    assert log.names("invoke") == ["a", "a"]
    assert [e[2] for e in log.entries if e[0] == "invoke"] == [1, 2]
    assert first.transaction.run_id != second.transaction.run_id


def test_idempotent_rerun_returns_stored_result_without_executing():
    calls = []

    def invoke(inp, ctx):
        calls.append(inp)
        return {"echo": inp}

    a = create_step("a", invoke)

    def composer(input):
        return a(input)

    wf = create_workflow(uname(), composer, idempotent=True, retention_time=60)
    first = wf.run(input=1, transaction_id="idem-tx")
    second = wf.run(input=2, transaction_id="idem-tx")
    assert calls == [1]
    assert first.result == {"echo": 1}
    assert second.result == {"echo": 1}
    assert second.transaction.run_id == first.transaction.run_id
    assert second.transaction.get_state() == "done"


def test_idempotent_rerun_of_reverted_transaction_raises_same_error():
    calls = []

    def invoke(inp, ctx):
        calls.append(inp)
        raise ValueError("refused once")

    a = create_step("a", invoke)

    def composer(input):
        a(input)

    wf = create_workflow(uname(), composer, idempotent=True, retention_time=60)
    with pytest.raises(WorkflowError) as first:
        wf.run(input=1, transaction_id="idem-fail")
    with pytest.raises(WorkflowError) as second:
        wf.run(input=1, transaction_id="idem-fail")
    assert calls == [1]
    assert str(first.value) == str(second.value) == "refused once"


def test_different_transaction_ids_are_independent_for_idempotent_workflow():
    log = Recorder()
    a = recording_step("a", log)

    def composer(input):
        a(input)

    wf = create_workflow(uname(), composer, idempotent=True, retention_time=60)
    wf.run(input=1, transaction_id="idem-x")
    wf.run(input=2, transaction_id="idem-y")
    assert log.names("invoke") == ["a", "a"]
