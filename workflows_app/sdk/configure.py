"""Options given at definition time: the name-or-config argument of ``create_step``
and ``create_workflow``, and step options checked and applied to one use of a step.

Shared by ``create_step`` and ``StepRef.config``; imports nothing else of the SDK, so
references and steps both use it without importing each other.
"""

from __future__ import annotations

from typing import Any

from ..orchestration import CompositionError, Operation, StepNode, check_step_options


def name_and_options(name_or_config: Any, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The name and options of ``create_step``/``create_workflow``, called with a name
    or with a config dict (``{"name": ..., **options}``); keywords win over the dict."""
    if not isinstance(name_or_config, dict):
        return name_or_config, options
    config = dict(name_or_config)
    name = config.pop("name", None)
    return name, {**config, **options}


def step_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """``options`` checked, with ``sensitive`` as a tuple."""
    check_step_options(options, where)
    clean = dict(options)
    if "sensitive" in clean:
        clean["sensitive"] = tuple(clean["sensitive"] or ())
    return clean


def configure_node(node: StepNode, name: str | None, options: dict[str, Any]) -> None:
    """Apply ``.config(name=..., **options)`` to one use of a step."""
    if name is not None:
        if not isinstance(name, str) or not name:
            raise CompositionError(".config(name=...) needs a non-empty string.")
        node.step_id = name
    if options:
        node.options = node.options.replace(**step_options(options, f".config() of {name}"))
        if "no_compensation" not in options and node.compensate_fn is None:
            node.options = node.options.replace(no_compensation=True)
        if node.operation == Operation.SUB_WORKFLOW and node.options.async_:
            node.options = node.options.replace(nested=True)
