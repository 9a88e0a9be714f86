"""A graph's shape as flat numpy arrays, and the linear-time sweeps that analyses need.

`structure(graph)` reads a `Graph`'s nodes once into arrays (each node's input ids in CSR form,
its op, whether it is a leaf) and caches them on the graph while its structure is unchanged
(graphs only grow; `Graph.rollback` drops the cache). Data and gradients change without a
change of structure: `values(graph)` reads them afresh.

Every sweep here is linear in the nodes and edges it visits. They rely on what a `Graph`
guarantees: ids are a topological order (every input's id is smaller than its node's). A graph
that breaks it (a corrupt import can) has ``topological`` False, and callers fall back to
general algorithms.
"""

from __future__ import annotations

import math
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from opgraph.errors import OpgraphError

if TYPE_CHECKING:
    from opgraph.graph import Graph


class OptionError(OpgraphError, ValueError):
    """An option of an analysis or a summary that is out of range or of the wrong kind."""

_inputs_of = attrgetter("_inputs")
_opdef_of = attrgetter("_opdef")
_id_of = attrgetter("_id")
_data_of = attrgetter("data")
_grad_of = attrgetter("grad")


class Structure:
    """The shape of a graph of ``n`` nodes.

    ``indptr``/``inputs``: the inputs of node ``i`` are ``inputs[indptr[i]:indptr[i + 1]]``, one
    entry per use, in argument order. ``op_code[i]`` indexes ``op_names`` (-1 for a leaf).
    ``is_leaf[i]``: no op computed node ``i``. ``topological``: every input id is below its
    node's id. Derived arrays (users, levels, degrees) are computed on first use and kept.
    """

    def __init__(self, indptr: np.ndarray, inputs: np.ndarray, op_code: np.ndarray,
                 op_names: tuple[str, ...]) -> None:
        self.n = len(indptr) - 1
        self.indptr = indptr
        self.inputs = inputs
        self.op_code = op_code
        self.op_names = op_names
        self.is_leaf = op_code < 0
        self.arity = np.diff(indptr)
        self.owner = np.repeat(np.arange(self.n, dtype=np.int64), self.arity)  # node of each use
        self.topological = bool(np.all(inputs < self.owner)) if len(inputs) else True
        self._cache: dict[str, object] = {}

    def __repr__(self) -> str:
        return (f"Structure(nodes={self.n}, edges={len(self.inputs)}, "
                f"topological={self.topological})")

    # --- derived arrays -----------------------------------------------------------------------

    def users(self) -> tuple[np.ndarray, np.ndarray]:
        """``(use_ptr, users)``: the nodes that use node ``v`` are ``users[use_ptr[v]:use_ptr[v
        + 1]]``, in increasing id order, once per use."""
        if "users" not in self._cache:
            order = np.argsort(self.inputs, kind="stable")
            counts = np.bincount(self.inputs, minlength=self.n)
            ptr = np.zeros(self.n + 1, dtype=np.int64)
            np.cumsum(counts, out=ptr[1:])
            self._cache["users"] = (ptr, self.owner[order])
        return self._cache["users"]  # type: ignore[return-value]

    def use_counts(self) -> np.ndarray:
        """How many times each node is used as an input (``a * a`` uses ``a`` twice)."""
        ptr, _ = self.users()
        return np.diff(ptr)

    def lists(self) -> tuple[list[int], list[int]]:
        """``indptr`` and ``inputs`` as Python lists, for the sweeps written in Python (made
        afresh each time: kept, they would hold some 36 bytes an edge)."""
        return self.indptr.tolist(), self.inputs.tolist()

    def levels(self) -> np.ndarray:
        """The topological generation of each node: 0 for a node without inputs, else one more
        than its inputs' highest (the longest path to it from a source, in edges)."""
        if "levels" not in self._cache:
            self._cache["levels"] = np.asarray(_levels(self), dtype=np.int64)
        return self._cache["levels"]  # type: ignore[return-value]

    def distinct_degrees(self) -> tuple[np.ndarray, np.ndarray]:
        """``(in, out)``: each node's count of distinct inputs and of distinct users, as
        networkx counts degrees (``a * a`` is one edge)."""
        if "degrees" not in self._cache:
            keys = np.sort(self.owner * max(self.n, 1) + self.inputs)  # (np.unique is slower)
            if len(keys):
                keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
            dst, src = np.divmod(keys, max(self.n, 1))
            self._cache["degrees"] = (np.bincount(dst, minlength=self.n),
                                      np.bincount(src, minlength=self.n))
        return self._cache["degrees"]  # type: ignore[return-value]


