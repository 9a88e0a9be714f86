"""Durability: every change to the server's graphs committed to a store before it is answered.

`Durable` sits between the server and a store (`opgraph_server.sqlite_store.SqliteStore`, the
one implementation; any object with its `GraphStore` methods will do). The server tells it of
each change as the change is made, on the event loop and under the graph's write lock
(`record`, `dropped`): it turns the change into rows, only what changed, against what it last
wrote of that graph:

- nodes added since: appended rows (id, op, inputs, attrs, label, source, data, grad);
- when the graph's version moved by more than the nodes added (``node.set``, a backward pass),
  the data and gradients that differ from those last written, as row updates;
- a graph replaced by another (``graph.publish``, ``graph.import``, ``graph.create`` with
  ``replace``) of the same structure: its values only, as above; of another structure: its rows
  rewritten;
- when most values changed at once (``graph.publish_values``, a backward pass over a big
  graph): the data and gradients of all its nodes as two arrays of doubles, one row
  (``values_blob``), instead of one row update per node.

Changes recorded in one turn of the event loop go in one transaction (group commit), in a
thread of their own while the loop goes on; changes recorded meanwhile go in the next one. Until
a commit is done, nothing the server sends (no response, no notification, to anyone) goes out:
`hold` keeps it, in order per connection, and the commit's end releases it. So an answer never
tells of a change that is not on disk, and a client pipelining requests is not slowed by the
wait: its next requests run meanwhile and share the next commit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from array import array
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol

from opgraph.graph import Graph
from opgraph_server.errors import RpcError
from opgraph_server.params import doubles, doubles_bytes
from opgraph_server.sqlite_store import Change, SqliteStore, StoredGraph, StoreError, number_in
from opgraph_server.sqlite_store import pack as _pack
from opgraph_server.sqlite_store import unpack as _unpack

if TYPE_CHECKING:
    from opgraph.core import Value
    from opgraph_server.store import Entry

log = logging.getLogger("opgraph.server")

WRITES = frozenset({
    "graph.create", "graph.import", "graph.publish", "node.leaf", "node.apply", "node.set",
    "graph.batch", "graph.backward", "graph.grads", "graph.eval", "graph.publish_values",
})
"""Methods that may grow the store: refused while it is over its size limit (`admit`).
``graph.drop`` is not among them: it is how space is freed."""


TINY = 2_000
"""A commit of at most this many rows runs on the event loop (a fraction of a millisecond);
bigger ones run in the commit thread while the loop goes on."""


class GraphStore(Protocol):
    """What `Durable` needs of a store: the whole interface another database implements
    (see "Durability" in docs/protocol.md). Every call but `size` runs in one thread, never
    on the event loop."""

    path: Any

    def open(self, quarantine: bool = False) -> tuple[list[StoredGraph], list[str]]:
        """Lock the store to this server, check and migrate it, and read every graph."""
        ...

    def quarantine(self, gid: int) -> None:
        """Set graph ``gid`` aside, keeping its rows."""
        ...

    def next_gid(self) -> int:
        """A graph id no row uses."""
        ...

    def commit(self, changes: list[Change]) -> None:
        """Apply ``changes`` (see `opgraph_server.sqlite_store.Change`) atomically."""
        ...

    def size(self) -> int:
        """Bytes on disk."""
        ...

    def graph_bytes(self, gid: int) -> int:
        """About the bytes graph ``gid`` takes (as of the last commit)."""
        ...

    def close(self) -> None:
        """Flush, close, unlock."""
        ...


class _Written:
    """What was last written of one graph: the graph object, its node count and version, and
    the data and gradient of each node."""

    __slots__ = ("blob", "count", "data", "gid", "grad", "graph", "version")

    def __init__(self, gid: int, graph: Graph) -> None:
        self.gid = gid
        self.graph = graph
        self.count = 0
        self.version = -1
        self.data: list[float] | array[float] = []
        self.grad: list[float] | array[float] = []
        self.blob = False
        """Whether the store holds this graph's values as arrays (``values_blob``): then every
        change of values rewrites them."""


def _num(x: Any) -> float:
    """A node's data or grad as a double (a gradient graph's grad is a node: its data)."""
    if type(x) is float:
        return x
    return float(getattr(x, "data", x))


def _stored_values(s: StoredGraph, where: str) -> tuple[int, array[float], array[float]] | None:
    """The values ``graph_values`` holds for ``s``, checked to fit its rows."""
    if s.values is None:
        return None
    count, data, grad = s.values
    if not (isinstance(data, bytes) and isinstance(grad, bytes) and isinstance(count, int)
            and len(data) == len(grad) == 8 * count and 0 <= count <= s.count):
        raise StoreError(f"{where}: its stored values do not fit its {s.count} nodes (count "
                         f"{count!r}, {len(data) if isinstance(data, bytes) else '?'} bytes of "
                         "data)")
    return count, doubles(data), doubles(grad)


def _structure(v: Value) -> tuple[Any, ...]:
    op = v.opdef
    if op is None:
        return (None, v.label, v.source)
    return (op.name, [i.id for i in v.inputs], dict(v.attrs), v.label, v.source)


class Durable:
    """The server's side of a store: recording changes, committing them in groups, holding
    output until its changes are committed, the size limit."""

    def __init__(self, store: GraphStore, max_bytes: int | None = None) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.recorded = 0
        """Changes recorded (a counter); `committed` catches up with it."""
        self.committed = 0
        self.size = 0
        """Bytes on disk after the last commit."""
        self.quarantined: list[str] = []
        self._written: dict[Entry, _Written] = {}
        self._next_gid = 1
        self._changes: list[Change] = []
        self._held: dict[Any, deque[tuple[int, bytes]]] = {}
        self._running: asyncio.Future[None] | None = None
        self._scheduled = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opgraph-commit")

    # --- opening ------------------------------------------------------------------------

    def open(self, quarantine: bool = False) -> list[Graph]:
        """Read the store (before serving): its graphs, built and checked. A graph whose rows
        are not a graph raises `StoreError`, or with ``quarantine`` is set aside (its rows kept)
        and named in `quarantined`."""
        stored, _ = self.store.open(quarantine)
        graphs: list[tuple[StoredGraph, Graph]] = []
        for s in stored:
            try:
                graphs.append((s, self._build(s)))
            except StoreError as exc:
                if not quarantine:
                    raise StoreError(f"{exc}; not starting (start with --quarantine to set "
                                     "this graph aside and serve the others)") from None
                self.store.quarantine(s.gid)
                message = (f"{exc}; quarantined: the graph is set aside, its rows kept in the "
                           "file as they are, and its name is free")
                log.error("%s", message)
                self.quarantined.append(message)
        self._next_gid = self.store.next_gid()
        self.size = self.store.size()
        self._loaded = graphs
        return [g for _, g in graphs]

    def _build(self, s: StoredGraph) -> Graph:
        from opgraph import fileformat
        from opgraph.errors import OpgraphError

        where = f"{self.store.path}: graph {s.name!r}"
        nodes = [] if s.columns is None else _from_columns(*s.columns, where)
        first = len(nodes)
        if first + len(s.rows) != s.count:
            raise StoreError(f"{where} should have {s.count} nodes, the file holds "
                             f"{first + len(s.rows)} of them")
        values = _stored_values(s, where)
        if first:
            if values is None or values[0] < first:
                raise StoreError(f"{where}: the values of its first {first} nodes are missing")
            for node, data, grad in zip(nodes, values[1], values[2], strict=False):
                node["data"], node["grad"] = data, grad
        for k, (i, op, inputs, attrs, label, file, line, data, grad) in enumerate(s.rows,
                                                                                 start=first):
            if i != k:
                raise StoreError(f"{where}: node {k} is missing (the next row is node {i})")
            if values is not None and k < values[0]:
                data, grad = values[1][k], values[2][k]
            try:
                nodes.append({"id": i, "op": op, "inputs": _unpack(inputs, []),
                              "attrs": _unpack(attrs, {}), "label": label,
                              "data": number_in(data), "grad": number_in(grad),
                              "source": None if file is None else [file, line]})
            except Exception as exc:
                raise StoreError(f"{where}: node {i} cannot be read ({exc})") from None
        doc = {"format": "opgraph-graph", "version": 1, "name": s.name, "nodes": nodes}
        try:
            graph = fileformat.from_document(doc)
        except (OpgraphError, ValueError) as exc:
            raise StoreError(f"{where} is not a valid graph: {exc}") from None
        graph.version = s.version
        return graph

    def attach(self, entry: Entry) -> None:
        """Take ``entry`` (a graph `open` read, now on the server) as written."""
        for s, graph in self._loaded:
            if graph is entry.graph:
                w = _Written(s.gid, graph)
                self._remember(w, graph)
                w.blob = s.values is not None
                self._written[entry] = w
                return
        raise ValueError(f"graph {entry.name!r} was not read from the store")

    # --- recording ----------------------------------------------------------------------

    @staticmethod
    def _remember(w: _Written, graph: Graph) -> None:
        w.graph = graph
        w.count = len(graph.nodes)
        w.version = graph.version
        w.data, w.grad = _snapshot(graph.nodes)
        w.blob = False  # (rows just written hold the values; `attach` says otherwise)

    def _all_rows(self, w: _Written, nodes: list[Value], start: int, end: int) -> None:
        """Rows of ``nodes[start:end]`` appended, with the values `w` holds for them: made now
        when few, else in the commit thread (``"nodes"``), off the event loop (the nodes'
        structure never changes; their values are those `w` took now)."""
        if end - start <= TINY:
            self._changes.append(("rows", w.gid, _rows(nodes, start, end)))
        else:
            if start == 0:
                w.blob = True  # (written as columns, whose values are the arrays)
            self._changes.append(("nodes", w.gid, start, nodes[start:end], w.data[start:end],
                                  w.grad[start:end]))

    def record(self, entry: Entry) -> None:
        """Note what changed in ``entry``'s graph since it was last recorded (on the loop, the
        graph not being changed by anyone else meanwhile)."""
        if entry.dropped:
            return
        graph = entry.graph
        w = self._written.get(entry)
        nodes = graph.nodes
        count = len(nodes)
        changes = self._changes
        before = len(changes)
        if w is None:
            w = self._written[entry] = _Written(self._next_gid, graph)
            self._next_gid += 1
            changes.append(("graph", w.gid, entry.name, graph.version, count))
            self._remember(w, graph)
            self._all_rows(w, nodes, 0, count)
        elif w.graph is not graph:  # replaced
            old = w.graph.nodes
            if count == w.count and count > TINY:
                # Same structure or not is found in the commit thread: it writes the values
                # as arrays then (which every later change of values rewrites), or the rows.
                self._remember(w, graph)
                w.blob = True
                changes.append(("replace", w.gid, old[:count], nodes[:count],
                                array("d", w.data), array("d", w.grad)))  # (copies)
            elif count == w.count and all(_structure(a) == _structure(b)
                                          for a, b in zip(nodes, old, strict=True)):
                self._values(w, nodes, count)
            else:
                changes.append(("clear", w.gid))
                self._remember(w, graph)
                self._all_rows(w, nodes, 0, count)
            changes.append(("graph", w.gid, entry.name, graph.version, count))
            w.graph, w.count, w.version = graph, count, graph.version
        elif graph.version != w.version or count != w.count:
            if count < w.count:  # (not made by any method: rewrite rather than guess)
                changes.append(("clear", w.gid))
                self._remember(w, graph)
                self._all_rows(w, nodes, 0, count)
            else:
                if graph.version - w.version != count - w.count:  # values changed too
                    self._values(w, nodes, w.count)
                if count > w.count:
                    rows = _rows(nodes, w.count, count) if count - w.count <= TINY else None
                    if rows is not None:  # (the rows hold the values, read once)
                        w.data.extend([r[7] for r in rows])
                        w.grad.extend([r[8] for r in rows])
                    else:
                        data, grad = _snapshot(nodes[w.count:])
                        w.data.extend(data)
                        w.grad.extend(grad)
                    if rows is None:
                        self._all_rows(w, nodes, w.count, count)
                        changes.append(("graph", w.gid, entry.name, graph.version, count))
                        w.count, w.version = count, graph.version
                        self._touch()
                        return
                    if (len(changes) >= 2 and changes[-1][0] == "graph"
                            and changes[-1][1] == w.gid and changes[-2][0] == "rows"
                            and changes[-2][1] == w.gid):
                        # The same graph grew again in this commit (pipelined node.leaf):
                        # one statement for all its new rows, one update of its version.
                        changes[-2][2].extend(rows)
                        changes[-1] = ("graph", w.gid, entry.name, graph.version, count)
                        w.count, w.version = count, graph.version
                        self._touch()
                        return
                    changes.append(("rows", w.gid, rows))
            changes.append(("graph", w.gid, entry.name, graph.version, count))
            w.count, w.version = count, graph.version
        if len(changes) != before:
            self._touch()

    def assigned(self, entry: Entry, data: array[float], grad: array[float]) -> bool:
        """Note that every value of ``entry``'s graph was just set to ``data`` and ``grad``
        (`Graph.assign`, one version later): written as two arrays, compared with nothing.
        False when the graph is not one this store wrote as it is now (then `record` works
        out what changed)."""
        w = self._written.get(entry)
        graph = entry.graph
        count = len(graph.nodes)
        if w is None or w.graph is not graph or w.count != count or len(data) != count:
            return False
        w.data, w.grad = array("d", data), array("d", grad)
        self._blob(w, count)
        self._changes.append(("graph", w.gid, entry.name, graph.version, count))
        w.version = graph.version
        self._touch()
        return True

    def _blob(self, w: _Written, count: int) -> None:
        w.blob = True
        data, grad = array("d", w.data[:count]), array("d", w.grad[:count])
        self._changes.append(("values_blob", w.gid, count, doubles_bytes(data),
                              doubles_bytes(grad)))

    def _values(self, w: _Written, nodes: list[Value], count: int) -> None:
        data, grad, updates = w.data, w.grad, []
        for i in range(count):
            v = nodes[i]
            d, g = v.data, v.grad
            if type(d) is not float or type(g) is not float:
                d, g = _num(d), _num(g)
            if (d != data[i] or g != grad[i]) and not (_same(d, data[i])
                                                        and _same(g, grad[i])):
                updates.append((d, g, i))
                data[i], grad[i] = d, g
        if w.blob or len(updates) > max(TINY, count // 8):
            self._blob(w, count)  # (the arrays hold every value: they replace the rows')
        elif updates:
            self._changes.append(("values", w.gid, updates))

    def dropped(self, entry: Entry) -> None:
        """Note that ``entry``'s graph was dropped."""
        w = self._written.pop(entry, None)
        if w is not None:
            self._changes.append(("drop", w.gid))
            self._touch()

    # --- committing ---------------------------------------------------------------------

    def _touch(self) -> None:
        self.recorded += 1
        if not self._scheduled and self._running is None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if self._running is not None or not self._changes:
            return
        changes, self._changes = self._changes, []
        seq = self.recorded
        loop = asyncio.get_running_loop()
        if sum(_weight(c) for c in changes) <= TINY:
            future = loop.create_future()  # quicker here than a thread's round trip
            try:
                self.store.commit(_plain(changes))
                future.set_result(None)
            except Exception as exc:
                future.set_exception(exc)
        else:
            future = loop.run_in_executor(self._pool, self._commit_plain, changes)
        self._running = future
        future.add_done_callback(lambda f: self._done(f, seq))

    def _commit_plain(self, changes: list[Change]) -> None:
        """Commit ``changes`` (in the commit thread), the deferred ones made plain first."""
        self.store.commit(_plain(changes))

    def _done(self, future: asyncio.Future[None], seq: int) -> None:
        self._running = None
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or exc is not None:
            # What is in memory is no longer what is on disk, and nothing of it was answered:
            # stop serving it rather than answer from a state a restart would not have.
            log.critical("committing to %s failed (%s); exiting without answering the "
                         "changes since the last commit", self.store.path, exc or "cancelled")
            logging.shutdown()
            os._exit(70)
        self.committed = seq
        self.size = self.store.size()
        self._release()
        waiters, self._waiters = self._waiters, []
        for target, waiter in waiters:
            if target <= seq:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                self._waiters.append((target, waiter))
        if self._changes:
            self._start()

    def hold(self, session: Any, data: bytes) -> bool:
        """Keep ``data`` (output for ``session``) until the changes recorded so far are
        committed; False when there are none to wait for (send it now)."""
        queue = self._held.get(session)
        if queue is None:
            if self.recorded == self.committed:
                return False
            queue = self._held[session] = deque()
        queue.append((self.recorded, data))
        return True

    def _release(self) -> None:
        committed = self.committed
        for session, queue in list(self._held.items()):
            ready = []
            while queue and queue[0][0] <= committed:
                ready.append(queue.popleft()[1])
            if not queue:
                del self._held[session]
            if ready:
                session.release(ready)

    def forget(self, session: Any) -> None:
        """Drop what was held for a closed connection."""
        self._held.pop(session, None)

    async def settle(self) -> None:
        """Wait until every change recorded so far is committed."""
        target = self.recorded
        if self.committed >= target:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        await waiter

    # --- limits, reports, closing -------------------------------------------------------

    def admit(self, method: str) -> None:
        """Refuse a change while the store is over its size limit."""
        if self.max_bytes is not None and self.size >= self.max_bytes and method in WRITES:
            raise RpcError("limit_exceeded", f"{method}: the store {self.store.path} takes "
                           f"{self.size} bytes, its limit of {self.max_bytes}; drop graphs to "
                           "free space", {"limit": "max_store_bytes", "max": self.max_bytes})

    def usage(self, entry: Entry | None = None) -> dict[str, Any]:
        """Where the store is, the bytes it takes on disk and its limit (None: none); with
        ``entry``, about how many of them its graph takes (``graph_bytes``, as of the last
        commit)."""
        usage: dict[str, Any] = {"path": str(self.store.path), "bytes": self.size,
                                 "max_bytes": self.max_bytes}
        if entry is not None:
            w = self._written.get(entry)
            usage["graph_bytes"] = 0 if w is None else self.store.graph_bytes(w.gid)
        return usage

    async def close(self) -> None:
        """Commit what is recorded, then close the store (and release its lock)."""
        while self._running is not None or self._changes:
            if self._running is None:
                self._start()
            await self.settle()
        self._pool.shutdown(wait=True)
        self.store.close()


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


