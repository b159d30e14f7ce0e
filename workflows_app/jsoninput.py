"""Validation of JSON that people type or send: one rule for the API and the admin forms.

A value is accepted only when every database the app supports can store it and the
engine can process it without surprises:

* no NaN or Infinity (not JSON, and PostgreSQL's ``jsonb`` refuses them);
* no NUL character and no lone surrogate in any string or key;
* nested at most :data:`MAX_DEPTH` levels. Raw text is measured *before* it is
  parsed, so a document nested hundreds of levels never reaches code that recurses;
* at most ``WORKFLOWS["MAX_PAYLOAD_BYTES"]`` once serialised.

Refusals raise :class:`JSONInputError`; the API turns it into a 400, the admin forms
into a form error. Nothing is written before the check passes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .conf import workflows_settings
from .orchestration import codec
from .orchestration.codec import MAX_DEPTH  # the same limit as for what steps return

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class JSONInputError(ValueError):
    """User-supplied JSON that cannot be accepted; the message says why."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


def text_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text`` (strings ignored), without
    parsing it."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise JSONInputError(f"{name} is not a JSON value and cannot be stored.", code="not_finite")


def loads(text: str | bytes, where: str = "The value") -> Any:
    """Parse user-supplied JSON text and check the value (see the module docstring)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONInputError(f"{where} is not UTF-8: {exc}.", code="encoding") from None
    check_depth(text_depth(text), where)
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"{where} is not valid JSON: {exc}.", code="parse") from None
    check(value, where)
    return value


def check_depth(depth: int, where: str) -> None:
    if depth > MAX_DEPTH:
        raise JSONInputError(
            f"{where} is nested {depth} levels deep; at most {MAX_DEPTH} are accepted.",
            code="too_deep",
        )


def check_text(text: str, where: str = "The value") -> None:
    """Refuse a string the database cannot store (NUL character, lone surrogate)."""
    check(text, where)


def check(value: Any, where: str = "The value") -> None:
    """Refuse an already parsed value that breaks a rule of the module docstring.

    What can be stored is the codec's decision, the same one that checks what steps
    return; this adds only the size limit.
    """
    try:
        codec.to_json(value)
    except codec.UnstorableValueError as exc:
        raise JSONInputError(f"{where} cannot be stored: {exc}.", code="unstorable") from None
    limit = workflows_settings.MAX_PAYLOAD_BYTES
    if limit:
        size = len(json.dumps(value).encode())
        if size > limit:
            raise JSONInputError(
                f"{where} is {size} bytes, more than WORKFLOWS['MAX_PAYLOAD_BYTES'] ({limit}).",
                code="payload_too_large",
            )
