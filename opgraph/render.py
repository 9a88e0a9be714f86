"""Rendering graphs to SVG, PNG or DOT: whole, around one node, or summarised.

Two steps, so that a server holds a graph's lock only for the first:

1. `plan` reads the graph and writes the DOT source of the picture (a `Picture`);
2. `layout` (or `layout_async`) runs graphviz's ``dot`` on that source in a subprocess, which
   is killed when its time limit passes (or, for `layout_async`, when the task is cancelled).

`render` does both. A graph is drawn whole only when ``dot`` can lay it out quickly: with at
most ``max_nodes`` nodes, and a *layout size* of at most `MAX_LAYOUT` (see `layout_size`: dot's
time grows with the nodes it places, counting one for every rank a long edge crosses, which is
what makes a 200-node chain with skip edges take dot longer than a 2,000-node layer). Beyond
either, it is drawn as a summary, one box per (generation, op) with counts, which shows
repeated structure (a layer of 16 tanh) instead of a hairball, and the `Picture` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import graphviz
import networkx as nx

from opgraph.analysis import as_graph, neighbourhood, to_networkx
from opgraph.core import Value
from opgraph.draw import FORMATS, draw_dot
from opgraph.graph import Graph

DEFAULT_MAX_NODES = 400
"""Nodes of a graph drawn whole by default; more are summarised."""
MAX_LAYOUT = 12_000
"""The largest `layout_size` drawn whole (or around a node). Measured on a 2-core machine
(``python bench/server.py --dot``): random DAGs, tangled DAGs, MLPs and chains with skip edges
up to 2,000 nodes that are within it took ``dot`` at most 3.2 s (one beyond it, 44 s), against
the server's default time limit of 60 s."""
QUICK_LAYOUT_FROM = 500
"""From this `layout_size` on, ``dot`` is told to stop its network-simplex passes early
(`QUICK_LAYOUT`): big pictures lay out several times faster, small ones are laid out exactly
as graphviz would by default."""
QUICK_LAYOUT = ("-Gnslimit=1", "-Gnslimit1=1")
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
    ``dot`` (more than ``max_nodes`` or `MAX_LAYOUT` boxes plus the ranks its edges span, as a
    deep chain or a value reused at every step gives), it falls back to one box per op.
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
    by_op = len(sizes) + spanned > min(max_nodes, MAX_LAYOUT)
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


class LayoutError(RuntimeError):
    """``dot`` could not be run, or failed on the picture."""


class LayoutTimeout(TimeoutError):
    """``dot`` did not finish within its time limit (and was killed)."""


@dataclass(frozen=True)
class Picture:
    """What `plan` decided to draw, ready for `layout`: the DOT source and what it shows."""

    source: str
    """The DOT source, as the graphviz library writes it."""
    format: str
    """``svg``, ``png`` or ``dot``."""
    drawn: str
    """``graph`` (whole), ``neighbourhood`` (around a node) or ``summary``."""
    nodes: int
    """Values drawn (0 for a summary)."""
    total: int
    """Values in the graph."""
    size: int
    """The `layout_size` of what is drawn (of the summary, for a summary)."""
    reason: str = ""
    """Why the graph was summarised rather than drawn whole ("" when it was not)."""
    fallback: Picture | None = None
    """A summary to draw instead if ``dot`` runs out of time on this picture (see `plan`)."""

    @property
    def command(self) -> list[str]:
        """The ``dot`` command line that lays the picture out (the source goes to stdin)."""
        quick = QUICK_LAYOUT if self.size >= QUICK_LAYOUT_FROM else ()
        return ["dot", "-Kdot", f"-T{self.format}", *quick]

    def timed_out(self, spent: float) -> Picture:
        """The `fallback` summary, saying that ``dot`` did not lay this out in ``spent`` s."""
        if self.fallback is None:
            raise ValueError("this picture has no summary to fall back on")
        reason = (f"{self.total} nodes, which dot did not lay out within {spent:.3g} s "
                  f"(layout size {self.size})")
        return Picture(self.fallback.source, self.format, "summary", 0, self.total,
                       self.fallback.size, reason)

    def describe(self) -> dict[str, object]:
        """What was drawn, as plain data (``drawn``, ``nodes``, ``total``, ``reason``)."""
        return {"drawn": self.drawn, "nodes": self.nodes, "total": self.total,
                "reason": self.reason or None}


