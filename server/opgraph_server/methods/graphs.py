"""Whole graphs: ``graph.create``, ``graph.list``, ``graph.info``, ``graph.drop``,
``graph.export``, ``graph.import``, ``graph.publish``, ``graph.publish_values``."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from opgraph.graph import Graph
from opgraph_server.dispatch import Call, method
from opgraph_server.errors import RpcError
from opgraph_server.params import document_to_doubles, doubles, kind, settle
from opgraph_server.protocol import pack_chunked, unpack_chunked
from opgraph_server.store import Entry


def graph_summary(entry: Entry) -> dict[str, Any]:
    """Name, node count, version and subscriber count (from before a change in progress)."""
    return {"name": entry.name, "nodes": entry.size, "version": entry.version,
            "subscribers": len(entry.subscribers)}


@method("graph.create", ("name",), options=("replace",))
async def graph_create(call: Call, name: Any, replace: Any = False) -> dict[str, Any]:
    """A new, empty named graph."""
    name = call.text(name, "name")
    if not name:
        raise call.invalid("name must not be empty")
    replace = call.flag(replace, "replace")
    host = call.host
    old = host.graphs.get(name)
    if old is not None and not replace:
        raise RpcError("graph_exists", f"a graph named {name!r} exists (pass replace: true)")
    graph = Graph(name, max_nodes=host.limits.max_nodes)
    if old is not None:
        await host.replace_graph(old, graph)
        return graph_summary(old)
    return graph_summary(host.add_graph(graph))


@method("graph.list")
def graph_list(call: Call) -> list[dict[str, Any]]:
    """Every graph: name, node count, version, subscriber count."""
    return [graph_summary(e) for e in sorted(call.host.graphs.values(), key=lambda e: e.name)]


@method("graph.info", ("graph",))
async def graph_info(call: Call, graph: Any) -> dict[str, Any]:
    """A graph's size, version, leaves and outputs."""
    entry = call.entry(graph)
    async with entry.lock.read():
        g = entry.graph
        summary = graph_summary(entry)
        leaves, outputs = (_ends(g) if len(g.nodes) < 2_000
                           else await call.in_thread(_ends, g))
        info = {**summary, "leaves": leaves, "outputs": outputs}
    if call.host.durable is not None:  # where the graphs are kept, bytes on disk, limit
        info["store"] = call.host.durable.usage(entry)
    return info


def _ends(graph: Graph) -> tuple[list[int], list[int]]:
    """The ids of ``graph``'s leaves and of its outputs (nodes no node uses), in id order, from
    its structure's arrays (kept while the structure is unchanged): a million nodes in
    milliseconds once read, where a Python loop over them took a second."""
    import numpy as np

    from opgraph.structure import structure

    s = structure(graph)
    used = np.bincount(s.inputs, minlength=s.n) if len(s.inputs) else np.zeros(s.n, np.int64)
    return np.flatnonzero(s.is_leaf).tolist(), np.flatnonzero(used == 0).tolist()


@method("graph.drop", ("graph",))
async def graph_drop(call: Call, graph: Any) -> dict[str, Any]:
    """Delete a graph; its subscribers get ``graph.dropped``."""
    entry = call.entry(graph)
    async with entry.lock.write():
        call.host.drop_graph(entry)
    return {"graph": entry.name, "dropped": True}


@method("graph.export", ("graph",), options=("format",))
async def graph_export(call: Call, graph: Any, format: Any = "document") -> Any:
    """The graph in the file format: a map (default), or ``msgpack`` bytes, or ``json`` text."""
    from opgraph import fileformat

    entry = call.entry(graph)
    if format not in ("document", "msgpack", "json"):
        raise call.invalid(f"format must be 'document', 'msgpack' or 'json', got {kind(format)}")
    async with entry.lock.read():
        if format == "document":
            return await call.in_thread(lambda: pack_chunked(fileformat.to_document(
                entry.graph)))
        if format == "json":
            return await call.in_thread(fileformat.to_json, entry.graph)
        # The file's bytes as fileformat.dumps writes them, encoded node by node (see
        # pack_chunked: msgpack holds the interpreter lock for all of one call).
        return await call.in_thread(lambda: bytes(pack_chunked(
            fileformat.to_document(entry.graph), _file_packer())))


def _file_packer() -> Any:
    import msgpack

    return msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass")


@method("graph.import", ("graph", "data"), options=("replace",))
async def graph_import(call: Call, graph: Any, data: Any, replace: Any = False) -> dict[str, Any]:
    """Create (or with ``replace``, replace) a graph from the file format: a map or bytes."""
    return graph_summary(await _import(call, graph, data, call.flag(replace, "replace")))


