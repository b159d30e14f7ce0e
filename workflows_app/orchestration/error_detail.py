"""The error record of an exception a step raised, with its traceback formatted late.

Formatting a traceback (reading source lines, placing the ``^^^`` markers) costs more
than running a small step, and most failures are compensated or retried without anyone
reading the text. :class:`ErrorDetail` is the ``{"message", "name", "stack"}`` dict of
an exception whose ``"stack"`` is computed the first time anything reads the dict
(a key, ``len``, iteration, ``json.dumps``, a copy, a pickle, ``==``): what is stored or
shown is the same text as formatting it at once, frozen at the traceback the exception
had when it was caught.
"""

from __future__ import annotations

import copy
import traceback
from types import TracebackType
from typing import Any


class ErrorDetail(dict):
    """``{"message", "name", "stack"}`` of an exception; ``stack`` is formatted on first read."""

    __slots__ = ("_pending",)

    def __init__(self, exception: BaseException, message: str, name: str) -> None:
        super().__init__(message=message, name=name)
        # The traceback as it is now: re-raising the exception later extends its
        # __traceback__, not this chain.
        self._pending: tuple[BaseException, TracebackType | None, str] | None = (
            exception,
            exception.__traceback__,
            "",
        )

    def append_to_stack(self, text: str) -> None:
        """Add ``text`` after the traceback (e.g. where in the workflow it happened)."""
        pending = self._pending
        if pending is None:
            dict.__setitem__(self, "stack", dict.__getitem__(self, "stack") + text)
        else:
            self._pending = (pending[0], pending[1], pending[2] + text)

    @property
    def formatted(self) -> bool:
        """Whether ``stack`` has been computed."""
        return self._pending is None

    def _resolve(self) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            exception, tb, suffix = pending
            lines = traceback.format_exception(type(exception), exception, tb)
            dict.__setitem__(self, "stack", "".join(lines).rstrip() + suffix)

    # Reading "message" or "name" does not need the stack.

    def __getitem__(self, key: Any) -> Any:
        if key == "stack":
            self._resolve()
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        if key == "stack":
            self._resolve()
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        return (key == "stack" and self._pending is not None) or dict.__contains__(self, key)

    # Copies and pickles are plain dicts, formatted.

    def __reduce_ex__(self, protocol: Any) -> tuple:
        self._resolve()
        return (dict, (dict(dict.items(self)),))

    def __reduce__(self) -> tuple:
        return self.__reduce_ex__(None)

    def __copy__(self) -> dict:
        self._resolve()
        return dict(dict.items(self))

    def __deepcopy__(self, memo: dict) -> dict:
        return copy.deepcopy(self.__copy__(), memo)


def _resolving(name: str) -> Any:
    method = getattr(dict, name)

    def call(self: ErrorDetail, *args: Any, **kwargs: Any) -> Any:
        self._resolve()
        return method(self, *args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    return call


# Every other way of reading or changing the dict formats the stack first.
for _name in (
    "__setitem__",
    "__delitem__",
    "__iter__",
    "__reversed__",
    "__len__",
    "__repr__",
    "__eq__",
    "__ne__",
    "__or__",
    "__ror__",
    "__ior__",
    "keys",
    "values",
    "items",
    "copy",
    "pop",
    "popitem",
    "setdefault",
    "update",
    "clear",
):
    setattr(ErrorDetail, _name, _resolving(_name))
ErrorDetail.__hash__ = None  # type: ignore[assignment]
