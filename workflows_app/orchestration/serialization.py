"""JSON round-trips for step inputs and the values that are stored.

Accepts the same extra types as Django's JSON encoder (dates, times, durations,
decimals, UUIDs) without importing Django.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from typing import Any

_SCALARS = (str, int, float, bool, type(None))


def _default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        text = value.isoformat()
        if value.microsecond:
            text = text[:23] + text[26:]
        if text.endswith("+00:00"):
            text = text.removesuffix("+00:00") + "Z"
        return text
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.time):
        return value.isoformat()[:12]
    if isinstance(value, datetime.timedelta):
        return str(value.total_seconds())
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(default=_default, separators=(",", ":"), ensure_ascii=False)
dumps = _encoder.encode
loads = json.loads


def roundtrip(value: Any) -> Any:
    """Return a JSON-shaped deep copy of ``value`` (scalars pass through untouched)."""
    if isinstance(value, _SCALARS):
        return value
    return loads(dumps(value))
