"""Masking of sensitive values before anything is stored or shown.

Rule: **a value masked anywhere in a run is masked everywhere that run is stored or
shown** (step rows, the execution row's payloads, context, errors and stack, events,
admin pages and messages, API responses, ``manage.py workflows show``). Steps still
receive the real values in-process.

Two things make a value secret: a key named in ``WORKFLOWS["REDACT_KEYS"]`` (at any
depth, case-insensitive) and a step's ``sensitive=["output.token", "input.card"]``
paths. :class:`Redactor` masks keys only (stateless, for data outside any run).
:class:`RunRedactor`, one per running transaction (:func:`for_run`), also *learns*
every value it masks and then masks it by value wherever it appears in that run: as
a whole value, and inside texts such as an exception's message and stack. Values
shorter than :data:`MIN_SECRET_LENGTH` characters are masked where a key or path
names them, but not searched for inside texts (that would mangle unrelated text).

What the run learned lives in its process: a run resumed elsewhere was rebuilt from
stored, already masked values, so its steps see ``[REDACTED]`` where a secret was.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

MASK = "[REDACTED]"

#: Shortest secret searched for inside texts.
MIN_SECRET_LENGTH = 4


class Redactor:
    """Masks the values of the given keys at any depth (case-insensitive)."""

    def __init__(self, keys: Iterable[str]):
        self.keys = frozenset(key.lower() for key in keys if isinstance(key, str))

    #: Values masked wherever they appear (empty here; see RunRedactor).
    secrets: frozenset[str] | set[str] = frozenset()

    def __call__(self, value: Any) -> Any:
        """A copy of ``value`` with every redacted key masked (scalars returned as is)."""
        return self._mask(value, None)

    def text(self, value: str) -> str:
        """A text with the secrets this redactor knows masked inside it."""
        return value

    def _mask(self, value: Any, pattern: re.Pattern[str] | None) -> Any:
        if isinstance(value, dict):
            keys = self.keys
            return {
                (pattern.sub(MASK, k) if pattern and isinstance(k, str) else k): (
                    MASK if isinstance(k, str) and k.lower() in keys else self._mask(v, pattern)
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._mask(v, pattern) for v in value]
        if pattern is None:
            return value
        if isinstance(value, str):
            return pattern.sub(MASK, value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return MASK if str(value) in self.secrets else value
        return value


class RunRedactor(Redactor):
    """A :class:`Redactor` that also masks, by value, everything masked in its run."""

    def __init__(self, keys: Iterable[str]):
        super().__init__(keys)
        self.secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        # What observe_run() has read already, by identity.
        self._seen: dict[str, Any] = {}

    # Learning

    def learn(self, value: Any) -> None:
        """Treat every scalar inside ``value`` as a secret of this run."""
        found = set()
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list | tuple):
                stack.extend(item)
            elif isinstance(item, str | int | float) and not isinstance(item, bool):
                text = item if isinstance(item, str) else str(item)
                if len(text) >= MIN_SECRET_LENGTH and text != MASK:
                    found.add(text)
        if found - self.secrets:
            with self._lock:
                self.secrets |= found
                self._pattern = None

    def learn_keys(self, value: Any) -> None:
        """Learn the values held under redacted keys inside ``value``."""
        keys = self.keys
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and key.lower() in keys:
                        self.learn(child)
                    else:
                        stack.append(child)
            elif isinstance(item, list | tuple):
                stack.extend(item)

    def learn_paths(self, value: Any, sensitive: Iterable[str], prefix: str) -> None:
        """Learn the values at the ``sensitive`` paths that start with ``prefix``."""
        for path in sensitive:
            head, _, rest = path.partition(".")
            if head == prefix:
                for found in _at_path(value, rest):
                    self.learn(found)

    def observe_run(self, tx: Any) -> None:
        """Learn what the transaction holds that must be masked: its input, context
        and step outputs (each read once)."""
        nodes = tx.definition.nodes
        if self._seen.get("payload") is not tx.payload:
            self._seen["payload"] = tx.payload
            self.learn_keys(tx.payload)
            for node in nodes:
                self.learn_paths(tx.payload, node.options.sensitive, "input")
        if self._seen.get("context") is not tx.context:
            self._seen["context"] = tx.context
            self.learn_keys(tx.context)
        by_step_id = tx.definition.by_step_id
        for step_id, entry in tx.invoke.items():
            key = f"invoke:{step_id}"
            if self._seen.get(key) is entry:
                continue
            self._seen[key] = entry
            node = by_step_id.get(step_id)
            sensitive = node.options.sensitive if node is not None else ()
            for value in (entry.get("output"), entry.get("compensateInput")):
                self.learn_keys(value)
                self.learn_paths(value, sensitive, "output")

    # Masking

    def masked(self, value: Any, sensitive: Iterable[str] = (), prefix: str = "") -> Any:
        """``value`` with its ``sensitive`` paths under ``prefix`` masked (and learned),
        then everything this run masks."""
        if sensitive and prefix:
            self.learn_paths(value, sensitive, prefix)
            value = mask_sensitive(value, sensitive, prefix)
        return self(value)

    def __call__(self, value: Any) -> Any:
        self.learn_keys(value)
        return self._mask(value, self._secret_pattern())

    def text(self, value: str) -> str:
        pattern = self._secret_pattern()
        return value if pattern is None else pattern.sub(MASK, value)

    def _secret_pattern(self) -> re.Pattern[str] | None:
        if not self.secrets:
            return None
        with self._lock:
            if self._pattern is None:
                ordered = sorted(self.secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered))
            return self._pattern


_runs: weakref.WeakKeyDictionary[Any, RunRedactor] = weakref.WeakKeyDictionary()
_runs_lock = threading.Lock()


def for_run(tx: Any, keys: Iterable[str] | None = None) -> RunRedactor:
    """The redactor of a transaction, up to date with what the run holds."""
    with _runs_lock:
        redactor = _runs.get(tx)
        if redactor is None:
            redactor = RunRedactor(_configured_keys() if keys is None else keys)
            _runs[tx] = redactor
    redactor.observe_run(tx)
    return redactor


def for_result(result: Any) -> Redactor:
    """The redactor of the run a ``RunResult`` reports on."""
    tx = getattr(result, "transaction", None)
    return for_run(tx) if tx is not None else Redactor(_configured_keys())


def _configured_keys() -> Iterable[str]:
    from .conf import workflows_settings

    keys = workflows_settings.REDACT_KEYS
    return keys if isinstance(keys, list | tuple) else ()


def _at_path(value: Any, path: str) -> Iterator[Any]:
    """The values at the dotted ``path`` of ``value`` (``*`` walks every list item)."""
    if not path:
        yield value
        return
    head, _, rest = path.partition(".")
    if isinstance(value, dict) and head in value:
        yield from _at_path(value[head], rest)
    elif isinstance(value, list):
        if head == "*":
            for item in value:
                yield from _at_path(item, rest)
        elif head.isdigit() and int(head) < len(value):
            yield from _at_path(value[int(head)], rest)


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
