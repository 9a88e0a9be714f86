"""`RemoteGraph`: a handle on one named graph of a server, with one method per RPC method."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any

from opgraph_client.errors import GraphExistsError, exists_in_python


def local_document(root: Any) -> dict[str, Any]:
    """The graph-file document of the local graph under ``root`` (a Value), sources included."""
    from opgraph import fileformat, gc_paused

    with gc_paused():  # (a map a node: the collector would scan the graph for each few hundred)
        return fileformat.to_document(root)


async def _exists_in_python_async(result: Awaitable[Any], name: str, how: str) -> Any:
    try:
        return await result
    except GraphExistsError as exc:
        raise exists_in_python(exc, name, how) from None


class RemoteGraph:
    """Graph ``name`` on the server ``client`` talks to.

    With a `Client` each method returns the result; with an `AsyncClient` it returns an
    awaitable of it. Node ids are the server's.
    """

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"RemoteGraph({self.name!r} on {self.client.url})"

    def create(self, *, replace: bool = False) -> Any:
        """Create this graph on the server (``replace``: in place of one of that name)."""
        how = f"graph({self.name!r}).create(replace=True)"
        try:
            result = self.client.call("graph.create", self.name, replace=replace)
        except GraphExistsError as exc:
            raise exists_in_python(exc, self.name, how) from None
        if inspect.isawaitable(result):
            return _exists_in_python_async(result, self.name, "await " + how)
        return result

    def info(self) -> Any:
        """Node count, version, leaves and outputs."""
        return self.client.call("graph.info", self.name)

    def drop(self) -> Any:
        """Delete this graph."""
        return self.client.call("graph.drop", self.name)

    def leaf(self, data: float, label: str = "", **options: Any) -> Any:
        """A new leaf: ``{"id", "data", "version"}``."""
        if label:
            options["label"] = label
        return self.client.call("node.leaf", self.name, data, **options)

    def apply(self, op: str, inputs: list[int], *, label: str = "", **attrs: Any) -> Any:
        """A new node from ``op`` over node ids: ``{"id", "data", "version"}``."""
        if label:
            attrs["label"] = label
        return self.client.call("node.apply", self.name, op, inputs, **attrs)

    def set(self, node_id: int, data: float) -> Any:
        """Change a leaf; downstream nodes are recomputed."""
        return self.client.call("node.set", self.name, node_id, data)

    def get(self, ids: int | list[int]) -> Any:
        """Records of the nodes ``ids``: ``{"version", "nodes": [...]}``."""
        return self.client.call("node.get", self.name, ids)

    def nodes(self, start: int = 0, count: int = 1000) -> Any:
        """A page of node records."""
        return self.client.call("graph.nodes", self.name, start=start, count=count)

    def batch(self, steps: list[dict[str, Any]]) -> Any:
        """Many steps in one request, all or nothing."""
        return self.client.call("graph.batch", self.name, steps)

    def eval(self, expression: str, **bindings: Any) -> Any:
        """Parse ``expression`` into nodes; names bound to numbers or ``{"id": n}``."""
        return self.client.call("graph.eval", self.name, expression, bindings)

    def backward(self, root: int, *, create_graph: bool = False) -> Any:
        """Zero the gradients and backpropagate from ``root``; with ``create_graph``, the
        gradient of ``root`` with respect to each leaf it reaches is added to the graph as
        nodes too (``grad_ids``: leaf id to gradient node id)."""
        if create_graph:
            return self.client.call("graph.backward", self.name, root, create_graph=True)
        return self.client.call("graph.backward", self.name, root)

    def grads(self, root: int, ids: list[int], *, create_graph: bool = False) -> Any:
        """Backpropagate from ``root`` and return the gradients of ``ids``; with
        ``create_graph``, each is added to the graph as nodes too (``grad_ids``)."""
        if create_graph:
            return self.client.call("graph.grads", self.name, root, ids, create_graph=True)
        return self.client.call("graph.grads", self.name, root, ids)

    def gradcheck(self, root: int, **options: Any) -> Any:
        """Analytic gradients against finite differences (options: eps, sample, seed,
        leaves, order: 2 for second derivatives)."""
        return self.client.call("graph.gradcheck", self.name, root, **options)

    def analyze(self, **options: Any) -> Any:
        """The analysis report (options: root, node, leaf, diagnostics, limit, group)."""
        return self.client.call("graph.analyze", self.name, **options)

    def diagnostics(self, **options: Any) -> Any:
        """The plugins' diagnostics (options: limit, group)."""
        return self.client.call("graph.diagnostics", self.name, **options)

    def aggregate(self, **options: Any) -> Any:
        """The summary by source line, model part and op; with a drill-down option (line,
        part, op, call, position, by) the nodes that pass it and their groups (options also:
        file, limit, members). Computed once per version on the server."""
        return self.client.call("graph.aggregate", self.name, **options)

    def render(self, **options: Any) -> Any:
        """A picture: ``{"format", "data"}`` (options: format, around, depth, rankdir, ...)."""
        return self.client.call("graph.render", self.name, **options)

    def export(self, **options: Any) -> Any:
        """The graph in the file format (a document map by default)."""
        return self.client.call("graph.export", self.name, **options)

    def subscribe(self) -> Any:
        """Receive ``graph.changed`` / ``graph.diagnostics`` notifications for this graph."""
        return self.client.call("graph.subscribe", self.name)

    def unsubscribe(self) -> Any:
        """Stop this graph's notifications."""
        return self.client.call("graph.unsubscribe", self.name)
