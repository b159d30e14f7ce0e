"""References: the placeholders a composer works with instead of data.

A composer runs once, at definition time, so what a step returns there is a
reference to a value that will exist at run time. Attribute and item access build
lazy lookups. Anything that would need the value now (truth tests, iteration,
comparisons) raises ``CompositionError`` pointing at ``when()`` and ``transform()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..orchestration import CompositionError, StepNode
from .configure import configure_node

Resolver = Callable[[Any], Any]

_GUARD_MESSAGE = (
    "{what} a workflow reference at composition time is not possible: the composer runs "
    "once, when the workflow is defined, and references only hold values when it runs. "
    "Use when() to run steps conditionally and transform() to compute with values."
)


def _refuse(what: str) -> CompositionError:
    return CompositionError(_GUARD_MESSAGE.format(what=what))


class Reference:
    """Base of every composition-time placeholder."""

    __slots__ = ()

    def _resolver(self) -> Resolver:
        raise NotImplementedError

    def __getattr__(self, name: str) -> PropertyRef:
        if name.startswith("_"):
            raise AttributeError(name)
        return PropertyRef(self, name)

    def __getitem__(self, key: Any) -> PropertyRef:
        return PropertyRef(self, key)

    def __bool__(self) -> bool:
        raise _refuse("Testing the truth of")

    def __iter__(self):
        raise _refuse("Iterating over")

    def __len__(self) -> int:
        raise _refuse("Taking the length of")

    def __contains__(self, item: Any) -> bool:
        raise _refuse("Testing membership in")

    def __eq__(self, other: Any) -> bool:
        raise _refuse("Comparing")

    def __ne__(self, other: Any) -> bool:
        raise _refuse("Comparing")

    def __lt__(self, other: Any) -> bool:
        raise _refuse("Comparing")

    def __le__(self, other: Any) -> bool:
        raise _refuse("Comparing")

    def __gt__(self, other: Any) -> bool:
        raise _refuse("Comparing")

    def __ge__(self, other: Any) -> bool:
        raise _refuse("Comparing")

    def __hash__(self) -> int:
        return id(self)

    def __index__(self) -> int:
        raise _refuse("Using as an index")

    def __int__(self) -> int:
        raise _refuse("Converting")

    def __float__(self) -> float:
        raise _refuse("Converting")

    def __str__(self) -> str:
        return repr(self)


class InputRef(Reference):
    """The workflow's input (``context.payload``)."""

    __slots__ = ()

    def _resolver(self) -> Resolver:
        return _payload

    def __repr__(self) -> str:
        return "<workflow input>"


def _payload(tx: Any) -> Any:
    return tx.payload


class StepRef(Reference):
    """The output of one step of the workflow."""

    __slots__ = ("_node",)

    def __init__(self, node: StepNode):
        object.__setattr__(self, "_node", node)

    def _resolver(self) -> Resolver:
        node = self._node

        def step_output(tx: Any) -> Any:
            entry = tx.invoke.get(node.step_id)
            return None if entry is None else entry["output"]

        return step_output

    def config(self, name: str | None = None, **options: Any) -> StepRef:
        """Rename or re-configure this one use of the step."""
        configure_node(self._node, name, options)
        return self

    def __repr__(self) -> str:
        return f"<output of step {self._node.step_id!r}>"


class PropertyRef(Reference):
    """``parent.attr`` or ``parent[key]`` resolved at run time (missing -> ``None``)."""

    __slots__ = ("_key", "_parent")

    def __init__(self, parent: Reference, key: Any):
        object.__setattr__(self, "_parent", parent)
        object.__setattr__(self, "_key", key)

    def _resolver(self) -> Resolver:
        parent = self._parent._resolver()
        key = self._key

        def lookup(tx: Any) -> Any:
            return _get(parent(tx), key)

        return lookup

    def __repr__(self) -> str:
        return f"{self._parent!r}[{self._key!r}]"


def _get(value: Any, key: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get(key)
    if isinstance(value, list | tuple):
        if isinstance(key, int) and -len(value) <= key < len(value):
            return value[key]
        return None
    if isinstance(key, str):
        return getattr(value, key, None)
    return None


class TransformRef(Reference):
    """``transform(values, fn1, fn2, ...)``: computed when consumed, once per run."""

    __slots__ = ("_functions", "_values")

    def __init__(self, values: Any, functions: tuple[Callable[[Any], Any], ...]):
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_functions", functions)

    def _resolver(self) -> Resolver:
        values = compile_value(self._values)
        functions = self._functions
        key = id(self)

        def compute(tx: Any) -> Any:
            cache = tx.transform_cache
            if key in cache:
                return cache[key]
            result = values(tx)
            for function in functions:
                result = function(result)
            cache[key] = result
            return result

        return compute

    def __repr__(self) -> str:
        names = ", ".join(getattr(f, "__name__", "?") for f in self._functions)
        return f"<transform {names}>"


def contains_reference(value: Any) -> bool:
    if isinstance(value, Reference):
        return True
    if isinstance(value, dict):
        return any(contains_reference(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_reference(v) for v in value)
    return False


def compile_value(value: Any) -> Resolver:
    """Build the function that turns ``value`` (references mixed with data) into data."""
    if isinstance(value, Reference):
        return value._resolver()
    if not contains_reference(value):
        return lambda tx: value
    if isinstance(value, dict):
        items = [(k, compile_value(v)) for k, v in value.items()]
        return lambda tx: {k: f(tx) for k, f in items}
    parts = [compile_value(v) for v in value]
    return lambda tx: [f(tx) for f in parts]
