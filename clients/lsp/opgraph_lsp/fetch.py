"""Reading what the open documents show from the graph server, and only that.

For one graph: the lines of the files a matcher accepts, each as a `LineData` (its nodes when
a few, its summary when many), and the graph's diagnostics placed on those lines, grouped by
code and line. With ``graph.aggregate`` (issue 12) the server computes the per-line summaries
once per version and sends one row per source line; without it (an older server), the graph's
nodes are read page by page and summarised here, which is allowed for graphs up to
``max_paged_nodes``. Either way what is kept is bounded by the lines of the open documents, not
by the size of the graph.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opgraph_lsp.views import FEW, LineData, NodeInfo, StatsAccumulator, names_needed

log = logging.getLogger(__name__)

Matcher = Callable[[str], bool]
"""Whether a source file (as the graph server names it) is one an open document shows."""

PAGE = 10_000
"""Node records per ``graph.nodes`` page when reading a graph without ``graph.aggregate``."""
MAX_PAGED_NODES = 200_000
"""The largest graph read node by node (without ``graph.aggregate``)."""
MAX_LINES = 100_000
"""At most this many source lines of one graph are listed by ``graph.aggregate``."""
MAX_DIAGNOSTIC_NODES = 2_000
"""Ungrouped diagnostics are placed by looking up their nodes' sources: at most this many."""
SEVERITIES = ("error", "warning", "info", "hint")


class TooBig(Exception):
    """The graph is too big to read node by node, and the server cannot summarise it."""


@dataclass
class GraphLines:
    """What one graph shows in the documents: ``files[file][line]`` (1-based line)."""

    graph: str
    version: int
    nodes: int
    files: dict[str, dict[int, LineData]] = field(default_factory=dict)
    all_files: set[str] = field(default_factory=set)
    """Every source file the graph names (kept only as names, to match documents opened later)."""
    root: int | None = None


@dataclass
class DiagnosticGroup:
    """Diagnostics of one code on one source line: how many, the first nodes, one message."""

    file: str
    line: int  # 1-based
    code: str
    severity: str
    message: str
    count: int  # findings
    nodes: list[int]
    plugin: str = ""
    occurrences: int = 0  # nodes they stand for (a dead ReLU unit: one finding, 100 nodes)

    def to_dict(self) -> dict[str, Any]:
        """As plain data (the ``opgraph.diagnostics`` command's answer)."""
        return {"file": self.file, "line": self.line, "code": self.code,
                "severity": self.severity, "message": self.message, "count": self.count,
                "occurrences": self.occurrences or self.count, "nodes": self.nodes,
                "plugin": self.plugin}


