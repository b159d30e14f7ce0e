"""The one JSON codec: what a step may return, how it is stored, what comes back.

Every stored value goes through here: the orchestrator's check of a step's result,
the step-row insert, the execution row's JSON columns (the models' ``encoder``) and
the API's rendering. A value the codec accepts is stored, read back and handed to the
next step in the same form on SQLite and PostgreSQL alike:

- JSON types as they are (``str``, ``int``, ``float``, ``bool``, ``None``, ``list``,
  ``dict`` with ``str`` keys); ``int``, ``float``, ``bool`` and ``None`` keys become
  their JSON text (``1`` -> ``"1"``), as ``json`` does;
- ``tuple`` -> list; ``set``/``frozenset`` -> sorted list (in iteration order when the
  items cannot be sorted);
- ``Decimal`` -> string (``Decimal("12.50")`` -> ``"12.50"``: exact, where a JSON
  number would come back as a float);
- ``datetime`` -> ISO 8601 text to the millisecond, ``Z`` for UTC; ``date``, ``time``
  -> ISO text; ``timedelta`` -> seconds as text; ``UUID`` -> its text.

Refused, with the path of the bad value (``$.items[2].price``): NaN and infinities,
``\\u0000`` and lone surrogates in strings or keys (PostgreSQL cannot store them),
nesting deeper than :data:`MAX_DEPTH`, keys that collide once converted
(``{1: "a", "1": "b"}``), ``bytes`` and any other object.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from typing import Any

#: Deepest nesting of lists and dicts a stored value may have (the value itself is
#: depth 0, so ``{"a": [1]}`` has depth 2).
MAX_DEPTH = 64


class UnstorableValueError(ValueError):
    """A value the codec refuses; ``path`` points at it (``$`` is the whole value)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.segments: list[str | int] = []  # innermost first, while unwinding

    @property
    def path(self) -> str:
        out = "$"
        for segment in reversed(self.segments):
            if isinstance(segment, int):
                out += f"[{segment}]"
            elif segment.isidentifier():
                out += f".{segment}"
            else:
                out += f"[{json.dumps(segment, ensure_ascii=False)}]"
        return out

    def __str__(self) -> str:
        return f"{self.reason} at {self.path}"


def _datetime(value: datetime.datetime) -> str:
    text = value.isoformat()
    if value.microsecond:
        text = text[:23] + text[26:]
    if text.endswith("+00:00"):
        text = text.removesuffix("+00:00") + "Z"
    return text


def _text(value: str) -> str:
    if "\x00" in value:
        raise UnstorableValueError("a NUL character (\\u0000) cannot be stored")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UnstorableValueError("a lone surrogate cannot be stored") from None
    return value if type(value) is str else str.__str__(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return _text(key)
    if key is None or isinstance(key, bool | int | float):
        if isinstance(key, float) and not math.isfinite(key):
            raise UnstorableValueError(f"the key {key!r} cannot be stored")
        return json.dumps(key)
    raise UnstorableValueError(f"a key of type {type(key).__name__} cannot be stored")


def _scalar(value: Any) -> Any:
    """The JSON form of a value that is not a list or dict."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if type(value) is int else int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnstorableValueError(f"{value!r} is not a JSON number")
        return value if type(value) is float else float(value)
    if isinstance(value, datetime.datetime):
        return _datetime(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.time):
        return value.isoformat()[:12]
    if isinstance(value, datetime.timedelta):
        return str(value.total_seconds())
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise UnstorableValueError(f"Decimal {str(value)!r} is not a JSON number")
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise UnstorableValueError(f"a value of type {type(value).__name__} cannot be stored")


def _items(value: set | frozenset) -> list:
    try:
        return sorted(value)
    except TypeError:
        return list(value)


def to_json(value: Any) -> Any:
    """The stored form of ``value`` (new lists and dicts; JSON scalars as they are).

    Raises :class:`UnstorableValueError` for what cannot be stored. Applying it to its
    own result changes nothing.
    """
    return _walk(value, 0)


def _walk(item: Any, depth: int) -> Any:
    kind = type(item)
    if kind is str:
        return _text(item)
    if kind is int or kind is bool or item is None:
        return item
    if kind is dict or isinstance(item, dict):
        if depth >= MAX_DEPTH:
            raise UnstorableValueError(f"nesting deeper than {MAX_DEPTH} levels")
        out: dict[str, Any] = {}
        for key, child in item.items():
            name = _text(key) if type(key) is str else _key(key)
            if name in out:
                raise UnstorableValueError(f"two keys are stored as {name!r} (one is {key!r})")
            try:
                out[name] = _walk(child, depth + 1)
            except UnstorableValueError as exc:
                exc.segments.append(name)
                raise
        return out
    if kind is list or isinstance(item, list | tuple | set | frozenset):
        if depth >= MAX_DEPTH:
            raise UnstorableValueError(f"nesting deeper than {MAX_DEPTH} levels")
        if isinstance(item, set | frozenset):
            item = _items(item)
        items = []
        for i, child in enumerate(item):
            try:
                items.append(_walk(child, depth + 1))
            except UnstorableValueError as exc:
                exc.segments.append(i)
                raise
        return items
    return _scalar(item)


def _default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return _items(value)
    return _scalar(value)


class Encoder(json.JSONEncoder):
    """A ``json`` encoder with the codec's conversions, for Django's ``JSONField``.

    It converts, but does not look for what PostgreSQL refuses inside strings: values
    reach it after :func:`to_json` checked them (the orchestrator's check, the
    storage's check of a run's input).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["allow_nan"] = False
        super().__init__(*args, **kwargs)

    def default(self, o: Any) -> Any:
        try:
            return _default(o)
        except UnstorableValueError as exc:
            raise TypeError(str(exc)) from None


_encoder = Encoder(separators=(",", ":"), ensure_ascii=False)
loads = json.loads


def dumps(value: Any) -> str:
    """Compact JSON text of a value already in stored form (or with convertible types)."""
    return _encoder.encode(value)


def roundtrip(value: Any) -> Any:
    """``value`` as the next step receives it: its stored form, as a deep copy."""
    return to_json(value)


def to_json_lenient(value: Any) -> Any:
    """Like :func:`to_json`, but what cannot be stored becomes its ``repr`` (for display)."""

    def fallback(item: Any) -> Any:
        try:
            return _default(item)
        except UnstorableValueError:
            return repr(item)

    return json.loads(json.dumps(value, default=fallback, ensure_ascii=False))
