"""The workflow registry: one name, one definition, for the process."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..orchestration import CompositionError, WorkflowNotFound

if TYPE_CHECKING:
    from .workflows import Workflow


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.workflows: dict[str, Workflow] = {}

    def register(self, workflow: Workflow) -> Workflow:
        with self._lock:
            existing = self.workflows.get(workflow.name)
            if existing is not None and existing.signature != workflow.signature:
                raise CompositionError(
                    f'Workflow with id "{workflow.name}" and step definition already exists.'
                )
            self.workflows[workflow.name] = workflow
        return workflow

    def get(self, name: str) -> Workflow:
        try:
            return self.workflows[name]
        except KeyError:
            raise WorkflowNotFound(f"No workflow is registered under the name {name!r}.") from None


registry = _Registry()


def get_workflow(name: str) -> Workflow:
    """The registered workflow called ``name`` (``WorkflowNotFound`` otherwise)."""
    return registry.get(name)


def list_workflows() -> list[Workflow]:
    """Every registered workflow, by name."""
    return [registry.workflows[name] for name in sorted(registry.workflows)]
