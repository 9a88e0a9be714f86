"""`Graph`: an expression graph held explicitly, its nodes addressed by stable integer ids.

A Graph is a second view of the same engine, not a second engine: its nodes are ordinary
`Value` objects (with ``id`` and ``graph`` set), built by the same op application and
differentiated by the same backward pass. Ids are given in creation order, and a node's inputs
always exist before it, so id order is a topological order. Arithmetic on a graph's values adds
the results to that graph, so ``x = g.leaf(2.0); y = x * x`` grows ``g``.

`snapshot` copies the graph under a root `Value` into a new `Graph`; `as_graph` gives the
`Graph` of anything the analyses take (a `Graph`, or a root `Value`).
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any

from opgraph import core
from opgraph.core import SourceLocation, Value, check_data, describe
from opgraph.errors import (
    GraphError,
    GraphLimitError,
    GraphMismatchError,
    InputTypeError,
    NodeNotFoundError,
    NotALeafError,
)


def _doubles(name: str, what: str, values: Sequence[float], count: int) -> array[float]:
    """``values`` as an array of ``count`` doubles, for `Graph.assign`."""
    where = f"graph {name!r}: assign: {what}"
    if not isinstance(values, array):
        try:
            kinds = set(map(type, values))
        except TypeError:
            raise InputTypeError(f"{where} must be a sequence of numbers, got "
                                 f"{type(values).__name__}") from None
        odd = kinds - {float, int}
        if odd:
            raise InputTypeError(f"{where} must be numbers, got "
                                 f"{', '.join(sorted(t.__name__ for t in odd))}")
    try:
        doubles = array("d", values)
    except (TypeError, OverflowError) as exc:
        raise InputTypeError(f"{where}: {exc}") from None
    if len(doubles) != count:
        raise GraphMismatchError(f"{where}: {len(doubles)} values for {count} nodes")
    return doubles


class Graph:
    """A named expression graph with integer node ids, mutable leaves and a version counter."""

    def __init__(self, name: str = "", *, max_nodes: int | None = None) -> None:
        if not isinstance(name, str):
            raise GraphError(f"graph name must be a string, got {type(name).__name__}")
        self.name = name
        self.max_nodes = max_nodes
        self.nodes: list[Value] = []
        self.version = 0

    def __repr__(self) -> str:
        return f"Graph(name={self.name!r}, nodes={len(self.nodes)}, version={self.version})"

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Value]:
        return iter(self.nodes)

    def __getitem__(self, node_id: int) -> Value:
        return self.node(node_id)

    # --- building ----------------------------------------------------------------------------

    def reserve(self, count: int) -> None:
        """Raise `GraphLimitError` unless ``count`` more nodes fit under ``max_nodes``."""
        if self.max_nodes is not None and len(self.nodes) + count > self.max_nodes:
            raise GraphLimitError(
                f"graph {self.name!r} holds {len(self.nodes)} nodes; adding {count} would pass "
                f"its limit of {self.max_nodes}"
            )

    def _register(self, value: Value) -> None:
        core.place(value, self, len(self.nodes))
        self.nodes.append(value)
        self.version += 1

    def adopt(self, root: Value) -> Value:
        """Add ``root`` and every free value it depends on to this graph; returns ``root``.

        (This is how a node made over this graph's values joins it: see `opgraph.core.Owner`.)
        """
        fresh = core.free_values(root, self)
        self.reserve(len(fresh))
        for value in fresh:
            self._register(value)
        return root

    @classmethod
    def capture(cls, root: Value, name: str = "", **options: Any) -> Graph:
        """A new graph holding ``root`` and everything it depends on (the values themselves)."""
        graph = cls(name, **options)
        graph.adopt(root)
        return graph

    def leaf(self, data: float, label: str = "", *, source: SourceLocation | None = None) -> Value:
        """A new leaf holding ``data``."""
        self.reserve(1)
        value = Value(check_data(data, f"graph {self.name!r} leaf data"), label=_label(label))
        if source is not None:
            core.set_source(value, _source(source))
        self._register(value)
        return value

    def apply(
        self,
        op: str,
        inputs: Sequence[int | Value],
        attrs: Mapping[str, Any] | None = None,
        *,
        label: str = "",
        source: SourceLocation | None = None,
    ) -> Value:
        """A new node: the installed op ``op`` over ``inputs`` (node ids or this graph's values)."""
        opdef = core.lookup(op)
        label = _label(label)  # checked before the node exists: a failed op adds nothing
        location = _source(source) if source is not None else None
        if not isinstance(inputs, list | tuple):
            raise GraphError(f"op {op!r}: inputs must be a list of node ids, got "
                             f"{type(inputs).__name__} {inputs!r}")
        if attrs is not None and not isinstance(attrs, Mapping):
            raise GraphError(f"op {op!r}: attributes must be a mapping, got "
                             f"{type(attrs).__name__} {attrs!r}")
        values = tuple(self._resolve(i, op, n) for n, i in enumerate(inputs))
        checked = core.check_application(opdef, values, attrs)
        self.reserve(1)
        node = core.compute(opdef, values, checked)
        self._register(node)
        if label:
            node.label = label
        if location is not None:
            core.set_source(node, location)
        return node

    def _resolve(self, ref: int | Value, what: str, index: int | None = None) -> Value:
        """The node ``ref`` names (an id or one of this graph's values); ``what`` and ``index``
        say where it was used, for the error message."""
        if type(ref) is int and 0 <= ref < len(self.nodes):
            return self.nodes[ref]
        where = what if index is None else f"input {index} of op {what!r}"
        if isinstance(ref, Value):
            if ref.graph is not self:
                raise GraphMismatchError(f"{where}: {describe(ref)} is not in graph "
                                         f"{self.name!r}")
            return ref
        try:
            return self.node(ref)
        except NodeNotFoundError as exc:
            raise NodeNotFoundError(f"{where}: {exc}") from None

    # --- reading ------------------------------------------------------------------------------

    def node(self, node_id: int) -> Value:
        """The node with id ``node_id``."""
        if type(node_id) is not int:
            raise NodeNotFoundError(f"graph {self.name!r}: node id must be an int, got "
                                    f"{type(node_id).__name__} {node_id!r}")
        if not 0 <= node_id < len(self.nodes):
            raise NodeNotFoundError(f"graph {self.name!r} has no node {node_id} "
                                    f"(ids are 0..{len(self.nodes) - 1})")
        return self.nodes[node_id]

    @property
    def leaves(self) -> list[Value]:
        """Nodes no op computed, in id order."""
        return [v for v in self.nodes if v.is_leaf]

    @property
    def outputs(self) -> list[Value]:
        """Nodes that no other node uses, in id order."""
        used = {id(i) for v in self.nodes for i in v.inputs}
        return [v for v in self.nodes if id(v) not in used]

    def find(self, label: str) -> list[Value]:
        """Nodes with this label, in id order."""
        return [v for v in self.nodes if v.label == label]

    # --- changing and recomputing -------------------------------------------------------------

    def set(self, node_id: int, data: float) -> list[int]:
        """Change leaf ``node_id`` to ``data`` and recompute what depends on it.

        Returns the ids of the nodes whose data was recomputed. If a downstream op fails on the
        new value, nothing changes and the op's error is raised.
        """
        leaf = self.node(node_id)
        if not leaf.is_leaf:
            raise NotALeafError(f"graph {self.name!r}: node {node_id} is computed by op "
                                f"{leaf.op!r}; only leaves can be set")
        data = check_data(data, f"graph {self.name!r} node {node_id} data")
        affected = core.dependents(leaf, self.nodes[node_id + 1:])
        old = [v.data for v in affected]
        leaf.data = data
        try:
            core.recompute(affected[1:])
        except Exception:
            for value, before in zip(affected, old, strict=True):
                value.data = before
            raise
        self.version += 1
        return [v.id for v in affected]  # type: ignore[misc]

    def forward(self) -> None:
        """Recompute every computed node from the leaves."""
        old = [v.data for v in self.nodes]
        try:
            core.recompute(self.nodes)
        except Exception:
            for value, before in zip(self.nodes, old, strict=True):
                value.data = before
            raise
        self.version += 1

    def assign(self, data: Sequence[float], grad: Sequence[float]) -> None:
        """Set every node's data and grad to the floats given in id order, as one new version,
        computing nothing: the values of a graph of the same structure computed elsewhere (a
        training step published again). Both sequences must have one number per node (ints are
        taken as the doubles they stand for); anything else changes nothing and raises
        `InputTypeError`, a wrong count `GraphMismatchError`."""
        n = len(self.nodes)
        data, grad = _doubles(self.name, "data", data, n), _doubles(self.name, "grad", grad, n)
        # map() runs the stores in C, a third of the time of a Python loop; a chunk at a time,
        # since a loop in C holds the interpreter lock (other threads wait) to its end.
        nodes, step = self.nodes, 1 << 16
        for start in range(0, n, step):
            part = nodes[start:start + step]
            deque(map(setattr, part, repeat("data"), data[start:start + step]), maxlen=0)
            deque(map(setattr, part, repeat("grad"), grad[start:start + step]), maxlen=0)
        self.version += 1

    def backward(self, root: int | Value) -> list[Value]:
        """Zero every gradient, then backpropagate from ``root``; returns the nodes it reached."""
        node = self._resolve(root, "backward root")
        before = [v.grad for v in self.nodes]
        self.zero_grad()
        order = core.topological_order(node)
        try:
            core.backward_over(order, node)
        except Exception:
            for value, grad in zip(self.nodes, before, strict=True):
                value.grad = grad  # a failed pass leaves every gradient as it was
            raise
        self.version += 1
        return order

    def checkpoint(self) -> tuple[int, int]:
        """A mark to `rollback` to: the node count and version now."""
        return (len(self.nodes), self.version)

    def rollback(self, mark: tuple[int, int]) -> None:
        """Remove every node added since ``checkpoint()`` returned ``mark``.

        For all-or-nothing batches: valid only while nothing else has used the newer nodes.
        """
        count, version = mark
        for value in self.nodes[count:]:
            core.place(value, None, None)
        del self.nodes[count:]
        self.version = version
        self.__dict__.pop("_nx_cache", None)
        self.__dict__.pop("_structure_cache", None)  # opgraph.structure's arrays

    def zero_grad(self) -> None:
        """Set every node's ``grad`` to 0."""
        for value in self.nodes:
            value.grad = 0.0


def _label(label: object) -> str:
    if not isinstance(label, str):
        raise GraphError(f"label must be a string, got {type(label).__name__} {label!r}")
    return label


def _source(source: object) -> SourceLocation:
    try:
        path, line = source  # type: ignore[misc]
    except (TypeError, ValueError):
        raise GraphError(f"source must be (file, line), got {source!r}") from None
    if not isinstance(path, str) or type(line) is not int or line < 0:
        raise GraphError(f"source must be (file: str, line: int), got {source!r}")
    return (path, line)


def snapshot(root: Value, name: str = "") -> Graph:
    """A new `Graph` holding copies of ``root`` and what it depends on, ids in topological order.

    The copies share data, grad, label, op, attributes and source, but the original values are
    left alone (they do not join the graph, unlike `Graph.capture`). Nothing is recomputed.
    """
    graph = Graph(name)
    copies: dict[Value, Value] = {}
    for value in core.topological_order(root):
        copy = core.copy_node(value, tuple(copies[i] for i in value.inputs))
        copies[value] = copy
        graph._register(copy)
    graph.version = 0
    return graph


def as_graph(target: object) -> Graph:
    """``target`` itself if it is a `Graph`, a `snapshot` if it is a `Value`."""
    if isinstance(target, Graph):
        return target
    if isinstance(target, Value):
        if isinstance(target.graph, Graph):
            return target.graph
        return snapshot(target)
    raise InputTypeError(f"expected a Graph or a Value, got {type(target).__name__}")