_DATA, _GRAD = attrgetter("data"), attrgetter("grad")


def _snapshot(nodes: list[Value]) -> tuple[array[float], array[float]]:
    """The data and gradients of ``nodes`` as doubles (read in C when they are floats)."""
    try:
        return array("d", map(_DATA, nodes)), array("d", map(_GRAD, nodes))
    except TypeError:  # (a gradient that is a node: its data)
        return (array("d", [_num(v.data) for v in nodes]),
                array("d", [_num(v.grad) for v in nodes]))


def _weight(change: Change) -> int:
    """About how many rows ``change`` writes (what decides where a commit runs)."""
    kind = change[0]
    if kind in ("rows", "values"):
        return len(change[2])
    if kind in ("nodes", "replace"):
        return len(change[3])
    return 1


def _plain(changes: list[Change]) -> list[Change]:
    """``changes`` as the store takes them: the deferred kinds `Durable` records for big
    graphs (``"nodes"``: rows to make from nodes, with their values as recorded;
    ``"replace"``: a graph replaced by one of as many nodes, same structure or not) made
    into rows here, in the commit thread."""
    out: list[Change] = []
    for change in changes:
        kind = change[0]
        if kind == "nodes":
            _, gid, start, nodes, data, grad = change
            if start:
                out.append(("rows", gid, _rows(nodes, 0, len(nodes), start, data, grad)))
            else:
                out.append(("columns", gid, len(nodes), _columns(nodes)))
                out.append(("values_blob", gid, len(nodes), doubles_bytes(data),
                            doubles_bytes(grad)))
        elif kind == "replace":
            _, gid, old, new, data, grad = change
            if not all(_structure(a) == _structure(b) for a, b in zip(new, old, strict=True)):
                out.append(("clear", gid))
                out.append(("columns", gid, len(new), _columns(new)))
            out.append(("values_blob", gid, len(new), doubles_bytes(data), doubles_bytes(grad)))
        else:
            out.append(change)
    return out