def structure(graph: Graph) -> Structure:
    """The `Structure` of ``graph``, cached on it until a node is added (or rolled back)."""
    nodes = graph.nodes
    cached = graph.__dict__.get("_structure_cache")
    if cached is not None and cached[0] == len(nodes) and (not nodes or cached[1] is nodes[-1]):
        return cached[2]
    s = build_structure(nodes)
    graph.__dict__["_structure_cache"] = (len(nodes), nodes[-1] if nodes else None, s)
    return s


CHUNK = 1 << 16
"""How many items one C loop over a graph's nodes takes at most (`gather`, `listed`)."""


def gather(func: Any, items: list, dtype: Any) -> np.ndarray:
    """``np.fromiter(map(func, items), dtype)``, a `CHUNK` at a time. A loop in C holds the
    interpreter lock to its end, whatever the switch interval: over a million nodes that would
    stall a server's other threads (its event loop among them) for a tenth of a second;
    between chunks they get their turn."""
    n = len(items)
    if n <= CHUNK:
        return np.fromiter(map(func, items), dtype=dtype, count=n)
    out = np.empty(n, dtype=dtype)
    for start in range(0, n, CHUNK):
        part = items[start:start + CHUNK]
        out[start:start + len(part)] = np.fromiter(map(func, part), dtype=dtype, count=len(part))
    return out


def listed(func: Any, items: list) -> list:
    """``list(map(func, items))``, a `CHUNK` at a time (see `gather`)."""
    if len(items) <= CHUNK:
        return list(map(func, items))
    out: list = []
    for start in range(0, len(items), CHUNK):
        out.extend(map(func, items[start:start + CHUNK]))
    return out


