"""Graph analysis with networkx: order, depth, width, critical path, influence, dominators.

`analyze(target)` takes a `Graph` or a root `Value` and returns an `AnalysisReport` that turns
into plain data with ``to_dict()`` (and so into JSON or msgpack). Node ids are the graph's ids;
for a bare `Value` they are positions in its topological order (see `snapshot`).

`analyze` runs in linear time on the graph's arrays (`opgraph.linear`, `opgraph.dominators`);
networkx's algorithms serve graphs whose ids are not a topological order (a cycle from a
corrupt import) and neighbourhoods. The networkx graph is built only when one of those asks for
it and cached on the `Graph` while its structure is unchanged (graphs only grow, so the node
count is the cache key): the forward and backward passes never pay for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, cast

import networkx as nx

from opgraph import linear
from opgraph.core import Value, describe
from opgraph.dominators import gradient_dominators
from opgraph.errors import NodeNotFoundError
from opgraph.graph import Graph, as_graph, snapshot
from opgraph.structure import near, structure

__all__ = ["AnalysisReport", "analyze", "as_graph", "gradient_dominators", "neighbourhood",
           "snapshot", "to_networkx"]


def to_networkx(graph: Graph) -> nx.DiGraph:
    """A DiGraph with an edge input -> node per use; node attributes ``op`` and ``label``.

    Cached on ``graph`` until a node is added. Edges carry ``count`` (2 for ``a * a``).
    """
    cached = getattr(graph, "_nx_cache", None)
    if cached is not None and cached[0] == len(graph.nodes):
        return cached[1]
    g = nx.DiGraph()
    for value in graph.nodes:
        g.add_node(value.id, op=value.op, label=value.label)
    for value in graph.nodes:
        node_id = value.id
        for inp in value.inputs:
            if g.has_edge(inp.id, node_id):
                g.edges[inp.id, node_id]["count"] += 1
            else:
                g.add_edge(inp.id, node_id, count=1)
    graph._nx_cache = (len(graph.nodes), g)  # type: ignore[attr-defined]
    return g


@dataclass
class AnalysisReport:
    """What `analyze` found. Every field is plain data; ``to_dict()`` gives a JSON-able dict."""

    nodes: int
    edges: int
    root: int | None
    leaves: list[int]
    outputs: list[int]
    ops: dict[str, int]
    depth: int
    widths: list[int]
    critical_path: list[int]
    max_fan_in: dict[str, int] | None
    max_fan_out: dict[str, int] | None
    unused: list[int]
    dominators: list[int]
    cycles: list[list[int]] = field(default_factory=list)
    influences: dict[str, list[int]] = field(default_factory=dict)
    affects: dict[str, list[int]] = field(default_factory=dict)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    # the diagnostics grouped by code and site (opgraph.diagnostic_groups), and how many items
    # each list had before ``limit`` cut it
    diagnostic_groups: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def width(self) -> int:
        """The widest topological generation."""
        return max(self.widths, default=0)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: lists, dicts, ints and strings only (the report's own, not copies)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["width"] = self.width
        return data


def _root_of(graph: Graph, root: int | Value | None) -> int | None:
    if root is None:
        # The most recent computed output: a leaf added last (an unused input, say) must not
        # make every other node "unused".
        outputs = graph.outputs
        computed = [v for v in outputs if not v.is_leaf]
        return (computed or outputs)[-1].id if outputs else None
    if isinstance(root, Value):
        if root.graph is not graph:
            raise NodeNotFoundError(f"{describe(root)} is not in graph {graph.name!r}")
        return root.id
    return graph.node(root).id


def analyze(
    target: Graph | Value,
    *,
    root: int | Value | None = None,
    node: int | None = None,
    leaf: int | None = None,
    diagnostics: bool = True,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AnalysisReport:
    """Analyse a graph (or the graph under a root `Value`), in time linear in its size.

    ``root`` is the output whose ancestry defines unused nodes and dominators (default: the last
    output). ``node`` adds which leaves influence that node; ``leaf`` adds which nodes that leaf
    affects. With ``diagnostics`` the plugins' diagnostics are included, and grouped by code and
    site. ``limit`` cuts every list of the report to its first ``limit`` items (for tables);
    ``counts`` always gives each list's full length. ``progress(done, total)`` is called as the
    analyses finish.
    """
    linear.check_limit(limit)
    graph = as_graph(target)
    if isinstance(target, Value) and root is None and target.graph is not None:
        root = target
    s = structure(graph)
    if s.topological:  # every graph built through the API: the linear-time analyses
        root_id = linear.default_root(s) if root is None else _root_of(graph, root)
        _check_queries(graph, node, leaf)
        steps = linear.step_count(node, leaf) + diagnostics
        inner = None if progress is None else (lambda done, _: progress(done, steps))
        fields_ = linear.report_fields(s, root_id, node=node, leaf=leaf, progress=inner)
        report = _finish(AnalysisReport(**fields_), graph, diagnostics, limit)
        if progress is not None and diagnostics:
            progress(steps, steps)
        return report
    g = to_networkx(graph)  # a graph with a cycle (a corrupt import can make one)
    root_id = _root_of(graph, root)
    # (a graph's nodes all have ids)
    leaves = cast("list[int]", [v.id for v in graph.nodes if v.is_leaf])
    outputs = cast("list[int]", [v.id for v in graph.outputs])
    acyclic = nx.is_directed_acyclic_graph(g)
    if acyclic:
        generations = [len(gen) for gen in nx.topological_generations(g)]
        critical = nx.dag_longest_path(g) if g.number_of_nodes() else []
    else:
        generations, critical = [], []
    in_deg = max(g.in_degree(), key=lambda item: item[1], default=None)
    out_deg = max(g.out_degree(), key=lambda item: item[1], default=None)
    report = AnalysisReport(
        nodes=g.number_of_nodes(),
        edges=sum(c for _, _, c in g.edges(data="count")),
        root=root_id,
        leaves=leaves,
        outputs=outputs,
        ops=dict(sorted(Counter(v.op for v in graph.nodes if v.op).items())),
        depth=len(generations),
        widths=generations,
        critical_path=critical,
        max_fan_in={"node": in_deg[0], "count": in_deg[1]} if in_deg else None,
        max_fan_out={"node": out_deg[0], "count": out_deg[1]} if out_deg else None,
        unused=[],
        dominators=[],
        cycles=[] if acyclic else [list(map(int, c)) for c in _some_cycles(g)],
    )
    if root_id is not None:
        ancestors = nx.ancestors(g, root_id) | {root_id}
        report.unused = sorted(n for n in g.nodes if n not in ancestors)
        if acyclic:
            report.dominators = gradient_dominators(g, root_id, leaves)
    _check_queries(graph, node, leaf)
    if node is not None:
        report.influences = {
            str(node): sorted(n for n in nx.ancestors(g, node) if g.in_degree(n) == 0)
        }
    if leaf is not None:
        report.affects = {str(leaf): sorted(nx.descendants(g, leaf))}
    return _finish(report, graph, diagnostics, limit)


def _check_queries(graph: Graph, node: int | None, leaf: int | None) -> None:
    if node is not None:
        graph.node(node)
    if leaf is not None and not graph.node(leaf).is_leaf:
        raise NodeNotFoundError(f"node {leaf} is computed by op {graph.nodes[leaf].op!r}, "
                                "not a leaf")


def _finish(report: AnalysisReport, graph: Graph, diagnostics: bool,
            limit: int | None) -> AnalysisReport:
    """Add the diagnostics (and their groups), the counts, and cut the lists to ``limit``."""
    if diagnostics:
        from opgraph.diagnostic_groups import group_diagnostics
        from opgraph.diagnostics import run_diagnostics

        found = run_diagnostics(graph).diagnostics
        report.diagnostics = [d.to_dict() for d in found]
        report.diagnostic_groups = group_diagnostics(graph, found)["groups"]
    data = report.to_dict()
    report.counts = linear.counts_of(data)
    if limit is not None:
        capped = linear.cap(data, limit)
        for key in (*linear.LISTS, "influences", "affects"):
            setattr(report, key, capped[key])
    return report


def _some_cycles(g: nx.DiGraph, limit: int = 10) -> list[list[int]]:
    cycles = []
    for cycle in nx.simple_cycles(g):
        cycles.append(cycle)
        if len(cycles) >= limit:
            break
    return cycles


def neighbourhood(graph: Graph, center: int, depth: int = 2) -> list[Value]:
    """Nodes within ``depth`` edges of ``center`` in either direction, in id order."""
    graph.node(center)
    if type(depth) is not int or depth < 0:
        raise ValueError(f"depth must be a non-negative int, got {depth!r}")
    return [graph.nodes[i] for i in near(structure(graph), center, depth).tolist()]
