"""Views of a graph, read under its read lock (in worker threads when big): ``graph.analyze``,
``graph.diagnostics``, ``graph.aggregate``, ``graph.render``.

Lists that grow with the graph are capped by a ``limit`` option, with their full lengths in
``counts``; the summaries of `graph.aggregate` are computed once per version of a graph and
kept (`opgraph_server.store.ViewCache`) until it changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from opgraph_server.dispatch import Call, method
from opgraph_server.params import kind
from opgraph_server.protocol import Packed, pack_chunked

AGGREGATE_LIMIT = 50
"""Groups listed by default in each list of a `graph.aggregate` answer."""
AGGREGATE_MEMBERS = 20
"""Node ids listed by default for a drill-down and each of its groups."""
AGGREGATE_BY = ("line", "part", "op", "call", "position")
DRILL_DOWN = ("by", "line", "part", "op", "call", "position")
"""The options that make a `graph.aggregate` a drill-down rather than the summary."""


def _count(call: Call, value: Any, what: str, default: int | None) -> int | None:
    """A non-negative integer option (nil: ``default``)."""
    if value is None:
        return default
    if call.integer(value, what) < 0:
        raise call.invalid(f"{what} must be at least 0, got {value}")
    return value


@method("graph.analyze", ("graph",), options=("root", "node", "leaf", "diagnostics", "limit",
                                              "group"))
async def graph_analyze(call: Call, graph: Any, root: Any = None, node: Any = None,
                        leaf: Any = None, diagnostics: Any = True, limit: Any = None,
                        group: Any = True) -> dict[str, Any]:
    """The analyses: size, depth, widths, critical path, dominators, influence, ops, and the
    diagnostics with their groups; every list cut to ``limit`` items (``counts``: all)."""
    from opgraph.analysis import analyze

    entry = call.entry(graph)
    for value, what in ((root, "root"), (node, "node"), (leaf, "leaf")):
        if value is not None:
            call.integer(value, what)
    limit = _count(call, limit, "limit", None)
    group = call.flag(group, "group")

    def report() -> Packed:
        data = analyze(entry.graph, root=root, node=node, leaf=leaf,
                       diagnostics=bool(diagnostics), limit=limit).to_dict()
        if not group:
            data.pop("diagnostic_groups", None)
        return pack_chunked({**data, "version": version})

    async with entry.lock.read():
        version = entry.graph.version
        return await call.in_thread(report)


@method("graph.diagnostics", ("graph",), options=("limit", "group"))
async def graph_diagnostics(call: Call, graph: Any, limit: Any = None,
                            group: Any = False) -> dict[str, Any]:
    """Diagnostics from the plugins: code, severity, node, message; the first ``limit`` of
    them, and with ``group``, grouped by code and site (``counts``: how many in all)."""
    from opgraph.diagnostic_groups import group_diagnostics
    from opgraph.diagnostics import run_diagnostics

    entry = call.entry(graph)
    limit = _count(call, limit, "limit", None)
    group = call.flag(group, "group")

    def report() -> Packed:
        result = run_diagnostics(entry.graph)
        found = result.diagnostics
        listed = found if limit is None else found[:limit]
        answer: dict[str, Any] = {
            "version": version,
            "diagnostics": [d.to_dict() for d in listed],
            "problems": [str(p) for p in result.problems],
            "counts": {"diagnostics": len(found), "occurrences": sum(d.count for d in found)},
        }
        if group:
            grouped = group_diagnostics(entry.graph, found, limit=limit)
            answer["groups"] = grouped["groups"]
            answer["counts"]["groups"] = grouped["counts"]["groups"]
        return pack_chunked(answer)

    async with entry.lock.read():
        version = entry.graph.version
        return await call.in_thread(report)


# (The handler's arguments are positional-only: one of its options is named ``call``.)
@method("graph.aggregate", ("graph",), options=(*DRILL_DOWN, "file", "limit", "members"))
async def graph_aggregate(call: Call, graph: Any, /, **options: Any) -> Any:
    """Summaries of many nodes at once: without a drill-down option, the whole graph and one
    group per source line, model part and op; with one (``line``, ``part``, ``op``, ``call``,
    ``position``, ``by``), the nodes that pass those filters and their groups.

    Computed once per version of the graph (later asks are answered from `Entry.views`), in a
    worker thread when the graph is big.
    """
    entry = call.entry(graph)
    key, view = _aggregate_view(call, options)
    async with entry.lock.read():
        g = entry.graph
        version = (g.version, len(g.nodes))
        answer = entry.views.get(version, key)
        if answer is not None:
            return answer
        from opgraph.aggregate import aggregates
        from opgraph.structure import OptionError

        def compute() -> Packed:
            return pack_chunked(view(aggregates(g)))

        try:
            answer = compute() if call.small(len(g.nodes)) else await call.in_thread(compute)
        except OptionError as exc:  # (an option out of range for this graph: no such line)
            raise call.invalid(str(exc)) from None
        entry.views.put(version, key, answer)
        return answer


def _aggregate_view(call: Call, options: dict[str, Any]) -> tuple[Any, Callable[[Any], Any]]:
    """``(cache key, view)`` for `graph.aggregate`'s options, checked: ``view(aggregates)`` is
    the summary or the drill-down they ask for."""
    limit = _count(call, options.get("limit"), "limit", AGGREGATE_LIMIT)
    file = options.get("file")
    if file is not None:
        file = call.text(file, "file", max_length=4096)
    drill = {name: options.get(name) for name in DRILL_DOWN if options.get(name) is not None}
    if not drill:
        if options.get("members") is not None:
            raise call.invalid("members lists the nodes of a drill-down: give line, part, op, "
                               "call, position or by")
        return ("summary", file, limit), lambda agg: agg.summary(limit=limit, file=file)
    members = _count(call, options.get("members"), "members", AGGREGATE_MEMBERS)
    line = _line_option(call, drill.get("line"), file)
    by = drill.get("by")
    if by is not None and by not in AGGREGATE_BY:
        raise call.invalid(f"by must be one of {', '.join(AGGREGATE_BY)}, got {kind(by)}")
    part, op = drill.get("part"), drill.get("op")
    if part is not None and (not call.text(part, "part", max_length=10_000)):
        raise call.invalid("part must not be empty")
    if op is not None:
        call.text(op, "op")
    which, position = drill.get("call"), drill.get("position")
    for value, what in ((which, "call"), (position, "position")):
        if value is not None:
            _count(call, value, what, None)
    key = ("query", line, part, op, which, position, by, limit, members)
    return key, lambda agg: agg.query(line=line, part=part, op=op, call=which,
                                      position=position, by=by, limit=limit, members=members)


@method("graph.render", ("graph",), options=("format", "around", "depth", "rankdir",
                                             "max_nodes", "diagnostics"))
async def graph_render(call: Call, graph: Any, format: Any = "svg", around: Any = None,
                       depth: Any = 2, rankdir: Any = "LR", max_nodes: Any = None,
                       diagnostics: Any = True) -> dict[str, Any]:
    """The graph drawn by graphviz: SVG or DOT text, or PNG bytes; whole or around a node.

    What the picture needs is read under the graph's read lock (in a worker thread); ``dot``
    lays it out after the lock is released, in a subprocess killed when the time limit passes
    or the request is cancelled (the client gone, the server stopping).
    """
    from opgraph.render import plan

    entry = call.entry(graph)
    if format not in ("svg", "dot", "png"):
        raise call.invalid(f"format must be 'svg', 'dot' or 'png', got {kind(format)}")
    if around is not None:
        call.integer(around, "around")
    depth = call.integer(depth, "depth")
    if not 0 <= depth <= 50:
        raise call.invalid("depth must be within 0..50")
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise call.invalid(f"rankdir must be LR, RL, TB or BT, got {kind(rankdir)}")
    limits = call.host.limits
    cap = limits.max_render_nodes
    limit = cap if max_nodes is None else min(call.integer(max_nodes, "max_nodes"), cap)
    if limit < 1:
        raise call.invalid(f"max_nodes must be at least 1, got {max_nodes!r}")
    deadline = asyncio.get_running_loop().time() + limits.request_timeout
    async with entry.lock.read():
        try:
            picture = await call.in_thread(lambda: plan(
                entry.graph, format=format, around=around, depth=depth, rankdir=rankdir,
                max_nodes=limit, max_layout=limits.max_render_layout,
                diagnostics=bool(diagnostics), fallback=True))
        except ValueError as exc:  # a neighbourhood too big to draw
            raise call.invalid(str(exc)) from None
        version = entry.graph.version
    image, picture = await call.layout(picture, deadline)
    data: Any = image if format == "png" else image.decode()
    return {"format": format, "data": data, "version": version, **picture.describe()}


def _line_option(call: Call, line: Any, file: str | None) -> tuple[str, int] | None:
    """``(file, line)`` from ``{file, line}``, ``[file, line]``, or an integer and ``file``."""
    shape = "line must be {file, line}, [file, line] or an integer with file"
    if type(line) is int:
        if file is None:
            raise call.invalid(f"line {line} needs file (or give line as {{file, line}})")
        return (file, line)
    if file is not None:
        raise call.invalid("file goes with an integer line (a drill-down), or alone (the "
                           "summary's lines of that file)")
    if line is None:
        return None
    if isinstance(line, dict) and set(line) == {"file", "line"}:
        pair = (line["file"], line["line"])
    elif isinstance(line, list) and len(line) == 2:
        pair = (line[0], line[1])
    else:
        raise call.invalid(f"{shape}, got {kind(line)}")
    if type(pair[0]) is not str or type(pair[1]) is not int:
        raise call.invalid(f"line must name a file (a string) and a line (an integer), got "
                           f"{kind(list(pair))}")
    return pair
