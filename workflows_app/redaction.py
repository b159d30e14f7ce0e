"""Masking of sensitive values before anything is stored or shown.

Two rules apply: keys named in ``WORKFLOWS["REDACT_KEYS"]`` are masked at any depth
(case-insensitive), and a step's ``sensitive=["output.token", "input.card"]`` masks
those paths of its own records. Steps still receive the real values in-process.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"


class Redactor:
    def __init__(self, keys: Iterable[str]):
        self.keys = frozenset(key.lower() for key in keys if isinstance(key, str))

    def __call__(self, value: Any) -> Any:
        """A copy of ``value`` with every redacted key masked (scalars returned as is)."""
        if isinstance(value, dict):
            keys = self.keys
            return {
                k: (MASK if isinstance(k, str) and k.lower() in keys else self(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


def mask_path(value: Any, path: str) -> Any:
    """A copy of ``value`` with the dotted ``path`` (relative to it) masked."""
    if not path:
        return MASK if value is not None else None
    head, _, rest = path.partition(".")
    if isinstance(value, dict) and head in value:
        copy = dict(value)
        copy[head] = mask_path(value[head], rest)
        return copy
    if isinstance(value, list) and head.isdigit() and int(head) < len(value):
        copy = list(value)
        copy[int(head)] = mask_path(value[int(head)], rest)
        return copy
    if isinstance(value, list) and head == "*":
        return [mask_path(item, rest) for item in value]
    return value


def mask_sensitive(value: Any, sensitive: Iterable[str], prefix: str) -> Any:
    """Mask the paths of ``sensitive`` that start with ``prefix`` (``"input"``, ``"output"``)."""
    for path in sensitive:
        head, _, rest = path.partition(".")
        if head == prefix:
            value = mask_path(value, rest)
    return value
