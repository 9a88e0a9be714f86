"""Pictures of expression graphs with graphviz, drawn the way the seed's ``draw_dot`` draws them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import graphviz

from opgraph import core
from opgraph.core import Value
from opgraph.errors import InputTypeError

FORMATS = ("svg", "png", "dot")
_RECORD_SPECIALS = str.maketrans({c: "\\" + c for c in "{}|<>\\\""})


_NAME_LENGTH = 24
"""Longest expression-derived name (`node_name`); a longer one gives way to the op's name."""


def node_name(value: Value, depth: int = 2) -> str:
    """A short name for a value, as the Neovim client shows it: its label; else, for a
    computed value, an expression of its inputs' names (``x1*w1``, ``tanh(#7)``) when that is
    at most 24 characters, else ``op#id``; else (a leaf) ``#id``. Values outside a graph
    (no id) without a label have the name ``""``."""
    return _name(value, depth)[0]


def _name(value: Value, depth: int) -> tuple[str, bool]:
    """`node_name` and whether it is an infix expression (to be bracketed inside another)."""
    if value.label:
        return value.label, False
    ident = "" if value.id is None else f"#{value.id}"
    op = value.opdef
    if op is None or depth <= 0:
        return ident, False
    named = [_name(i, depth - 1) for i in value.inputs]
    symbol = op.format_symbol(value.attrs)
    infix = len(named) == 2 and bool(symbol) and not symbol[0].isalpha()
    if infix:
        (a, a_infix), (b, b_infix) = named
        name = f"{f'({a})' if a_infix else a}{symbol}{f'({b})' if b_infix else b}"
    else:
        name = f"{op.name}({', '.join(part or '?' for part, _ in named)})"
    if len(name) > _NAME_LENGTH:
        return f"{op.name}{ident}", False
    return name, infix


def first_cell(value: Value) -> str:
    """What the first cell of a value's record shows: its label, as the seed draws it; for an
    unlabelled value of a graph, its id and (if computed) a name derived from its expression
    (``#7 x1*w1``), so that a node can be found by id in the picture (``--around 7``)."""
    if value.label or value.id is None:
        return value.label
    ident = f"#{value.id}"
    if value.opdef is None:
        return ident
    name = node_name(value)
    if name.endswith(ident):  # too long an expression: op#id
        name = value.opdef.name
    return f"{ident} {name}"


def record_label(value: Value) -> str:
    """The seed's record label: ``{ a | data 2.0000 | grad 6.0000 }`` (see `first_cell` for
    unlabelled values of a graph)."""
    label = first_cell(value).translate(_RECORD_SPECIALS)
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
