"""Small utilities for the storage tests: unique names, counted steps, row dumps."""

from __future__ import annotations

import json
import threading
from collections import Counter

from tests.support import uname as uname
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.sdk import StepResponse, create_step, create_workflow


class Calls:
    """Thread-safe counter of handler calls, keyed by ``(kind, step)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counter: Counter = Counter()

    def hit(self, kind: str, name: str) -> None:
        with self._lock:
            self.counter[(kind, name)] += 1

    def invoked(self, name: str) -> int:
        return self.counter[("invoke", name)]

    def compensated(self, name: str) -> int:
        return self.counter[("compensate", name)]

    def total(self, kind: str = "invoke") -> int:
        return sum(n for (k, _), n in self.counter.items() if k == kind)


def counted_step(name: str, calls: Calls, *, fail: bool = False, **options):
    """A step ``n -> n + 1`` with a compensation, both counted in ``calls``."""

    def invoke(value, ctx):
        calls.hit("invoke", name)
        if fail:
            raise ValueError(f"{name} exploded")
        number = value if isinstance(value, int) else 0
        return StepResponse(number + 1, {"undo": name})

    def compensate(data, ctx):
        calls.hit("compensate", name)

    return create_step(name, invoke, compensate, **options)


def chain_workflow(
    n: int,
    calls: Calls,
    *,
    fail_last: bool = False,
    prefix: str = "chain",
    step_options: dict | None = None,
    **wf,
):
    """A registered workflow of ``n`` counted steps in sequence (each created with
    ``step_options``); returns (name, step names)."""
    name = uname(prefix)
    names = [f"{name}-s{i}" for i in range(1, n + 1)]
    steps = [
        counted_step(step, calls, fail=fail_last and i == n - 1, **(step_options or {}))
        for i, step in enumerate(names)
    ]

    def compose(input):
        value = input
        for step in steps:
            value = step(value)
        return value

    create_workflow(name, compose, **wf)
    return name, names


def rows(workflow_id: str):
    return list(WorkflowExecution.objects.filter(workflow_id=workflow_id).order_by("created_at"))


def step_rows(execution: WorkflowExecution):
    return list(StepExecution.objects.filter(execution=execution).order_by("id"))


def _columns(instance) -> dict:
    fields = instance._meta.concrete_fields
    return {field.attname: getattr(instance, field.attname) for field in fields}


def dump_steps(execution: WorkflowExecution) -> str:
    """Every column of the execution's step rows, as one JSON text."""
    return json.dumps([_columns(step) for step in step_rows(execution)], default=str)


def dump_row(execution: WorkflowExecution) -> str:
    """Every column of the execution row and of its step rows, as one JSON text."""
    steps = [_columns(step) for step in step_rows(execution)]
    return json.dumps({"execution": _columns(execution), "steps": steps}, default=str)


def paths_holding(value, needle: str, path: str = "$") -> list[str]:
    """The JSON paths in ``value`` whose string value (or key) contains ``needle``."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if needle in str(key):
                found.append(f"{path}.{key} (key)")
            found += paths_holding(item, needle, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found += paths_holding(item, needle, f"{path}[{i}]")
    elif needle in str(value):
        found.append(path)
    return found