def layout_size(graph: Graph, nodes: Sequence[Value] | None = None) -> int:
    """An estimate of the work ``dot`` does on the picture of ``graph`` (or of ``nodes``, a
    neighbourhood): the nodes it places (a record per value, a small node per op) plus one
    for each rank an edge crosses, ranks being given by longest paths with each leaf moved
    next to its first use (as dot's ranking does). Linear in the nodes drawn."""
    shown = graph.nodes if nodes is None else nodes
    members = None if nodes is None else {id(v) for v in nodes}
    rank: dict[int, int] = {}  # id(value) -> rank of its record
    placed = 0
    for v in shown:
        placed += 1
        if v.opdef is None:
            rank[id(v)] = 0
            continue
        placed += 1
        op_rank = 0
        for i in v.inputs:
            if members is None or id(i) in members:
                op_rank = max(op_rank, rank[id(i)] + 1)
        rank[id(v)] = op_rank + 1
    first_use: dict[int, int] = {}
    for v in shown:
        if v.opdef is not None:
            op_rank = rank[id(v)] - 1
            for i in v.inputs:
                if i.opdef is None and (members is None or id(i) in members):
                    key = id(i)
                    first_use[key] = min(first_use.get(key, op_rank), op_rank)
    for key, op_rank in first_use.items():
        rank[key] = op_rank - 1
    crossed = 0
    for v in shown:
        if v.opdef is not None:
            op_rank = rank[id(v)] - 1
            for i in v.inputs:
                if members is None or id(i) in members:
                    crossed += max(0, op_rank - rank[id(i)] - 1)
    return placed + crossed


def _summary_size(dot: graphviz.Digraph) -> int:
    return sum(1 for line in dot.body if "label=" in line and "->" not in line)


def plan(
    target: Graph | Value,
    *,
    format: str = "svg",
    rankdir: str = "LR",
    around: int | None = None,
    depth: int = 2,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_layout: int = MAX_LAYOUT,
    diagnostics: bool = True,
    fallback: bool = False,
) -> Picture:
    """Decide what to draw and write its DOT source; reads the graph, runs no ``dot``.

    Whole when the graph has at most ``max_nodes`` nodes and a `layout_size` of at most
    ``max_layout``, else a summary (``reason`` says which limit). ``around`` draws the nodes
    within ``depth`` edges of that node; a neighbourhood over either limit is refused
    (``ValueError``: use a smaller depth). With ``fallback``, a big picture drawn whole carries
    the summary to draw instead should ``dot`` run out of time.
    """
    graph = as_graph(target)
    dot, drawn, nodes, size, reason = _choose(graph, format, rankdir, around, depth, max_nodes,
                                              max_layout, diagnostics)
    spare = None
    if fallback and drawn == "graph" and format != "dot" and size >= QUICK_LAYOUT_FROM:
        summary = summary_dot(graph, format, rankdir, max_nodes)
        spare = Picture(summary.source, format, "summary", 0, len(graph.nodes),
                        _summary_size(summary), "")
    return Picture(dot.source, format, drawn, nodes, len(graph.nodes), size, reason, spare)


