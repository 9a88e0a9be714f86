"""Pictures of expression graphs with graphviz, drawn the way the seed's ``draw_dot`` draws them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import graphviz

from opgraph import core
from opgraph.core import Value
from opgraph.errors import InputTypeError

FORMATS = ("svg", "png", "dot")
_RECORD_SPECIALS = str.maketrans({c: "\\" + c for c in "{}|<>\\\""})


def record_label(value: Value) -> str:
    """The seed's record label: ``{ a | data 2.0000 | grad 6.0000 }``."""
    label = value.label.translate(_RECORD_SPECIALS)
    return f"{{ {label} | data {value.data:.4f} | grad {value.grad:.4f} }}"


def _nodes_of(target: object) -> list[Value]:
    from opgraph.graph import Graph

    if isinstance(target, Value):
        return core.topological_order(target)
    if isinstance(target, Graph):
        return list(target.nodes)
    raise InputTypeError(f"draw_dot: expected a Value or a Graph, got {type(target).__name__}")


def draw_dot(
    root: object,
    format: str = "svg",
    rankdir: str = "LR",
    *,
    nodes: Iterable[Value] | None = None,
    highlight: Mapping[Value, tuple[str, str]] | None = None,
) -> graphviz.Digraph:
    """A graphviz ``Digraph`` of ``root`` (a `Value` or a `Graph`), as the seed draws it.

    One record node per value (label, data, grad), one small node per op, edges left to right.
    ``nodes`` restricts the picture to those values (a neighbourhood); ``highlight`` maps values
    to ``(colour, tooltip)``, as diagnostics use it. Render with ``.pipe()`` or ``.render()``.
    """
    if format not in FORMATS:
        raise ValueError(f"draw_dot: format must be one of {', '.join(FORMATS)}, got {format!r}")
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise ValueError(f"draw_dot: rankdir must be LR, RL, TB or BT, got {rankdir!r}")
    shown = list(nodes) if nodes is not None else _nodes_of(root)
    members = set(shown)
    highlight = highlight or {}
    dot = graphviz.Digraph(
        format="svg" if format == "dot" else format, graph_attr={"rankdir": rankdir}
    )
    names: dict[Value, str] = {}
    for v in shown:
        names[v] = f"n{v.id}" if v.id is not None else f"v{id(v)}"
    for v in shown:
        uid = names[v]
        attrs = {}
        if v in highlight:
            colour, tooltip = highlight[v]
            # Filled only: an outline in the fill colour would hide the record's field separators.
            attrs = {"style": "filled", "fillcolor": colour, "tooltip": tooltip}
        dot.node(name=uid, label=record_label(v), shape="record", **attrs)
        if not v.is_leaf:
            dot.node(name=uid + "_op", label=v._op)
            dot.edge(uid + "_op", uid)
            for child in v.inputs:
                if child in members:
                    dot.edge(names[child], uid + "_op")
    return dot
