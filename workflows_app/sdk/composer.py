"""The composition context and the composer's building blocks.

While a composer runs, a ``Composition`` collects the steps it calls into a tree the
way Medusa does: every step is appended after the last one, ``parallelize`` turns
steps into siblings, and ``when`` attaches a condition to the steps created in its
``then`` callback.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

from ulid import ULID

from ..orchestration import CompositionError, StepNode
from .references import InputRef, Reference, StepRef, TransformRef, compile_value

_state = threading.local()


class Composition:
    """What a composer has built so far."""

    def __init__(self, workflow_name: str):
        self.workflow_name = workflow_name
        self.roots: list[StepNode] = []
        self.last: StepNode | None = None
        self.conditions: list[Callable[[Any], bool]] = []
        self.hooks: dict[str, Hook] = {}
        self.input = InputRef()
        self.is_async = False

    def append(self, node: StepNode) -> StepRef:
        if self.conditions:
            node.conditions = node.conditions + tuple(self.conditions)
        if self.last is None:
            self.roots.append(node)
        else:
            self.last.tree_children.append(node)
        node.tree_parent = self.last
        self.last = node
        return StepRef(node)

    def siblings_of(self, node: StepNode) -> list[StepNode]:
        parent = node.tree_parent
        return self.roots if parent is None else parent.tree_children


def current(what: str) -> Composition:
    """The active composition, or a clear error when there is none."""
    composition = getattr(_state, "composition", None)
    if composition is None:
        raise CompositionError(
            f"{what} can only be used inside a workflow composer (create_workflow)."
        )
    return composition


def active() -> Composition | None:
    return getattr(_state, "composition", None)


class composing:
    """Context manager that makes a composition the active one for this thread."""

    def __init__(self, composition: Composition):
        self.composition = composition
        self.previous: Composition | None = None

    def __enter__(self) -> Composition:
        self.previous = getattr(_state, "composition", None)
        _state.composition = self.composition
        return self.composition

    def __exit__(self, *exc_info: Any) -> None:
        _state.composition = self.previous


def transform(values: Any, *functions: Callable[[Any], Any]) -> TransformRef:
    """A value computed at run time from ``values`` by ``functions``, in order."""
    if not functions:
        raise CompositionError("transform() needs at least one function.")
    for function in functions:
        if not callable(function):
            raise CompositionError("transform() functions must be callable.")
    return TransformRef(values, functions)


def parallelize(*refs: StepRef) -> tuple[StepRef, ...]:
    """Run the given steps concurrently; the step after them waits for all of them."""
    composition = current("parallelize()")
    if not refs:
        return ()
    nodes = []
    for ref in refs:
        if not isinstance(ref, StepRef):
            raise CompositionError(
                "parallelize() takes the references returned by step calls, "
                f"not {type(ref).__name__}."
            )
        nodes.append(ref._node)
    first = nodes[0]
    target = composition.siblings_of(first)
    parent = first.tree_parent
    for node in nodes[1:]:
        composition.siblings_of(node).remove(node)
        target.append(node)
        node.tree_parent = parent
    composition.last = nodes[-1]
    return tuple(refs)


class When:
    """``when(values, condition)``: waits for ``.then(fn)``."""

    def __init__(self, name: str | None, values: Any, condition: Callable[[Any], bool]):
        if not callable(condition):
            raise CompositionError('"when condition" must be a function')
        self.name = name
        self.values = values
        self.condition = condition
        self.composition = current("when()")

    def then(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (which calls steps); those steps run only when the condition holds."""
        composition = self.composition
        values = compile_value(self.values)
        condition = self.condition

        def check(tx: Any) -> bool:
            return bool(condition(values(tx)))

        composition.conditions.append(check)
        try:
            result = fn()
            if result is None or isinstance(result, StepRef):
                return result
            name = self.name
            if name is None:
                name = f"when-then-{ULID()}"
                warnings.warn(
                    "when() without a name returned a value: its wrapper step is named "
                    f"{name!r} at random. Give when() a name so resumed runs find it.",
                    stacklevel=2,
                )
            return composition.append(_value_step(name, result, "when"))
        finally:
            composition.conditions.remove(check)


def when(*args: Any) -> When:
    """``when(values, condition)`` or ``when(name, values, condition)``."""
    if len(args) == 2:
        return When(None, args[0], args[1])
    if len(args) == 3:
        if not isinstance(args[0], str):
            raise CompositionError("when(name, values, condition): the name must be a string.")
        return When(args[0], args[1], args[2])
    raise CompositionError("when() takes (values, condition) or (name, values, condition).")


def _value_step(name: str, value: Any, operation: str) -> StepNode:
    resolver = compile_value(value)
    node = StepNode(step_id=name, invoke_fn=None, operation=operation, resolve_input=resolver)
    node.set_handlers(_return_input, None)
    return node


def _return_input(value: Any, ctx: Any) -> Any:
    return value


def _hook_noop(value: Any, ctx: Any) -> None:
    return None


class Hook:
    """A named extension point: a step whose handler other code registers later."""

    def __init__(self, name: str, node: StepNode, result_validator: Any):
        self.name = name
        self.node = node
        self.result_validator = result_validator
        self.registered = False
        self.ref = StepRef(node)

    def register(
        self, invoke: Callable[..., Any], compensate: Callable[..., Any] | None = None
    ) -> None:
        if self.registered:
            raise CompositionError(f"Cannot define multiple hook handlers for the {self.name} hook")
        if not callable(invoke):
            raise CompositionError(f"The {self.name} hook handler must be callable.")
        self.node.set_handlers(invoke, compensate)
        self.registered = True

    def get_result(self) -> StepRef:
        """A reference to the handler's result (``None`` when no handler is registered)."""
        composition = current("Hook.get_result()")
        hook = self
        hook_output = self.ref._resolver()

        def read_result(value: Any, ctx: Any) -> Any:
            result = hook_output(ctx._transaction)
            if hook.registered and hook.result_validator is not None:
                validated = hook.result_validator(result)
                return result if validated is None else validated
            return result

        node = StepNode(step_id=f"get-{self.name}-result", invoke_fn=None, operation="hook")
        node.set_handlers(read_result, None)
        return composition.append(node)

    def __repr__(self) -> str:
        return f"<Hook {self.name}>"


def create_hook(name: str, input: Any = None, result_validator: Any = None) -> Hook:
    """Insert a hook step named ``name`` that receives ``input``."""
    composition = current("create_hook()")
    if name in composition.hooks:
        raise CompositionError(f"The hook {name} is already defined in this workflow.")
    node = StepNode(
        step_id=name, invoke_fn=None, operation="hook", resolve_input=compile_value(input)
    )
    node.set_handlers(_hook_noop, None)
    node.options = node.options.replace(no_compensation=False)
    hook = Hook(name, node, result_validator)
    composition.append(node)
    composition.hooks[name] = hook
    return hook


class WorkflowResponse:
    """What a composer returns: the run's result, and the hooks it exposes."""

    def __init__(self, result: Any = None, hooks: list[Hook] | None = None):
        self.result = result
        self.hooks = list(hooks or [])

    def __repr__(self) -> str:
        return f"WorkflowResponse({self.result!r})"


__all__ = [
    "Composition",
    "Hook",
    "Reference",
    "WorkflowResponse",
    "create_hook",
    "parallelize",
    "transform",
    "when",
]