class Fetcher:
    """Reads graphs for the documents through ``call(method, *args, **options)`` (awaitable)."""

    def __init__(self, call: Callable[..., Any], methods: Iterable[str], *, few: int = FEW,
                 page: int = PAGE, max_paged_nodes: int = MAX_PAGED_NODES) -> None:
        self.call = call
        self.methods = set(methods)
        self.few = few
        self.page = page
        self.max_paged_nodes = max_paged_nodes

    @property
    def aggregates(self) -> bool:
        """Whether the server summarises lines itself (``graph.aggregate``)."""
        return "graph.aggregate" in self.methods

    async def lines(self, graph: str, wanted: Matcher) -> GraphLines:
        """The lines of ``graph`` in the files ``wanted`` accepts (tries again, up to three
        times, when the graph changes while it is read)."""
        for _ in range(3):
            result = await (self._by_aggregate(graph, wanted) if self.aggregates
                            else self._by_pages(graph, wanted))
            if result is not None:
                return result
        raise RuntimeError(f"graph {graph!r} kept changing while it was read")

    # --- with graph.aggregate -----------------------------------------------------------------

    async def _by_aggregate(self, graph: str, wanted: Matcher) -> GraphLines | None:
        # Two views the server computes once per version: the summary (every line with its
        # period and calls) and the lines as groups (with their first member ids).
        summary, groups = await asyncio.gather(
            self.call("graph.aggregate", graph, limit=MAX_LINES),
            self.call("graph.aggregate", graph, by="line", members=self.few, limit=MAX_LINES))
        version = int(summary["version"])
        if int(groups["version"]) != version:
            return None
        total = summary.get("nodes")
        if total is None:
            total = (summary.get("total") or {}).get("count") or 0
        out = GraphLines(graph, version, int(total))
        periods = {(r["file"], int(r["line"])): (r.get("period"), r.get("calls"))
                   for r in summary.get("lines") or [] if r.get("file") is not None}
        small: list[tuple[LineData, list[int]]] = []
        for file, line, stats, members in _line_groups(groups):
            out.all_files.add(file)
            if not wanted(file):
                continue
            count = int(stats.get("count") or 0)
            period, calls = periods.get((file, line), (None, None))
            data = LineData(graph, version, line, count, stats, period=period, calls=calls)
            out.files.setdefault(file, {})[line] = data
            if 0 < count <= self.few and len(members) >= count:
                small.append((data, members[:count]))
        if small and not await self._fill(graph, version, small):
            return None
        return out

    async def _fill(self, graph: str, version: int,
                    small: Sequence[tuple[LineData, list[int]]]) -> bool:
        """Fetch the records of the nodes of the lines with a few, and their inputs' names.
        False when the graph changed meanwhile."""
        ids = sorted({i for _, members in small for i in members})
        got = await self.call("node.get", graph, ids)
        if int(got["version"]) != version:
            return False
        by_id = {n.id: n for n in map(NodeInfo.from_record, got["nodes"])}
        for data, members in small:
            data.nodes = [by_id[i] for i in members if i in by_id]
        return await self._names(graph, version, [d for d, _ in small], by_id)

    async def _names(self, graph: str, version: int, lines: Sequence[LineData],
                     known: dict[int, NodeInfo]) -> bool:
        nodes = [n for d in lines for n in d.nodes]
        missing = names_needed(nodes, known)
        if missing:
            got = await self.call("node.get", graph, missing)
            if int(got["version"]) != version:
                return False
            known.update((n.id, n) for n in map(NodeInfo.from_record, got["nodes"]))
        for d in lines:
            d.inputs = {i: _bare(known[i]) for n in d.nodes for i in n.inputs if i in known}
        return True

    # --- node by node -------------------------------------------------------------------------

    async def _by_pages(self, graph: str, wanted: Matcher) -> GraphLines | None:
        start = 0
        version: int | None = None
        total = 0
        accs: dict[tuple[str, int], StatsAccumulator] = {}
        kept: dict[tuple[str, int], list[dict[str, Any]]] = {}
        files: set[str] = set()
        decided: dict[str, bool] = {}
        while True:
            page = await self.call("graph.nodes", graph, start=start, count=self.page)
            if version is None:
                version, total = int(page["version"]), int(page["total"])
                if total > self.max_paged_nodes:
                    raise TooBig(f"graph {graph!r} has {total:,} nodes; without graph.aggregate "
                                 f"(a newer graph server) only graphs of up to "
                                 f"{self.max_paged_nodes:,} nodes are shown")
            elif int(page["version"]) != version:
                return None
            records = page["nodes"]
            for r in records:
                source = r.get("source")
                if not source:
                    continue
                file, line = source[0], int(source[1])
                ok = decided.get(file)
                if ok is None:
                    ok = decided[file] = bool(wanted(file))
                    files.add(file)
                if not ok:
                    continue
                key = (file, line)
                acc = accs.get(key)
                if acc is None:
                    acc = accs[key] = StatsAccumulator()
                    kept[key] = []
                acc.add(r)
                few = kept[key]
                if acc.count <= self.few:
                    few.append(r)
                elif few:
                    few.clear()
            start += len(records)
            if not records or start >= total:
                break
        out = GraphLines(graph, version or 0, total, all_files=files)
        lines = []
        known: dict[int, NodeInfo] = {}
        for (file, line), acc in accs.items():
            data = LineData(graph, out.version, line, acc.count, acc.stats())
            data.nodes = [NodeInfo.from_record(r) for r in kept[(file, line)]]
            known.update((n.id, n) for n in data.nodes)
            out.files.setdefault(file, {})[line] = data
            lines.append(data)
        if not await self._names(graph, out.version, lines, known):
            return None
        return out

    # --- diagnostics --------------------------------------------------------------------------

    async def place(self, graph: str, diagnostics: Any, wanted: Matcher
                    ) -> list[DiagnosticGroup]:
        """The diagnostics of ``graph`` (a list of ``{code, severity, node, message}`` or the
        server's groups) placed on source lines of the files ``wanted`` accepts, one group per
        code and line."""
        groups = _server_groups(diagnostics)
        if groups is not None:
            return [g for g in groups if wanted(g.file)]
        items = [d for d in diagnostics or [] if isinstance(d, Mapping)]
        ids = sorted({d["node"] for d in items if isinstance(d.get("node"), int)})
        if len(ids) > MAX_DIAGNOSTIC_NODES:
            log.info("graph %r: placing the diagnostics of the first %d of %d nodes", graph,
                     MAX_DIAGNOSTIC_NODES, len(ids))
            ids = ids[:MAX_DIAGNOSTIC_NODES]
        sources: dict[int, tuple[str, int]] = {}
        if ids:
            got = await self.call("node.get", graph, ids)
            for r in got["nodes"]:
                s = r.get("source")
                if s:
                    sources[int(r["id"])] = (s[0], int(s[1]))
        return group_diagnostics(items, sources, wanted)


