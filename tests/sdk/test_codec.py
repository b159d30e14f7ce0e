"""The JSON codec on its own: conversions, refusals with their paths, the depth limit."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest

from workflows_app.orchestration import codec
from workflows_app.orchestration.codec import MAX_DEPTH, UnstorableValueError


def _nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_conversions_and_idempotence():
    value = {
        "set": {"b", "a"},
        "mixed": {1, "x"},
        "tuple": (1, (2,)),
        "price": decimal.Decimal("0.10"),
        "at": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "id": uuid.UUID(int=1),
        1: True,
        None: 1.5,
    }
    stored = codec.to_json(value)
    assert stored["set"] == ["a", "b"]
    assert sorted(stored["mixed"], key=str) == [1, "x"]
    assert stored["tuple"] == [1, [2]]
    assert stored["price"] == "0.10"
    assert stored["at"] == "2024-01-02T03:04:05Z"
    assert stored["id"] == "00000000-0000-0000-0000-000000000001"
    assert stored["1"] is True and stored["null"] == 1.5
    assert codec.to_json(stored) == stored
    assert codec.loads(codec.dumps(stored)) == stored


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ({"a": [0, {"b": float("nan")}]}, "$.a[1].b", "not a JSON number"),
        ([float("-inf")], "$[0]", "not a JSON number"),
        (decimal.Decimal("Infinity"), "$", "not a JSON number"),
        ({"text": "x\x00"}, "$.text", "NUL"),
        ({"odd key": "\ud800"}, '$["odd key"]', "surrogate"),
        ({"a": {("t",): 1}}, "$.a", "key of type tuple"),
        ({"a": {True: 1, "true": 2}}, "$.a", "stored as 'true'"),
        ({"b": bytearray(b"x")}, "$.b", "bytearray"),
        ({"o": object()}, "$.o", "object"),
    ],
)
def test_refusals_name_the_path(value, path, words):
    with pytest.raises(UnstorableValueError) as info:
        codec.to_json(value)
    assert info.value.path == path
    assert words in str(info.value)
    assert str(info.value).endswith(f"at {path}")


def test_depth_limit_is_exact():
    assert codec.to_json(_nested(MAX_DEPTH)) == _nested(MAX_DEPTH)
    with pytest.raises(UnstorableValueError, match=f"deeper than {MAX_DEPTH}"):
        codec.to_json(_nested(MAX_DEPTH + 1))


def test_model_encoder_refuses_nan_and_converts_the_rest():
    import json

    assert json.loads(json.dumps({"s": {2, 1}}, cls=codec.Encoder)) == {"s": [1, 2]}
    with pytest.raises(ValueError):
        json.dumps({"x": float("nan")}, cls=codec.Encoder)
    with pytest.raises(TypeError):
        json.dumps({"x": b"raw"}, cls=codec.Encoder)
