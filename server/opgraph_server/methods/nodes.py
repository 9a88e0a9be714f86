"""Nodes: ``node.leaf``, ``node.apply``, ``node.set``, ``node.get``, ``graph.nodes``,
``graph.batch``."""

from __future__ import annotations

import difflib
from typing import Any

from opgraph.core import Value
from opgraph.errors import OpgraphError
from opgraph.graph import Graph
from opgraph_server.dispatch import Call, method, translate
from opgraph_server.errors import RpcError
from opgraph_server.params import kind, source_option
from opgraph_server.protocol import pack_chunked
from opgraph_server.store import Entry

THREADED_RECORDS = 2_000
"""A ``node.get`` or ``graph.nodes`` of more records than this builds and encodes them in a
worker thread, under the graph's read lock (`pack_chunked`), so that the event loop goes on
answering others; fewer are quicker on the loop."""


def node_record(value: Value) -> dict[str, Any]:
    """A node as plain data: what ``node.get`` returns for each id."""
    op = value.opdef
    loc = value.source
    source = None if loc is None else [loc[0], loc[1]]
    if op is None:  # a leaf (about half the nodes of most graphs): nothing to look up
        return {"id": value.id, "op": None, "symbol": "", "inputs": [], "attrs": {},
                "data": value.data, "grad": value.grad, "label": value.label, "source": source}
    attrs = value.attrs
    return {
        "id": value.id,
        "op": op.name,
        "symbol": op.format_symbol(attrs),
        "inputs": [i.id for i in value.inputs],
        "attrs": attrs,
        "data": value.data,
        "grad": value.grad,
        "label": value.label,
        "source": source,
    }


@method("node.leaf", ("graph", "data"), options=("label", "source"))
async def node_leaf(call: Call, graph: Any, data: Any, label: Any = "",
                    source: Any = None) -> dict[str, Any]:
    """A new leaf; returns its id and the graph's version."""
    entry = call.entry(graph)
    data = call.data(data, "data")
    label = call.text(label, "label", max_length=10_000)
    where = source_option(source, call.method)
    async with entry.lock.write():
        node = entry.graph.leaf(data, label, source=where)
        call.host.changed(entry)
        return {"id": node.id, "data": node.data, "version": entry.graph.version}


@method("node.apply", ("graph", "op", "inputs"), options=("label", "source"), any_option=True)
async def node_apply(call: Call, graph: Any, op: Any, inputs: Any, label: Any = "",
                     source: Any = None, **attrs: Any) -> dict[str, Any]:
    """A new node from an op over node ids; other options are the op's attributes."""
    entry = call.entry(graph)
    op = call.text(op, "op")
    ids = call.ids(inputs, "inputs")
    label = call.text(label, "label", max_length=10_000)
    where = source_option(source, call.method)
    async with entry.lock.write():
        node = entry.graph.apply(op, ids, attrs, label=label, source=where)
        call.host.changed(entry)
        return {"id": node.id, "data": node.data, "version": entry.graph.version}


@method("node.set", ("graph", "id", "data"))
async def node_set(call: Call, graph: Any, id: Any, data: Any) -> dict[str, Any]:
    """Change a leaf's data; what depends on it is recomputed."""
    entry = call.entry(graph)
    node_id = call.integer(id, "id")
    data = call.data(data, "data")
    async with entry.lock.write():
        changed = await call.change(entry, len(entry.graph.nodes), entry.graph.set,
                                    node_id, data)
        call.host.changed(entry)
        return {"id": node_id, "changed": changed, "version": entry.graph.version}


@method("node.get", ("graph", "ids"))
def node_get(call: Call, graph: Any, ids: Any) -> Any:
    """Id, op, inputs, data, grad, label and source of each node (an awaitable of them when
    the graph is being changed or many are asked for)."""
    entry = call.entry(graph)
    wanted = call.ids(ids)
    # No lock: this read runs start to end on the event loop, and so does every change except
    # the big ones in worker threads (`Call.change`); while one of those runs, wait for it.
    if entry.lock.writing or len(wanted) > THREADED_RECORDS:
        return _node_get_waiting(call, entry, wanted)
    return _node_records(entry.graph, wanted)


async def _node_get_waiting(call: Call, entry: Entry, wanted: list[int]) -> Any:
    async with entry.lock.read():
        if len(wanted) > THREADED_RECORDS:
            return await call.in_thread(lambda: pack_chunked(_node_records(entry.graph,
                                                                           wanted)))
        return _node_records(entry.graph, wanted)


def _node_records(g: Graph, wanted: list[int]) -> dict[str, Any]:
    nodes, count = g.nodes, len(g.nodes)
    # g.node(i) checks and names a bad id; the common good one is indexed directly.
    return {"version": g.version,
            "nodes": [node_record(nodes[i] if 0 <= i < count else g.node(i)) for i in wanted]}