def _line_groups(agg: Mapping[str, Any]) -> list[tuple[str, int, dict, list[int]]]:
    """``(file, line, stats, first member ids)`` of each group of a ``by: "line"`` answer."""
    rows = []
    for g in agg.get("groups") or []:
        key = g.get("key")
        if not isinstance(key, Mapping) or key.get("file") is None:
            continue
        rows.append((key["file"], int(key["line"]), g.get("stats") or {},
                     list(g.get("members") or [])))
    return rows


def _bare(node: NodeInfo) -> NodeInfo:
    """A node kept only for its name (its own inputs dropped: nothing names them)."""
    return NodeInfo(node.id, node.op, node.symbol, [], node.data, node.grad, node.label)


def _server_groups(diagnostics: Any) -> list[DiagnosticGroup] | None:
    """The server's grouped diagnostics (``{"groups": [...]}`` with sites), if that is what
    ``diagnostics`` is."""
    if not isinstance(diagnostics, Mapping) or not isinstance(diagnostics.get("groups"), list):
        return None
    out = []
    for g in diagnostics["groups"]:
        site = g.get("site") or {}
        if not isinstance(site, Mapping) or site.get("file") is None:
            continue
        count = int(g.get("count") or 1)
        out.append(DiagnosticGroup(site["file"], int(site["line"]), str(g.get("code")),
                                   str(g.get("severity") or "info"), str(g.get("message") or ""),
                                   count, list(g.get("nodes") or []), str(g.get("plugin") or ""),
                                   int(g.get("occurrences") or count)))
    return out


def group_diagnostics(items: Iterable[Mapping[str, Any]], sources: Mapping[int, tuple[str, int]],
                      wanted: Matcher) -> list[DiagnosticGroup]:
    """Diagnostics grouped by (code, file, line) of their nodes, in the files ``wanted`` takes;
    a diagnostic's ``count`` (when it stands for several nodes) adds up."""
    groups: dict[tuple[str, str, int], DiagnosticGroup] = {}
    verdict: dict[str, bool] = {}
    for d in items:
        node = d.get("node")
        where = sources.get(node) if isinstance(node, int) else None
        if where is None:
            continue
        file, line = where
        ok = verdict.get(file)
        if ok is None:
            ok = verdict[file] = bool(wanted(file))
        if not ok:
            continue
        key = (str(d.get("code")), file, line)
        g = groups.get(key)
        if g is None:
            g = groups[key] = DiagnosticGroup(file, line, key[0], str(d.get("severity") or "info"),
                                              str(d.get("message") or ""), 0, [],
                                              str(d.get("plugin") or ""))
        g.count += 1
        g.occurrences += int(d.get("count") or 1)
        if len(g.nodes) < 10:
            g.nodes.append(node)
        rank = SEVERITIES.index(d["severity"]) if d.get("severity") in SEVERITIES else 9
        if rank < (SEVERITIES.index(g.severity) if g.severity in SEVERITIES else 9):
            g.severity = d["severity"]
    return sorted(groups.values(), key=lambda g: (g.file, g.line, g.code))
