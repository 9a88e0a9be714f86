"""Views of a graph, read under its read lock in worker threads: ``graph.analyze``,
``graph.diagnostics``, ``graph.render``."""

from __future__ import annotations

import asyncio
from typing import Any

from opgraph_server.dispatch import Call, method
from opgraph_server.params import kind
from opgraph_server.protocol import Packed, pack_chunked


@method("graph.analyze", ("graph",), options=("root", "node", "leaf", "diagnostics"))
async def graph_analyze(call: Call, graph: Any, root: Any = None, node: Any = None,
                        leaf: Any = None, diagnostics: Any = True) -> dict[str, Any]:
    """networkx analyses: size, depth, widths, critical path, dominators, influence, ops."""
    from opgraph.analysis import analyze

    entry = call.entry(graph)
    for value, what in ((root, "root"), (node, "node"), (leaf, "leaf")):
        if value is not None:
            call.integer(value, what)
    async with entry.lock.read():
        version = entry.graph.version
        return await call.in_thread(lambda: pack_chunked({**analyze(
            entry.graph, root=root, node=node, leaf=leaf,
            diagnostics=bool(diagnostics)).to_dict(), "version": version}))


@method("graph.diagnostics", ("graph",))
async def graph_diagnostics(call: Call, graph: Any) -> dict[str, Any]:
    """Diagnostics from the plugins: code, severity, node, message."""
    from opgraph.diagnostics import run_diagnostics

    entry = call.entry(graph)
    async with entry.lock.read():
        version = entry.graph.version

        def report() -> Packed:
            result = run_diagnostics(entry.graph)
            return pack_chunked({"version": version,
                                 "diagnostics": [d.to_dict() for d in result.diagnostics],
                                 "problems": [str(p) for p in result.problems]})

        return await call.in_thread(report)


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