_OPDEF, _INPUTS, _ID = attrgetter("opdef"), attrgetter("inputs"), attrgetter("id")
_LABEL, _SOURCE = attrgetter("label"), attrgetter("source")


def _columns(nodes: list[Value]) -> bytes:
    """Nodes ``0 .. len(nodes)-1`` of a graph as one msgpack map of columns (values apart):
    ``op`` (names, nil for leaves), ``arity`` (int32s) and ``inputs`` (their ids, int64s, in
    order), ``attrs`` (``[id, map]`` for the nodes that have some), ``label``, ``files`` (the
    distinct source files) with ``file`` (an index into it per node, -1 for none, int32s) and
    ``line`` (int64s); numbers little-endian. Made in C where it can be."""
    import numpy as np

    ops = list(map(_OPDEF, nodes))
    inputs = list(map(_INPUTS, nodes))
    attrs = ([[i, dict(v.attrs)] for i, v in enumerate(nodes) if v.opdef and v.opdef.attrs]
             if any(op is not None and op.attrs for op in set(ops)) else [])
    sources = list(map(_SOURCE, nodes))
    files = {f: i for i, f in enumerate(dict.fromkeys(s[0] for s in sources if s is not None))}
    return _pack({
        "op": [None if op is None else op.name for op in ops],
        "arity": np.fromiter(map(len, inputs), "<i4", len(nodes)).tobytes(),
        "inputs": np.fromiter(map(_ID, chain.from_iterable(inputs)), "<i8").tobytes(),
        "attrs": attrs,
        "label": list(map(_LABEL, nodes)),
        "files": list(files),
        "file": np.array([-1 if s is None else files[s[0]] for s in sources], "<i4").tobytes(),
        "line": np.array([0 if s is None else s[1] for s in sources], "<i8").tobytes(),
    })


