"""Server-side SVG drawings for the admin: the step graph and the attempts Gantt chart.

Pure functions over plain data (a stored flow read through :mod:`.presentation`, the
description of a definition, step attempts). Nothing here imports Django. Every piece of text put in
the SVG goes through :func:`html.escape`, so the returned strings are safe to insert
into a page as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

from .orchestration.states import AttemptStatus, HandlerType, Operation, StepState
from .presentation import display_state, flow_steps, state_label, step_id_of

#: Colour names of the admin palette (Medusa's dashboard: green, red, orange, grey).
PALETTE: dict[str, tuple[str, str]] = {
    # name: (fill, stroke)
    "green": ("#dcfce7", "#16a34a"),
    "red": ("#fee2e2", "#dc2626"),
    "orange": ("#ffedd5", "#ea580c"),
    "grey": ("#f3f4f6", "#6b7280"),
    "neutral": ("#f8fafc", "#94a3b8"),
}

#: Transaction state -> colour of its badge (Medusa's ``getTransactionStateColor``).
TRANSACTION_STATE_COLOURS: dict[str, str] = {
    "done": "green",
    "failed": "red",
    "reverted": "red",
    "invoking": "orange",
    "waiting_to_compensate": "orange",
    "compensating": "orange",
    "not_started": "green",
}

#: Step state -> colour of its node in the timeline and its dot in the history.
STEP_STATE_COLOURS: dict[str, str] = {
    "done": "green",
    "invoking": "orange",
    "compensating": "orange",
    "waiting": "orange",
    "failed": "red",
    "reverted": "red",
    "timeout": "red",
    "dormant": "red",
    "skipped": "neutral",
    "skipped_failure": "neutral",
    "not_started": "grey",
}


_ANCHOR_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")


def html_id(prefix: str, name: str) -> str:
    """``prefix-name`` usable as an HTML id (unsafe characters replaced by ``-``)."""
    return f"{prefix}-" + _ANCHOR_UNSAFE.sub("-", str(name))


def step_anchor(step_id: str) -> str:
    """The HTML id of a step's history entry: ``step-<step_id>``."""
    return html_id("step", step_id)


def step_colour(state: str) -> str:
    return STEP_STATE_COLOURS.get(state, "grey")


def transaction_colour(state: str) -> str:
    return TRANSACTION_STATE_COLOURS.get(state, "grey")


@dataclass
class Node:
    """One box of the step graph."""

    id: str
    label: str
    depth: int
    next: list[str] = field(default_factory=list)
    state: str = "not_started"
    state_label: str = ""
    href: str | None = None
    title: str = ""

    @classmethod
    def at(cls, path: str, step: Mapping[str, Any], step_id: str, **shown: Any) -> Node:
        """The box of the step at ``path``, with its depth and next steps from ``step``
        (a stored flow's entry or a described step: both have ``depth`` and ``next``)."""
        depth = int(step.get("depth") or path.count("."))
        following = [str(n) for n in step.get("next") or []]
        return cls(id=path, label=step_id, depth=depth, next=following, **shown)


def nodes_from_flow(execution: Mapping[str, Any] | None, link: bool = True) -> list[Node]:
    """Graph nodes of a stored execution, coloured by :func:`display_state`."""
    nodes = []
    for sid, step in flow_steps(execution):
        step_id = step_id_of(sid, step)
        state = display_state(step)
        nodes.append(
            Node.at(
                sid,
                step,
                step_id,
                state=state,
                state_label=state_label(state),
                href="#" + step_anchor(step_id) if link else None,
                title=f"{step_id}: {state_label(state)}",
            )
        )
    return nodes


def nodes_from_description(steps: Iterable[Mapping[str, Any]]) -> list[Node]:
    """Graph nodes of a workflow definition (``workflow_engine.describe(...)["steps"]``)."""
    nodes = []
    for step in steps:
        sid = str(step["id"])
        step_id = str(step.get("step_id") or sid.rsplit(".", 1)[-1])
        operation = str(step.get("operation") or Operation.STEP)
        nodes.append(
            Node.at(
                sid,
                step,
                step_id,
                state=StepState.NOT_STARTED,
                state_label="" if operation == Operation.STEP else operation,
                title=step_id if operation == Operation.STEP else f"{step_id} ({operation})",
            )
        )
    return nodes