def _choose(graph: Graph, format: str, rankdir: str, around: int | None, depth: int,
            max_nodes: int, max_layout: int,
            diagnostics: bool) -> tuple[graphviz.Digraph, str, int, int, str]:
    """``(digraph, drawn, values drawn, layout size, reason)``: see `plan`."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    total = len(graph.nodes)
    if around is not None:
        nodes = neighbourhood(graph, around, depth)
        where = f"the neighbourhood of node {around} to depth {depth}"
        if len(nodes) > max_nodes:
            raise ValueError(f"{where} has {len(nodes)} nodes, over the drawing limit of "
                             f"{max_nodes}: use a smaller depth")
        size = layout_size(graph, nodes)
        if size > max_layout:
            raise ValueError(f"{where} has {len(nodes)} nodes whose edges span too many ranks "
                             f"to lay out quickly (layout size {size}, over {max_layout}): use "
                             "a smaller depth")
        marks = _highlights(graph) if diagnostics else None
        dot = draw_dot(graph, format, rankdir, nodes=nodes, highlight=marks)
        return dot, "neighbourhood", len(nodes), size, ""
    reason = ""
    if total > max_nodes:
        reason = f"{total} nodes, more than the {max_nodes} drawn whole"
    else:
        size = layout_size(graph)
        if size > max_layout:
            reason = (f"{total} nodes whose edges span too many ranks to lay out quickly "
                      f"(layout size {size}, over {max_layout})")
    if reason:
        dot = summary_dot(graph, format, rankdir, max_nodes)
        return dot, "summary", 0, _summary_size(dot), reason
    marks = _highlights(graph) if diagnostics else None
    return draw_dot(graph, format, rankdir, highlight=marks), "graph", total, size, ""


def graph_dot(
    target: Graph | Value,
    *,
    format: str = "svg",
    rankdir: str = "LR",
    around: int | None = None,
    depth: int = 2,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_layout: int = MAX_LAYOUT,
    diagnostics: bool = True,
) -> graphviz.Digraph:
    """The ``Digraph`` that `render` would draw (see `plan`)."""
    return _choose(as_graph(target), format, rankdir, around, depth, max_nodes, max_layout,
                   diagnostics)[0]


def _dot_failed(picture: Picture, code: int, stderr: bytes) -> LayoutError:
    lines = stderr.decode(errors="replace").strip().splitlines()
    detail = f": {lines[0]}" if lines else ""
    return LayoutError(f"graphviz's dot failed on the picture (exit status {code}){detail}")


_NO_DOT = ("graphviz's dot program is not installed or not on PATH (on Debian or Ubuntu: "
           "apt-get install graphviz)")


def layout(picture: Picture, timeout: float | None = None) -> bytes:
    """The picture laid out by ``dot`` (the DOT source itself for format ``dot``).

    ``dot`` runs as a subprocess, killed once ``timeout`` seconds pass (`LayoutTimeout`).
    """
    if picture.format == "dot":
        return picture.source.encode()
    try:
        done = subprocess.run(picture.command, input=picture.source.encode(),
                              capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise LayoutError(_NO_DOT) from None
    except subprocess.TimeoutExpired:  # (run has killed it)
        raise LayoutTimeout(f"dot did not lay the picture out within {timeout:g} s") from None
    if done.returncode:
        raise _dot_failed(picture, done.returncode, done.stderr)
    return done.stdout


async def layout_async(picture: Picture, timeout: float | None = None) -> bytes:
    """`layout` for asyncio: ``dot`` is killed when ``timeout`` passes or the task is
    cancelled, so no picture outlives the request that asked for it."""
    if picture.format == "dot":
        return picture.source.encode()
    try:
        proc = await asyncio.create_subprocess_exec(
            *picture.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise LayoutError(_NO_DOT) from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(picture.source.encode())
    except TimeoutError:
        raise LayoutTimeout(f"dot did not lay the picture out within {timeout:g} s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(BaseException):
                await asyncio.shield(proc.wait())
    if proc.returncode:
        raise _dot_failed(picture, proc.returncode, err)
    return out


def draw(
    target: Graph | Value,
    *,
    format: str = "svg",
    rankdir: str = "LR",
    around: int | None = None,
    depth: int = 2,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_layout: int = MAX_LAYOUT,
    diagnostics: bool = True,
    timeout: float | None = None,
) -> tuple[bytes, Picture]:
    """`plan` then `layout`: ``(picture bytes, what was drawn)``.

    With a ``timeout``, a big graph drawn whole gets half of it; should ``dot`` not finish,
    the graph is drawn as a summary in the rest (the `Picture` returned says so).
    """
    picture = plan(target, format=format, rankdir=rankdir, around=around, depth=depth,
                   max_nodes=max_nodes, max_layout=max_layout, diagnostics=diagnostics,
                   fallback=timeout is not None)
    if picture.fallback is None or timeout is None:
        return layout(picture, timeout), picture
    start = time.monotonic()
    try:
        return layout(picture, timeout / 2), picture
    except LayoutTimeout:
        spent = time.monotonic() - start
        summary = picture.timed_out(spent)
        return layout(summary, max(0.001, timeout - spent)), summary


def render(
    target: Graph | Value,
    *,
    format: str = "svg",
    rankdir: str = "LR",
    around: int | None = None,
    depth: int = 2,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_layout: int = MAX_LAYOUT,
    diagnostics: bool = True,
    timeout: float | None = None,
) -> bytes:
    """The picture as bytes: SVG, PNG, or DOT source (see `draw` and `plan`).

    ``around`` draws only the nodes within ``depth`` edges of that node id. A graph over
    ``max_nodes`` nodes (or too costly to lay out) is summarised rather than sent to ``dot``
    whole; a neighbourhood over them is refused. With ``diagnostics`` nodes with findings are
    coloured, the codes in their tooltips.
    """
    return draw(target, format=format, rankdir=rankdir, around=around, depth=depth,
                max_nodes=max_nodes, max_layout=max_layout, diagnostics=diagnostics,
                timeout=timeout)[0]
