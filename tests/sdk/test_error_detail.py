"""A failed step's traceback is formatted when first read, and reads as if formatted at once."""

from __future__ import annotations

import copy
import json
import pickle
import traceback

import pytest

from workflows_app.orchestration import error_detail
from workflows_app.orchestration.error_detail import ErrorDetail
from workflows_app.orchestration.errors import serialize_error
from workflows_app.sdk import create_step, create_workflow

from .helpers import uname


def _index_error() -> IndexError:
    values = [1]
    try:
        values[3]
    except IndexError as exc:
        return exc
    raise AssertionError("unreachable")


def _eager(exc: BaseException, suffix: str = "") -> dict:
    stack = "".join(traceback.format_exception(exc)).rstrip() + suffix
    return {"message": str(exc), "name": type(exc).__name__, "stack": stack}


def _detail(exc: BaseException, suffix: str = "") -> ErrorDetail:
    detail = ErrorDetail(exc, str(exc), type(exc).__name__)
    detail.append_to_stack(suffix)
    return detail


@pytest.fixture
def format_calls(monkeypatch) -> list:
    calls: list = []
    real = traceback.format_exception

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(error_detail.traceback, "format_exception", counting)
    return calls


def test_serialize_error_of_an_exception_formats_nothing_until_read(format_calls):
    exc = _index_error()
    expected = _eager(exc)
    format_calls.clear()
    detail = serialize_error(exc)
    assert isinstance(detail, ErrorDetail)
    assert format_calls == []
    assert detail == expected
    assert len(format_calls) == 1
    detail["stack"]
    assert len(format_calls) == 1


@pytest.mark.parametrize(
    "read",
    [
        lambda d: d["stack"],
        lambda d: d.get("stack"),
        lambda d: dict(d),
        lambda d: {**d},
        lambda d: list(d.items()),
        lambda d: list(d.values()),
        lambda d: list(d),
        lambda d: len(d),
        lambda d: d.copy(),
        lambda d: copy.copy(d),
        lambda d: copy.deepcopy(d),
        lambda d: pickle.loads(pickle.dumps(d)),
        lambda d: json.dumps(d),
        lambda d: json.dumps({"nested": [d]}, indent=1),
        lambda d: repr(d),
        lambda d: d | {},
    ],
)
def test_every_read_sees_the_formatted_stack(read):
    exc = _index_error()
    detail = _detail(exc, "\n    at [wf -> step (invoke)]")
    read(detail)
    assert detail.formatted
    assert dict(detail) == _eager(exc, "\n    at [wf -> step (invoke)]")
    assert json.loads(json.dumps(detail)) == _eager(exc, "\n    at [wf -> step (invoke)]")


def test_copies_and_pickles_are_plain_formatted_dicts():
    exc = _index_error()
    for made in (
        copy.copy(_detail(exc)),
        copy.deepcopy(_detail(exc)),
        pickle.loads(pickle.dumps(_detail(exc))),
    ):
        assert type(made) is dict
        assert made == _eager(exc)


def test_message_and_name_are_read_without_formatting(format_calls):
    exc = _index_error()
    detail = _detail(exc)
    assert detail["message"] == "list index out of range"
    assert detail.get("name") == "IndexError"
    assert "stack" in detail
    assert "other" not in detail
    assert detail.get("other", 1) == 1
    assert not detail.formatted
    assert format_calls == []


def test_comparison_from_either_side_and_key_order():
    exc = _index_error()
    assert _eager(exc) == _detail(exc)
    assert _detail(exc) == _eager(exc)
    assert list(_detail(exc)) == ["message", "name", "stack"]


def test_the_stack_is_the_traceback_when_caught_not_after_a_later_raise():
    exc = _index_error()
    expected = _eager(exc)
    detail = _detail(exc)

    def reraise() -> None:
        raise exc

    with pytest.raises(IndexError):
        reraise()
    assert detail == expected


def test_appending_after_formatting_appends_to_the_text():
    exc = _index_error()
    detail = _detail(exc, " first")
    assert detail["stack"].endswith(" first")
    detail.append_to_stack(" second")
    assert detail["stack"] == _eager(exc, " first second")["stack"]


def test_a_failed_run_reports_the_traceback_and_where_it_happened():
    def explode(value, ctx):
        raise RuntimeError("step failed on purpose")

    name = uname()
    step = create_step(f"{name}-explode", explode)
    workflow = create_workflow(name, lambda input: step(input))

    result = workflow.run(input=1, throw_on_error=False)

    error = result.errors[0].error
    assert error["message"] == "step failed on purpose"
    assert error["name"] == "RuntimeError"
    assert error["stack"].startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError("step failed on purpose")' in error["stack"]
    assert error["stack"].endswith(f"at [{name} -> {name}-explode (invoke)]")