# Layout constants of the step graph (pixels). Nodes are as wide as the longest label
# needs (about 8 px a character at 13 px bold), between NODE_MIN_W and NODE_MAX_W.
NODE_MIN_W = 150
NODE_MAX_W = 280
CHAR_W = 8.0
NODE_H = 46
GAP_X = 48
GAP_Y = 18
BAND_GAP = 34
PAD = 16
ARROW = 7
LANE = 12

#: Widths the graph is laid out for: the detail column of the admin at 1440 px (about
#: 1,000 px with the navigation sidebar open) and at 800 px (about 700 px). The page
#: shows the one that fits its container (a CSS container query); a drawing wider than
#: its container is scaled down, never cut.
GRAPH_WIDTHS: tuple[tuple[str, int], ...] = (("wide", 1000), ("narrow", 680))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass
class Layout:
    """Where each node of a step graph sits, and the size of the drawing."""

    node_w: int
    width: int
    height: int
    position: dict[str, tuple[int, int]]
    band: dict[str, int]
    rightward: list[bool]


def layout(nodes: Sequence[Node], max_width: int) -> Layout:
    """Layers (steps of equal depth, stacked) left to right, wrapped into bands.

    As many layers as fit in ``max_width`` form a band; bands run alternately left to
    right and right to left (a snake), so that the last layer of a band sits above the
    first of the next one and every arrow stays short.
    """
    depths = sorted({n.depth for n in nodes})
    layers: list[list[Node]] = [[] for _ in depths]
    index_of = {d: i for i, d in enumerate(depths)}
    for node in nodes:
        layers[index_of[node.depth]].append(node)
    longest = max(len(n.label) for n in nodes)
    node_w = int(min(max(38 + longest * CHAR_W, NODE_MIN_W), NODE_MAX_W))
    per_band = max(1, (max_width - 2 * PAD + GAP_X) // (node_w + GAP_X))
    per_band = min(per_band, len(layers))
    width = PAD * 2 + per_band * node_w + (per_band - 1) * GAP_X
    position: dict[str, tuple[int, int]] = {}
    band_of: dict[str, int] = {}
    rightward: list[bool] = []
    top = PAD
    for band_no, first in enumerate(range(0, len(layers), per_band)):
        members = layers[first : first + per_band]
        forward = band_no % 2 == 0
        rightward.append(forward)
        rows = max(len(layer) for layer in members)
        band_h = rows * NODE_H + (rows - 1) * GAP_Y
        for j, layer in enumerate(members):
            column = j if forward else per_band - 1 - j
            offset = (rows - len(layer)) * (NODE_H + GAP_Y) // 2
            for row, node in enumerate(layer):
                position[node.id] = (
                    PAD + column * (node_w + GAP_X),
                    top + offset + row * (NODE_H + GAP_Y),
                )
                band_of[node.id] = band_no
        top += band_h + BAND_GAP
    height = top - BAND_GAP + PAD
    return Layout(node_w, width, height, position, band_of, rightward)


def _edge(plan: Layout, source: str, target: str) -> str:
    """A curve from ``source`` to ``target`` with an arrowhead drawn as a triangle.

    Within a band the curve joins the facing sides. Across bands the line leaves the
    source on its outer side, runs down a lane beside it (not through the steps stacked
    below it) and enters the top of the target.
    """
    (x1, y1), (x2, y2) = plan.position[source], plan.position[target]
    w, h = plan.node_w, NODE_H
    if plan.band[source] == plan.band[target]:
        forward = x2 >= x1
        sx, sy = (x1 + w, y1 + h // 2) if forward else (x1, y1 + h // 2)
        ex, ey = (x2 - 2, y2 + h // 2) if forward else (x2 + w + 2, y2 + h // 2)
        mid = (sx + ex) // 2
        curve = f"M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}"
        back = -ARROW if forward else ARROW
        head = f"{ex},{ey} {ex + back},{ey - ARROW // 2 - 1} {ex + back},{ey + ARROW // 2 + 1}"
    else:
        outward = plan.rightward[plan.band[source]]
        sx, sy = (x1 + w, y1 + h // 2) if outward else (x1, y1 + h // 2)
        lane = sx + LANE if outward else sx - LANE
        ex, ey = x2 + w // 2, y2 - 2
        curve = f"M {sx} {sy} H {lane} V {ey - LANE} H {ex} V {ey}"
        head = f"{ex},{ey} {ex - ARROW // 2 - 1},{ey - ARROW} {ex + ARROW // 2 + 1},{ey - ARROW}"
    return (
        f'<g class="wf-edge-group"><path class="wf-edge" d="{curve}" fill="none" '
        f'stroke="#94a3b8" stroke-width="1.5"/>'
        f'<polygon class="wf-arrowhead" points="{head}" fill="#94a3b8"/></g>'
    )


def _graph_svg(nodes: Sequence[Node], plan: Layout, title: str, name: str | None) -> str:
    max_label = max(len(n.label) for n in nodes)
    if plan.node_w >= NODE_MAX_W:
        max_label = int((plan.node_w - 38) / CHAR_W)
    layout_attr = f' data-layout="{name}"' if name else ""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="wf-graph" role="img"{layout_attr} '
        f'data-nodes="{len(nodes)}" width="{plan.width}" height="{plan.height}" '
        f'viewBox="0 0 {plan.width} {plan.height}" '
        f'style="max-width: min(100%, {plan.width}px)">',
        f"<title>{escape(title)}</title>",
    ]
    for node in nodes:
        for target in node.next:
            if target in plan.position:
                out.append(_edge(plan, node.id, target))
    for node in nodes:
        x, y = plan.position[node.id]
        colour = step_colour(node.state)
        fill, stroke = PALETTE[colour]
        group = [
            f'<g class="wf-node wf-state-{escape(node.state)} wf-c-{colour}" '
            f'data-step="{escape(node.id)}" data-state="{escape(node.state)}" '
            f'data-colour="{colour}">',
            f"<title>{escape(node.title or node.label)}</title>",
            f'<rect class="wf-box" x="{x}" y="{y}" width="{plan.node_w}" height="{NODE_H}" '
            f'rx="8" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>',
            f'<rect class="wf-mark" x="{x + 10}" y="{y + (12 if node.state_label else 18)}" '
            f'width="10" height="10" rx="2" fill="{stroke}"/>',
            f'<text class="wf-label" x="{x + 28}" y="{y + (21 if node.state_label else 27)}" '
            f'font-size="13" font-weight="600" fill="#111827">'
            f"{escape(_clip(node.label, max_label))}</text>",
        ]
        if node.state_label:
            group.append(
                f'<text class="wf-state-text" x="{x + 28}" y="{y + 37}" font-size="11" '
                f'fill="{stroke}">{escape(node.state_label)}</text>'
            )
        group.append("</g>")
        body = "".join(group)
        if node.href:
            body = f'<a href="{escape(node.href)}" class="wf-node-link">{body}</a>'
        out.append(body)
    out.append("</svg>")
    return "\n".join(out)


def step_graph_svg(nodes: Sequence[Node], *, title: str = "Step graph") -> str:
    """The step graph as SVG: one drawing per width of :data:`GRAPH_WIDTHS` that differs.

    A graph whose layers all fit in the narrowest width is a single ``<svg>``; a longer
    one gives a ``wide`` and a ``narrow`` drawing (``data-layout``) and the page's CSS
    shows the one that fits. Nodes with an ``href`` are wrapped in ``<a>`` links, arrows
    go from each node to its ``next``. Returns ``""`` for no nodes.
    """
    if not nodes:
        return ""
    plans = [(name, layout(nodes, width)) for name, width in GRAPH_WIDTHS]
    if all(plan.width == plans[0][1].width for _name, plan in plans):
        return _graph_svg(nodes, plans[0][1], title, None)
    return "\n".join(_graph_svg(nodes, plan, title, name) for name, plan in plans)


# Gantt chart


@dataclass
class Bar:
    """One attempt of a step handler on the time axis."""

    label: str
    handler_type: str  # "invoke" or "compensate"
    attempt: int
    status: str
    start: datetime
    end: datetime | None
    href: str | None = None


GANTT_COLOURS = {
    HandlerType.INVOKE: ("#3b82f6", "#1d4ed8"),
    HandlerType.COMPENSATE: ("#a855f7", "#7e22ce"),
}
FAILED_STROKE = "#dc2626"
# Attempts still going on: their bar reaches "now".
_OPEN = (AttemptStatus.RUNNING, AttemptStatus.WAITING)
LABEL_W = 240
CHART_W = 620
ROW_H = 22
AXIS_H = 26
LEGEND_H = 24


def format_duration_ms(ms: float | int | None) -> str:
    """``0.25 ms``, ``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 07 min``; ``""`` for ``None``."""
    if ms is None:
        return ""
    if 0 < ms < 10 and ms != int(ms):
        return f"{ms:.2f}".rstrip("0").rstrip(".") + " ms"
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def gantt_svg(bars: Sequence[Bar], now: datetime | None = None, *, title: str = "Gantt") -> str:
    """An SVG with one row per attempt, on an axis from the first start to the last end.

    Attempts still running or waiting (no end, or status ``RUNNING``/``WAITING``) reach
    ``now`` and are drawn dashed. Returns ``""`` for no bars.
    """
    bars = [b for b in bars if b.start is not None]
    if not bars:
        return ""
    ends = []
    for bar in bars:
        end = bar.end or bar.start
        if now is not None and (bar.end is None or bar.status in _OPEN):
            end = max(end, now)
        ends.append(end)
    t0 = min(b.start for b in bars)
    t1 = max(ends)
    span_ms = max((t1 - t0).total_seconds() * 1000, 1.0)
    height = LEGEND_H + AXIS_H + len(bars) * ROW_H + 8
    width = LABEL_W + CHART_W + 24

    def x_at(moment: datetime) -> float:
        return LABEL_W + (moment - t0).total_seconds() * 1000 / span_ms * CHART_W

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="wf-gantt" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
    ]
    # Legend.
    lx = LABEL_W
    for name, text in ((HandlerType.INVOKE, "Invoke"), (HandlerType.COMPENSATE, "Compensate")):
        fill, stroke = GANTT_COLOURS[name]
        out.append(
            f'<rect x="{lx}" y="6" width="14" height="10" rx="2" fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{lx + 20}" y="15" font-size="11" fill="#374151">{text}</text>'
        )
        lx += 110
    out.append(
        f'<rect class="wf-legend-box" x="{lx}" y="6" width="14" height="10" rx="2" fill="#ffffff" '
        f'stroke="{FAILED_STROKE}" stroke-width="2"/>'
        f'<text x="{lx + 20}" y="15" font-size="11" fill="#374151">Failed attempt</text>'
    )
    lx += 120
    out.append(
        f'<rect class="wf-legend-box" x="{lx}" y="6" width="14" height="10" rx="2" fill="#ffffff" '
        f'stroke="#6b7280" '
        f'stroke-dasharray="3 2"/>'
        f'<text x="{lx + 20}" y="15" font-size="11" fill="#374151">Running / waiting</text>'
    )
    # Axis with five ticks.
    axis_y = LEGEND_H + AXIS_H - 6
    chart_bottom = LEGEND_H + AXIS_H + len(bars) * ROW_H
    for i in range(5):
        tick_ms = span_ms * i / 4
        tx = LABEL_W + CHART_W * i / 4
        anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
        out.append(
            f'<line x1="{tx:.1f}" y1="{axis_y}" x2="{tx:.1f}" y2="{chart_bottom}" '
            'stroke="#e5e7eb" stroke-width="1"/>'
            f'<text x="{tx:.1f}" y="{axis_y - 4}" font-size="10" fill="#6b7280" '
            f'text-anchor="{anchor}">+{escape(format_duration_ms(tick_ms))}</text>'
        )
    for row, (bar, end) in enumerate(zip(bars, ends, strict=True)):
        y = LEGEND_H + AXIS_H + row * ROW_H
        fill, stroke = GANTT_COLOURS.get(bar.handler_type, GANTT_COLOURS[HandlerType.INVOKE])
        failed = bar.status in (AttemptStatus.FAILED, AttemptStatus.TIMED_OUT)
        open_ended = end != (bar.end or bar.start) or bar.status in _OPEN
        x = x_at(bar.start)
        w = max(x_at(end) - x, 3.0)
        suffix = " (comp.)" if bar.handler_type == HandlerType.COMPENSATE else ""
        label = f"{bar.label} #{bar.attempt}{suffix}"
        text = (
            f'<text x="{LABEL_W - 8}" y="{y + 15}" font-size="11" fill="#111827" '
            f'text-anchor="end">{escape(_clip(label, 36))}</text>'
        )
        if bar.href:
            text = f'<a href="{escape(bar.href)}">{text}</a>'
        duration = format_duration_ms((end - bar.start).total_seconds() * 1000)
        tip = f"{label}: {bar.status.lower()}, {duration}"
        extra = ' stroke-dasharray="4 2" fill-opacity="0.45"' if open_ended else ""
        out.append(
            f'<g class="wf-bar wf-bar-{escape(bar.handler_type)}" '
            f'data-status="{escape(bar.status)}"><title>{escape(tip)}</title>{text}'
            f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{ROW_H - 8}" rx="3" '
            f'fill="{fill}" stroke="{FAILED_STROKE if failed else stroke}" '
            f'stroke-width="{2 if failed else 1}"{extra}/></g>'
        )
    out.append("</svg>")
    return "\n".join(out)
