"""The compiled form of a workflow: steps as nodes of a dependency graph.

The SDK's composer builds a tree the way Medusa does (each step is appended after
the last one; ``parallelize`` makes siblings). ``FlowDefinition.compile`` turns it
into per-node dependency counts and successor lists, computed once, so that running
a step never walks the whole flow (SPEC 3.2).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import CompositionError
from .states import Operation

ROOT_ID = "_root"
#: Levels of ``next`` nesting in a described definition (see ``FlowDefinition.describe``).
DESCRIBE_DEPTH = 100
#: Longest step path (``"_root.a.b"``: the step's position) a stored run can record;
#: a stored workflow with a longer one is refused when it is defined.
MAX_STEP_PATH = 1024


@dataclass(slots=True)
class StepOptions:
    """Per-use step options (Medusa's step config, in snake_case)."""

    max_retries: int = 0
    auto_retry: bool = True
    retry_interval: float | None = None
    retry_interval_awaiting: float | None = None
    max_awaiting_retries: int | None = None
    timeout: float | None = None
    async_: bool = False
    background_execution: bool = False
    compensate_async: bool = False
    no_compensation: bool = False
    continue_on_permanent_failure: bool = False
    skip_on_permanent_failure: bool | str = False
    no_wait: bool = False
    save_response: bool = True
    nested: bool = False
    sensitive: tuple[str, ...] = ()
    # A plain-function handler that waits (network, disk): in a parallel group it runs
    # on the thread pool; other plain functions run on the calling thread.
    io_bound: bool = False

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    def replace(self, **changes: Any) -> StepOptions:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return StepOptions(**values)

    def to_definition(self) -> dict:
        """The options as camelCase keys, for the flow's ``definition`` entries."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                key = "async" if f.name == "async_" else _camel(f.name)
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


STEP_OPTION_NAMES = StepOptions.names()


def check_step_options(options: dict[str, Any], where: str) -> None:
    """Refuse unknown option names at definition time."""
    unknown = sorted(set(options) - STEP_OPTION_NAMES - {"name"})
    if unknown:
        raise TypeError(
            f"{where}: unknown step option(s) {', '.join(unknown)}; "
            f"valid options are {', '.join(sorted(STEP_OPTION_NAMES))}"
        )


def _identity(tx: Any) -> Any:
    return None


@dataclass(eq=False, slots=True)
class StepNode:
    """One step of a flow, with everything the orchestrator needs precomputed."""

    step_id: str
    invoke_fn: Callable[..., Any] | None
    compensate_fn: Callable[..., Any] | None = None
    options: StepOptions = field(default_factory=StepOptions)
    operation: str = Operation.STEP
    resolve_input: Callable[[Any], Any] = _identity
    conditions: tuple[Callable[[Any], bool], ...] = ()
    # Set by FlowDefinition.compile:
    index: int = -1
    id: str = ""
    depth: int = 0
    tree_children: list[StepNode] = field(default_factory=list)
    tree_parent: StepNode | None = None
    deps_count: int = 0
    dependents: tuple[int, ...] = ()
    comp_after: tuple[int, ...] = ()
    comp_before: tuple[int, ...] = ()
    invoke_is_async: bool = False
    compensate_is_async: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # The handler writes storage rows as it runs (a loop's iterations): it stays on the
    # thread that holds the run instead of going to a pool thread.
    runs_on_caller: bool = False
    _definition: tuple[Any, dict] | None = None

    def set_handlers(self, invoke_fn: Callable[..., Any] | None, compensate_fn: Any) -> None:
        self.invoke_fn = invoke_fn
        self.compensate_fn = compensate_fn
        self.invoke_is_async = inspect.iscoroutinefunction(invoke_fn)
        self.compensate_is_async = inspect.iscoroutinefunction(compensate_fn)

    def definition(self) -> dict:
        """The step's config as camelCase keys (cached: the flow JSON repeats it)."""
        key = (self.step_id, self.options, self.compensate_fn is None, self.operation)
        cached = self._definition
        if cached is not None and all(a is b for a, b in zip(cached[0], key, strict=True)):
            return dict(cached[1])
        data = {"stepId": self.step_id, "name": self.step_id, **self.options.to_definition()}
        data["noCompensation"] = self.options.no_compensation or self.compensate_fn is None
        if self.operation != Operation.STEP:
            data["operation"] = self.operation
        self._definition = (key, data)
        return dict(data)


class FlowDefinition:
    """A compiled workflow: nodes in definition order plus the options of the workflow."""

    def __init__(self, workflow_id: str, roots: list[StepNode], options: dict[str, Any]):
        self.workflow_id = workflow_id
        self.options = options
        self.roots = roots
        self.result_resolver: Callable[[Any], Any] | None = None
        self.nodes: list[StepNode] = []
        self.by_step_id: dict[str, StepNode] = {}
        self._compile()
        self.root_indices = tuple(n.index for n in self.nodes if n.deps_count == 0)
        self.deps_counts = [n.deps_count for n in self.nodes]
        self.has_async = any(n.options.async_ or n.options.compensate_async for n in self.nodes)
        self.hash = self._hash()

    def _compile(self) -> None:
        order: list[StepNode] = []

        # Depth first, in definition order, without recursion: a chain of steps is a
        # tree as deep as it is long.
        pending: list[tuple[StepNode, StepNode | None]] = [(r, None) for r in reversed(self.roots)]
        while pending:
            node, parent = pending.pop()
            if node.step_id in self.by_step_id:
                raise CompositionError(f"Step {node.step_id} is already defined in workflow.")
            node.id = f"{parent.id if parent else ROOT_ID}.{node.step_id}"
            node.depth = parent.depth + 1 if parent else 1
            node.tree_parent = parent
            node.index = len(order)
            self.by_step_id[node.step_id] = node
            order.append(node)
            pending.extend((child, node) for child in reversed(node.tree_children))
        self.nodes = order

        # A parent comes before its children in ``order``: its dependencies are known.
        deps: list[set[int]] = [set() for _ in order]
        for node in order:
            parent = node.tree_parent
            if parent is None:
                continue
            if parent.options.no_wait:
                deps[node.index] = set(deps[parent.index])
            else:
                siblings = parent.tree_parent.tree_children if parent.tree_parent else self.roots
                deps[node.index] = {s.index for s in siblings}
        dependents: list[set[int]] = [set() for _ in order]
        comp_after: list[set[int]] = [set() for _ in order]
        for node in order:
            for d in deps[node.index]:
                dependents[d].add(node.index)
                comp_after[d].add(node.index)
            for child in node.tree_children:
                comp_after[node.index].add(child.index)
        comp_before: list[set[int]] = [set() for _ in order]
        for i, after in enumerate(comp_after):
            for j in after:
                comp_before[j].add(i)
        for node in order:
            node.deps_count = len(deps[node.index])
            node.dependents = tuple(sorted(dependents[node.index]))
            node.comp_after = tuple(sorted(comp_after[node.index]))
            node.comp_before = tuple(sorted(comp_before[node.index]))

    def describe(self) -> dict:
        """The nested definition tree (Medusa's ``definition`` shape), built without
        recursion. Nesting stops at :data:`DESCRIBE_DEPTH` levels, which JSON encoders
        and readers handle: a step at that depth has ``"next": {"continuesAt": <step
        id>}`` (a list of them for parallel steps), and the steps from there on are
        in the flat step list (the flow's ``steps``, the description's ``steps``)."""
        top: dict = {}
        pending: list[tuple[dict, list[StepNode], int]] = [(top, self.roots, 0)]
        while pending:
            holder, kids, depth = pending.pop()
            if not kids:
                continue
            if depth >= DESCRIBE_DEPTH:
                entries = [{"continuesAt": kid.id} for kid in kids]
            else:
                entries = [kid.definition() for kid in kids]
                pending.extend(
                    (entry, kid.tree_children, depth + 1)
                    for entry, kid in zip(entries, kids, strict=True)
                )
            holder["next"] = entries[0] if len(entries) == 1 else entries
        return top

    def _hash(self) -> str:
        """Identity of the step graph; over its description when that nests it whole
        (the hash stored runs were started with), else over the flat step list."""
        if max((n.depth for n in self.nodes), default=0) <= DESCRIBE_DEPTH:
            shape: Any = self.describe()
        else:
            shape = [(n.id, n.definition()) for n in self.nodes]
        return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()

    def signature(self) -> str:
        """Identity of the definition, ignoring handler object identity (for re-registration)."""

        def fn_name(fn: Any) -> str:
            return getattr(fn, "__qualname__", repr(type(fn))) if fn else ""

        parts = [
            (n.id, n.operation, fn_name(n.invoke_fn), fn_name(n.compensate_fn), n.definition())
            for n in self.nodes
        ]
        return json.dumps([parts, self.options], sort_keys=True, default=str)