def build_structure(nodes: list) -> Structure:
    """A `Structure` from a list of values whose ``_id`` is their position (a graph's)."""
    n = len(nodes)
    ins = listed(_inputs_of, nodes)
    arity = gather(len, ins, np.int64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(arity, out=indptr[1:])
    flat: list = []
    for start in range(0, n, CHUNK):
        flat.extend(chain.from_iterable(ins[start:start + CHUNK]))
    try:
        inputs = gather(_id_of, flat, np.int64)
    except TypeError:
        bad = next(v for v in flat if not isinstance(v.id, int))
        raise ValueError(f"a node's input {bad!r} has no id: it is not in the graph") from None
    op_code, ops = intern(listed(_opdef_of, nodes), None)
    return Structure(indptr, inputs, op_code.astype(np.int32), tuple(op.name for op in ops))


def intern(items: list, none: object) -> tuple[np.ndarray, list]:
    """``(codes, keys)``: each item's index in ``keys`` (the distinct items in order of first
    appearance, ``none`` left out), -1 for ``none``. Two passes at C speed."""
    keys = [k for k in dict.fromkeys(items) if k != none]
    index = {k: i for i, k in enumerate(keys)}
    index[none] = -1
    return gather(index.__getitem__, items, np.int64), keys


def values(graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """``(data, grad)`` of every node as float64 arrays, read now. An int too big for a float
    becomes an infinity of its sign."""
    nodes = graph.nodes
    return _floats(nodes, _data_of), _floats(nodes, _grad_of)


def _floats(nodes: list, get: Any) -> np.ndarray:
    try:
        return gather(get, nodes, np.float64)
    except OverflowError:
        return np.array([_as_float(get(v)) for v in nodes], dtype=np.float64)


def _as_float(x: float | int) -> float:
    try:
        return float(x)
    except OverflowError:
        return math.copysign(math.inf, x)


# --- sweeps ------------------------------------------------------------------------------------


def _levels(s: Structure) -> list[int]:
    """See `Structure.levels`. Nodes of up to two inputs go through a tight loop; wider ones
    (rare) are done one by one between runs of those."""
    n = s.n
    counts = s.arity
    wide = np.flatnonzero(counts > 2).tolist()
    lev = [0] * n + [-1]  # lev[n] = -1: the level of "no input"
    if len(wide) > n // 8:  # mostly wide nodes: the plain loop
        ptr, inputs = s.lists()
        get = lev.__getitem__
        for i in range(n):
            lo, hi = ptr[i], ptr[i + 1]
            if lo != hi:
                lev[i] = max(map(get, inputs[lo:hi])) + 1
        del lev[n]
        return lev
    first = np.full(n, n, dtype=np.int64)
    second = np.full(n, n, dtype=np.int64)
    has = counts >= 1
    first[has] = s.inputs[s.indptr[:-1][has]]
    has = counts >= 2
    second[has] = s.inputs[s.indptr[:-1][has] + 1]
    a_list, b_list = first.tolist(), second.tolist()
    start = 0
    for stop in [*wide, n]:
        for i, a, b in zip(range(start, stop), a_list[start:stop], b_list[start:stop],
                           strict=True):
            la = lev[a]
            lb = lev[b]
            lev[i] = (la if la > lb else lb) + 1
        if stop < n:
            lo, hi = s.indptr[stop], s.indptr[stop + 1]
            lev[stop] = max(lev[j] for j in s.inputs[lo:hi].tolist()) + 1
        start = stop + 1
    del lev[n]
    return lev


def ancestors(s: Structure, node: int) -> np.ndarray:
    """Boolean mask of ``node`` and every node it depends on (a walk over what it reaches)."""
    ptr, inputs = s.lists()
    mark = bytearray(s.n)
    mark[node] = 1
    stack = [node]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        for u in inputs[ptr[v]:ptr[v + 1]]:
            if not mark[u]:
                mark[u] = 1
                push(u)
    return np.frombuffer(mark, dtype=np.bool_)


def descendants(s: Structure, node: int) -> np.ndarray:
    """Boolean mask of ``node`` and every node that depends on it."""
    use_ptr, users = s.users()
    ptr, flat = use_ptr.tolist(), users.tolist()  # (once per call: a leaf may have many users)
    mark = bytearray(s.n)
    mark[node] = 1
    stack = [node]
    while stack:
        v = stack.pop()
        for u in flat[ptr[v]:ptr[v + 1]]:
            if not mark[u]:
                mark[u] = 1
                stack.append(u)
    return np.frombuffer(mark, dtype=np.bool_)


def critical_path(s: Structure) -> list[int]:
    """A longest path (most nodes), source first: it ends at the first node (by id) of the
    highest level, and each step back goes to the first input one level below."""
    if not s.n:
        return []
    lev = s.levels()
    ptr, inputs = s.lists()
    v = int(np.argmax(lev))
    path = [v]
    level = int(lev[v])
    lev_list = lev.tolist()
    while level:
        level -= 1
        for u in inputs[ptr[v]:ptr[v + 1]]:
            if lev_list[u] == level:
                v = u
                break
        path.append(v)
    path.reverse()
    return path


def near(s: Structure, center: int, depth: int) -> np.ndarray:
    """The ids within ``depth`` edges of ``center``, either way (inputs and users), sorted: a
    breadth-first walk that touches only what it finds."""
    use_ptr, users = s.users()
    indptr, inputs = s.indptr, s.inputs
    seen = {center}
    frontier = [center]
    for _ in range(depth):
        found = []
        for v in frontier:
            for u in (*inputs[indptr[v]:indptr[v + 1]].tolist(),
                      *users[use_ptr[v]:use_ptr[v + 1]].tolist()):
                if u not in seen:
                    seen.add(u)
                    found.append(u)
        if not found:
            break
        frontier = found
    return np.array(sorted(seen), dtype=np.int64)