def _from_columns(count: int, blob: bytes, where: str) -> list[dict[str, Any]]:
    """The nodes (documents without values) `_columns` wrote, or `StoreError` saying why not."""
    import numpy as np

    try:
        c = _unpack(blob, None)
        arity = np.frombuffer(c["arity"], "<i4")
        wiring = np.frombuffer(c["inputs"], "<i8").tolist()
        ops, labels, files = c["op"], c["label"], c["files"]
        file_of = np.frombuffer(c["file"], "<i4").tolist()
        lines = np.frombuffer(c["line"], "<i8").tolist()
        attrs = {i: a for i, a in c["attrs"]}
        if not (len(arity) == len(ops) == len(labels) == len(file_of) == len(lines) == count
                and (arity >= 0).all() and int(arity.sum()) == len(wiring)):
            raise ValueError("columns of different lengths")
        ends = np.cumsum(arity).tolist()
        nodes, start = [], 0
        for i in range(count):
            end = ends[i]
            f = file_of[i]
            nodes.append({"id": i, "op": ops[i], "inputs": wiring[start:end],
                          "attrs": attrs.get(i, {}), "label": labels[i],
                          "source": None if f < 0 else [files[f], lines[i]]})
            start = end
    except Exception as exc:
        raise StoreError(f"{where}: its nodes' columns cannot be read ({exc})") from None
    return nodes


