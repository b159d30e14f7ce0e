"""The step graph's layout: it fits the widths it is drawn for, nodes never overlap."""

from __future__ import annotations

import re

import pytest

from workflows_app import graph, presentation


def chain(length: int, label: str = "step-number-{}") -> list[graph.Node]:
    """A straight chain of ``length`` steps, each one deeper than the previous one."""
    ids = [f"s{i}" for i in range(length)]
    return [
        graph.Node(id=ids[i], label=label.format(i), depth=i + 1, next=ids[i + 1 : i + 2])
        for i in range(length)
    ]


def fan(width: int) -> list[graph.Node]:
    """One step, ``width`` parallel steps after it, one step joining them."""
    middle = [f"m{i}" for i in range(width)]
    nodes = [graph.Node(id="start", label="start", depth=1, next=middle)]
    nodes += [graph.Node(id=m, label=m, depth=2, next=["end"]) for m in middle]
    nodes.append(graph.Node(id="end", label="end", depth=3))
    return nodes


def overlaps(plan: graph.Layout) -> list[tuple[str, str]]:
    boxes = list(plan.position.items())
    found = []
    for i, (a, (ax, ay)) in enumerate(boxes):
        for b, (bx, by) in boxes[i + 1 :]:
            if abs(ax - bx) < plan.node_w and abs(ay - by) < graph.NODE_H:
                found.append((a, b))
    return found


@pytest.mark.parametrize("length", [1, 2, 4, 9, 17, 30, 60])
@pytest.mark.parametrize("max_width", [w for _name, w in graph.GRAPH_WIDTHS])
def test_a_chain_fits_the_width_and_wraps_into_bands(length, max_width):
    nodes = chain(length)
    plan = graph.layout(nodes, max_width)

    assert plan.width <= max_width
    assert set(plan.position) == {n.id for n in nodes}
    assert overlaps(plan) == []
    for _id, (x, y) in plan.position.items():
        assert 0 <= x <= plan.width - plan.node_w
        assert 0 <= y <= plan.height - graph.NODE_H
    # Bands alternate direction: the first step of band 2 sits below the last of band 1.
    per_band = sum(1 for n in nodes if plan.band[n.id] == 0)
    if length > per_band:
        last, first = nodes[per_band - 1].id, nodes[per_band].id
        assert plan.position[last][0] == plan.position[first][0]
        assert plan.position[first][1] > plan.position[last][1]
        assert plan.rightward[:2] == [True, False]


def test_parallel_steps_stack_in_one_layer():
    plan = graph.layout(fan(5), 1000)

    xs = {plan.position[f"m{i}"][0] for i in range(5)}
    assert len(xs) == 1
    assert plan.position["start"][0] < xs.pop() < plan.position["end"][0]
    assert overlaps(plan) == []


def test_short_graph_is_one_svg_long_graph_gives_a_wide_and_a_narrow_drawing():
    short = graph.step_graph_svg(chain(2))
    assert short.count("<svg") == 1 and "data-layout" not in short

    long = graph.step_graph_svg(chain(30))
    assert long.count("<svg") == 2
    widths = [int(w) for w in re.findall(r'<svg[^>]* width="(\d+)"', long)]
    assert widths[0] <= 1000 and widths[1] <= 680
    assert 'data-layout="wide"' in long and 'data-layout="narrow"' in long
    assert long.count('class="wf-edge"') == 2 * 29
    assert long.count('class="wf-arrowhead"') == 2 * 29


def test_labels_are_escaped_and_colours_have_css_classes():
    nodes = [graph.Node(id="a", label="<b>&x", depth=1, state="failed")]
    svg = graph.step_graph_svg(nodes)

    assert "<b>" not in svg and "&lt;b&gt;&amp;x" in svg
    assert 'class="wf-node wf-state-failed wf-c-red"' in svg


def test_a_step_without_compensation_is_not_shown_reverted():
    undone = {
        "definition": {"stepId": "reserve", "noCompensation": False},
        "invoke": {"state": "done", "status": "ok"},
        "compensate": {"state": "reverted", "status": "ok"},
    }
    nothing_to_undo = {
        "definition": {"stepId": "notify", "noCompensation": True},
        "invoke": {"state": "done", "status": "ok"},
        "compensate": {"state": "reverted", "status": "ok"},
    }

    assert presentation.display_state(undone) == "reverted"
    assert presentation.display_state(nothing_to_undo) == "done"


def test_labels_are_clipped_only_beyond_the_widest_node():
    assert "\u2026" not in graph.step_graph_svg(chain(30))
    long_name = graph.step_graph_svg(chain(1, label="x" * 60))
    assert f">{'x' * 60}</title>" in long_name  # the full name stays in the tooltip
    assert f">{'x' * 60}</text>" not in long_name and "\u2026</text>" in long_name
