"""``create_step``: a unit of work with its compensation and its options."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..orchestration import CompositionError, StepNode, StepOptions, check_step_options
from .composer import current
from .configure import name_and_options, step_options
from .references import StepRef, compile_value

_NO_INPUT: Any = object()


class Step:
    """A step definition; calling it inside a composer adds one use of it to the flow."""

    def __init__(
        self,
        name: str,
        invoke: Callable[..., Any] | None,
        compensate: Callable[..., Any] | None,
        options: dict[str, Any],
    ):
        if not name or not isinstance(name, str):
            raise CompositionError("A step needs a name (a non-empty string).")
        self.name = name
        self.invoke_fn = invoke
        self.compensate_fn = compensate
        self.options = StepOptions(**step_options(options, f"create_step({name!r})"))

    def compensate(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator form: register ``fn`` as this step's compensation."""
        self.compensate_fn = fn
        return fn

    def __call__(self, input: Any = _NO_INPUT) -> StepRef:
        composition = current(f"Step {self.name!r}")
        if self.invoke_fn is None:
            raise CompositionError(f"Step {self.name!r} has no invoke function.")
        # As in Medusa, a step called without input receives an empty dict.
        value = {} if input is _NO_INPUT else input
        node = StepNode(
            step_id=self.name,
            invoke_fn=None,
            options=self.options,
            resolve_input=compile_value(value),
        )
        node.set_handlers(self.invoke_fn, self.compensate_fn)
        if self.compensate_fn is None and not node.options.no_compensation:
            node.options = node.options.replace(no_compensation=True)
        node.extra["step"] = self
        return composition.append(node)

    def __repr__(self) -> str:
        return f"<Step {self.name}>"


def create_step(
    name_or_config: str | dict[str, Any] | Callable[..., Any],
    invoke: Callable[..., Any] | None = None,
    compensate: Callable[..., Any] | None = None,
    **options: Any,
) -> Any:
    """Define a step. Without ``invoke`` it returns a decorator that takes the function."""
    if callable(name_or_config) and not isinstance(name_or_config, dict):
        function = name_or_config
        return Step(function.__name__, function, compensate, options)
    name, options = name_and_options(name_or_config, options)
    if invoke is None:
        check_step_options(options, f"create_step({name!r})")

        def decorate(function: Callable[..., Any]) -> Step:
            return Step(name or function.__name__, function, compensate, options)

        return decorate
    return Step(name, invoke, compensate, options)