def _rows(nodes: list[Value], start: int, end: int, first: int = 0,
          data: array[float] | None = None, grad: array[float] | None = None
          ) -> list[tuple[Any, ...]]:
    """Rows ``(id, op, inputs, attrs, label, src_file, src_line, data, grad)`` of
    ``nodes[start:end]``, the first being node ``first + start``; with ``data`` and ``grad``
    (indexed as ``nodes``), the values are those, not the nodes' own."""
    rows = []
    for k in range(start, end):
        v = nodes[k]
        i = first + k
        op = v.opdef
        if data is not None and grad is not None:
            d, g = data[k], grad[k]
        else:
            d, g = v.data, v.grad
            if type(d) is not float or type(g) is not float:
                d, g = _num(d), _num(g)
        loc = v.source
        file, line = (None, None) if loc is None else (str(loc[0]), int(loc[1]))
        if op is None:
            rows.append((i, None, None, None, v.label, file, line, d, g))
        else:
            attrs = v.attrs
            rows.append((i, op.name, _pack([x.id for x in v.inputs]),
                         _pack(dict(attrs)) if attrs else None, v.label, file, line, d, g))
    return rows


def open_durable(path: str | os.PathLike[str], *, quarantine: bool = False,
                 max_bytes: int | None = None) -> tuple[Durable, list[Graph]]:
    """A `Durable` over the SQLite store at ``path`` and the graphs it holds."""
    durable = Durable(SqliteStore(path), max_bytes)
    try:
        graphs = durable.open(quarantine)
    except BaseException:
        durable.store.close()
        raise
    return durable, graphs