@method("graph.nodes", ("graph",), options=("start", "count"))
async def graph_nodes(call: Call, graph: Any, start: Any = 0, count: Any = 1000) -> dict[str, Any]:
    """A page of node records in id order (``start``, ``count``), for clients that show a graph."""
    entry = call.entry(graph)
    start = call.integer(start, "start")
    count = call.integer(count, "count")
    if start < 0 or not 0 <= count <= 100_000:
        raise call.invalid("start must be >= 0 and count within 0..100000")
    async with entry.lock.read():
        g = entry.graph

        def page() -> dict[str, Any]:
            return {"version": g.version, "total": len(g.nodes),
                    "nodes": [node_record(v) for v in g.nodes[start:start + count]]}

        if min(count, len(g.nodes) - start) > THREADED_RECORDS:
            return await call.in_thread(lambda: pack_chunked(page()))
        return page()


@method("graph.batch", ("graph", "steps"))
async def graph_batch(call: Call, graph: Any, steps: Any) -> dict[str, Any]:
    """Many leaf/apply steps in one request, all or nothing.

    A step is ``{"leaf": data, "label"?, "source"?}`` or ``{"op": name, "inputs": [...],
    "label"?, "source"?, "attrs"?}``; an input is a node id, or ``"$k"`` for the node made by
    step ``k`` of this batch. Returns the new ids in step order.
    """
    entry = call.entry(graph)
    if not isinstance(steps, list):
        raise call.invalid(f"steps must be a list, got {kind(steps)}")
    limit = call.host.limits.max_nodes
    if entry.size + len(steps) > limit:
        raise RpcError("limit_exceeded", f"{len(steps)} steps would take graph "
                                         f"{entry.name!r} over its limit of {limit} nodes")
    async with entry.lock.write():
        g = entry.graph
        mark = g.checkpoint()
        try:
            ids = await call.change(entry, len(steps), _run_steps_frozen, call, g, steps)
        except BaseException:
            if not call.host.stopping:  # (then a worker thread may still be changing it)
                g.rollback(mark)
            raise
        call.host.changed(entry)
        return {"ids": ids, "version": g.version}


def _run_steps_frozen(call: Call, g: Graph, steps: list[Any]) -> list[int]:
    # The new nodes are long-lived: kept out of the collector's reach, on the loop too.
    return call.host.frozen(_run_steps, call, g, steps)


def _run_steps(call: Call, g: Graph, steps: list[Any]) -> list[int]:
    made: list[int] = []
    for k, step in enumerate(steps):
        # Messages are built only on failure: this loop runs once per node of a big batch.
        if type(step) is not dict:
            raise call.invalid(f"step {k} must be a map, got {kind(step)}")
        if not _STEP_KEYS.issuperset(step) or ("op" in step) == ("leaf" in step):
            _refuse_step_keys(call, k, step)
        label = step.get("label", "")
        if type(label) is not str:
            label = call.text(label, f"step {k} label")
        source = step.get("source")
        if source is not None:
            source = source_option(source, call.method)
        try:
            if "op" in step:
                raw = step.get("inputs")
                if type(raw) is not list:
                    raise call.invalid(f"step {k} inputs must be a list, got {kind(raw)}")
                inputs = [r if type(r) is int else _step_ref(call, r, made, k, n)
                          for n, r in enumerate(raw)]
                attrs = step.get("attrs")
                if attrs is not None and type(attrs) is not dict:
                    raise call.invalid(f"step {k} attrs must be a map")
                op = step["op"]
                if type(op) is not str:
                    op = call.text(op, f"step {k} op")
                node = g.apply(op, inputs, attrs, label=label, source=source)
            elif "leaf" in step:
                data = step["leaf"]
                if type(data) is not float:
                    data = call.data(data, f"step {k} leaf")
                node = g.leaf(data, label, source=source)
            else:
                raise call.invalid(f"step {k} needs a 'leaf' or an 'op' key")
        except RpcError:
            raise
        except OpgraphError as exc:
            error = translate(exc)
            raise RpcError(error.name, f"graph.batch step {k}: {error.message}") from exc
        made.append(node.id)  # type: ignore[arg-type]
    return made


_STEP_KEYS = frozenset(("leaf", "op", "inputs", "attrs", "label", "source"))


def _refuse_step_keys(call: Call, k: int, step: dict[Any, Any]) -> None:
    for key in step:
        if key not in _STEP_KEYS:
            close = difflib.get_close_matches(str(key), list(_STEP_KEYS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise call.invalid(f"step {k}: unknown key {key!r}{hint}")
    raise call.invalid(f"step {k} needs exactly one of 'leaf' and 'op'")


def _step_ref(call: Call, ref: Any, made: list[int], step: int, index: int) -> int:
    """A step's input: a node id, or ``"$k"`` for the node made by step ``k`` of the batch."""
    if type(ref) is str and ref[:1] == "$" and ref[1:].isdigit():
        k = int(ref[1:])
        if k < len(made):
            return made[k]
        raise call.invalid(f"step {step} input {index}: {ref!r} refers to a step that is "
                           "not before it")
    raise call.invalid(f"step {step} input {index} must be a node id or '$k', got {kind(ref)}")
