"""Rendering graphs to SVG, PNG or DOT: whole, around one node, or summarised.

A graph with more nodes than ``max_nodes`` is never handed to ``dot`` whole: unless a node to
centre on is given, it is drawn as a summary, one box per (generation, op) with counts, which
shows repeated structure (a layer of 16 tanh) instead of a hairball.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import graphviz
import networkx as nx

from opgraph.analysis import as_graph, neighbourhood, to_networkx
from opgraph.core import Value
from opgraph.draw import FORMATS, draw_dot
from opgraph.graph import Graph

DEFAULT_MAX_NODES = 400
SEVERITY_COLOURS = {"error": "#f4a6a6", "warning": "#ffd27f", "info": "#cde4ff", "hint": "#e8e8e8"}
_RANK = {"error": 0, "warning": 1, "info": 2, "hint": 3}


def format_from_suffix(path: str, default: str = "svg") -> str:
    """``svg``, ``png`` or ``dot`` from a file name's suffix (``default`` when it has none)."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    if not suffix:
        return default
    if suffix == "gv":
        return "dot"
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the picture format from {path!r}: use .svg, .png or .dot")
    return suffix


def _highlights(graph: Graph) -> dict[Value, tuple[str, str]]:
    from opgraph.diagnostics import run_diagnostics

    by_node: dict[int, list] = defaultdict(list)
    for d in run_diagnostics(graph).diagnostics:
        if d.node is not None:
            by_node[d.node].append(d)
    marks = {}
    for node_id, found in by_node.items():
        worst = min(found, key=lambda d: _RANK[d.severity])
        tooltip = "; ".join(f"{d.code}: {d.message}" for d in found)
        marks[graph.nodes[node_id]] = (SEVERITY_COLOURS[worst.severity], tooltip)
    return marks


def summary_dot(graph: Graph, format: str = "svg", rankdir: str = "LR",
                max_nodes: int = DEFAULT_MAX_NODES) -> graphviz.Digraph:
    """One box per (topological generation, op), labelled with its count; edges with counts.

    A leaf is placed in the generation just before its first use (so constants deep in a
    graph do not all hang off generation 0). When that summary would itself be too big for
    ``dot`` (more than ``max_nodes`` boxes plus the ranks its edges span, as a deep chain or a
    value reused at every step gives), it falls back to one box per op.
    """
    g = to_networkx(graph)
    gen_of: dict[int, int] = {}
    for gen, members in enumerate(nx.topological_generations(g)):
        for node_id in members:
            gen_of[node_id] = gen
    for node_id in gen_of:
        if graph.nodes[node_id].op is None and g.out_degree(node_id):
            gen_of[node_id] = min(gen_of[s] for s in g.successors(node_id)) - 1
    group_of = {n: (gen_of[n], graph.nodes[n].op or "leaf") for n in gen_of}
    sizes = Counter(group_of.values())
    links = Counter((group_of[a], group_of[b]) for a, b in g.edges)
    spanned = sum(max(0, abs(b[0] - a[0]) - 1) for a, b in links)
    by_op = len(sizes) + spanned > max_nodes
    dot = graphviz.Digraph(format="svg" if format == "dot" else format,
                           graph_attr={"rankdir": rankdir, "label": (
                               f"{graph.name or 'graph'}: {len(graph.nodes)} nodes, summarised "
                               f"by {'op' if by_op else 'generation and op'}"),
                               "labelloc": "t"})
    if by_op:
        gens: dict[str, list[int]] = defaultdict(list)
        for gen, op in sizes:
            gens[op].append(gen)
        op_sizes = Counter(op for _, op in group_of.values())
        op_links = Counter((group_of[a][1], group_of[b][1]) for a, b in g.edges)
        for op, count in op_sizes.items():
            lo, hi = min(gens[op]), max(gens[op])
            where = f"generation {lo}" if lo == hi else f"generations {lo}-{hi}"
            dot.node(f"op_{op}", label=f"{op} \u00d7{count}\\n{where}",
                     shape="box" if op == "leaf" else "ellipse")
        for (a, b), count in op_links.items():
            dot.edge(f"op_{a}", f"op_{b}", label=str(count) if count > 1 else "")
        return dot
    names = {group: f"g{group[0]}_{group[1]}" for group in sizes}
    for group, count in sizes.items():
        gen, op = group
        dot.node(names[group], label=f"{op} \u00d7{count}\\ngeneration {gen}",
                 shape="box" if op == "leaf" else "ellipse")
    for (a, b), count in links.items():
        dot.edge(names[a], names[b], label=str(count) if count > 1 else "")
    return dot


def graph_dot(
    target: Graph | Value,
    *,
    format: str = "svg",
    rankdir: str = "LR",
    around: int | None = None,
    depth: int = 2,
    max_nodes: int = DEFAULT_MAX_NODES,
    diagnostics: bool = True,
) -> graphviz.Digraph:
    """The ``Digraph`` that `render` would draw (see there)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    graph = as_graph(target)
    nodes = None if around is None else neighbourhood(graph, around, depth)
    count = len(graph.nodes) if nodes is None else len(nodes)
    if count > max_nodes:
        if nodes is not None:
            raise ValueError(
                f"the neighbourhood of node {around} to depth {depth} has {count} nodes, over "
                f"the drawing limit of {max_nodes}: use a smaller depth"
            )
        return summary_dot(graph, format, rankdir, max_nodes)
    marks = _highlights(graph) if diagnostics else None
    return draw_dot(graph, format, rankdir, nodes=nodes, highlight=marks)


def render(
    target: Graph | Value,
    *,
    format: str = "svg",
    rankdir: str = "LR",
    around: int | None = None,
    depth: int = 2,
    max_nodes: int = DEFAULT_MAX_NODES,
    diagnostics: bool = True,
) -> bytes:
    """The picture as bytes: SVG, PNG, or DOT source.

    ``around`` draws only the nodes within ``depth`` edges of that node id. A graph (or
    neighbourhood) over ``max_nodes`` is summarised (or refused) rather than sent to ``dot``
    whole. With ``diagnostics`` nodes with findings are coloured, the codes in their tooltips.
    """
    dot = graph_dot(target, format=format, rankdir=rankdir, around=around, depth=depth,
                    max_nodes=max_nodes, diagnostics=diagnostics)
    if format == "dot":
        return dot.source.encode()
    return dot.pipe(format=format)