@method("graph.publish", ("graph", "data"))
async def graph_publish(call: Call, graph: Any, data: Any) -> dict[str, Any]:
    """Create or replace a graph from a document (a client's local graph, with its sources).

    Subscribers see a new version, as for any other change. The answer's ``structure`` is a
    token for `graph.publish_values`: new values for this structure, sent as arrays.
    """
    entry = await _import(call, graph, data, True)
    token = secrets.token_hex(8)
    entry.published = (token, entry.graph, len(entry.graph.nodes))
    return {**graph_summary(entry), "structure": token}


@method("graph.publish_values", ("graph", "structure", "data", "grad"))
async def graph_publish_values(call: Call, graph: Any, structure: Any, data: Any,
                               grad: Any) -> dict[str, Any]:
    """New data and grad for every node of a graph `graph.publish` sent, whose structure is
    unchanged: ``data`` and ``grad`` are little-endian doubles, 8 bytes per node in id order.
    Nothing is recomputed. A graph that is no longer the one ``structure`` stands for is
    ``content_modified``: publish it whole."""
    entry = call.entry(graph)
    structure = call.text(structure, "structure")
    for what, blob in (("data", data), ("grad", grad)):
        if not isinstance(blob, bytes):
            raise call.invalid(f"{what} must be bytes (little-endian doubles, 8 per node), got "
                               f"{kind(blob)}")
    async with entry.lock.write():
        g = entry.graph
        count = len(g.nodes)
        stale = _stale(entry.published, structure, g, count)
        if stale:
            raise RpcError("content_modified", f"graph {entry.name!r} {stale}; publish it "
                           "whole (graph.publish)")
        for what, blob in (("data", data), ("grad", grad)):
            if len(blob) != 8 * count:
                raise call.invalid(f"{what} holds {len(blob)} bytes; the graph's {count} nodes "
                                   f"take {8 * count} (8 per node)")
        data_values, grad_values = doubles(data), doubles(grad)
        await call.change(entry, count, g.assign, data_values, grad_values)
        durable = call.host.durable
        if durable is not None:
            durable.assigned(entry, data_values, grad_values)
        call.host.changed(entry)
        return {**graph_summary(entry), "structure": structure}


def _stale(published: tuple[str, Graph, int] | None, token: str, graph: Graph,
           count: int) -> str:
    """Why ``graph`` (of ``count`` nodes) is not what structure ``token`` stands for, or ''."""
    if published is None:
        return "has not been sent by graph.publish since the server started"
    if published[0] != token:
        return f"was published again since structure {token!r} (it is now {published[0]!r})"
    if published[1] is not graph:
        return "was replaced since it was published"
    if published[2] != count:
        return f"has {count} nodes, not the {published[2]} it was published with"
    return ""


def _parse_file(data: bytes) -> Any:
    """The document in graph-file bytes. A big msgpack file is decoded node by node
    (`unpack_chunked`: the decoder would hold the interpreter lock for all of one call);
    anything it cannot read goes to the file loader, which says what is wrong."""
    from opgraph import fileformat

    if len(data) > 1 << 20 and data.lstrip()[:1] not in (b"{", b"[", b"\xef"):
        try:
            return unpack_chunked(data, level=1)
        except Exception:  # (fileformat.parse names the problem)
            pass
    return fileformat.parse(data)


def _load_document(doc: Any) -> Graph:
    """A graph from a decoded document: its numbers made doubles first, then every value
    checked to be sendable (so that a graph on the server can always be sent)."""
    from opgraph import fileformat

    graph = fileformat.from_document(document_to_doubles(doc))
    settle(graph.nodes, "graph.import")
    return graph


def _load_file(data: bytes) -> Graph:
    return _load_document(_parse_file(data))


async def _import(call: Call, name: Any, data: Any, replace: bool) -> Entry:
    name = call.text(name, "graph")
    if not name:
        raise call.invalid("graph name must not be empty")
    host = call.host
    old = host.graphs.get(name)
    if old is not None and not replace:
        raise RpcError("graph_exists", f"a graph named {name!r} exists (pass replace: true)")
    loader: Callable[[Any], Graph]
    if isinstance(data, bytes):
        loader = _load_file
    elif isinstance(data, dict):
        loader = _load_document
    else:
        raise call.invalid(f"data must be a graph document (map) or msgpack bytes, got "
                           f"{kind(data)}")
    nodes = data.get("nodes") if isinstance(data, dict) else None
    limit = host.limits.max_nodes
    if isinstance(nodes, list) and len(nodes) > limit:
        raise RpcError("limit_exceeded", f"the graph has {len(nodes)} nodes; the limit is {limit}")
    graph = await call.in_thread(loader, data)
    if len(graph.nodes) > limit:
        raise RpcError("limit_exceeded",
                       f"the graph has {len(graph.nodes)} nodes; the limit is {limit}")
    graph.name = name
    graph.max_nodes = limit
    if old is not None:
        await host.replace_graph(old, graph)
        return old
    return host.add_graph(graph)
