"""Notifications: ``graph.subscribe``, ``graph.unsubscribe`` (plain methods: they never wait).

A subscription is to a graph's name, which need not exist yet: a client that shows graph
``g`` subscribes first and is told when ``g`` is created (``graph.changed``), then of every
change, until ``g`` is dropped (``graph.dropped``, which ends the subscription).
"""

from __future__ import annotations

from typing import Any

from opgraph_server.dispatch import Call, method
from opgraph_server.store import Entry


def _state(name: str, entry: Entry | None) -> dict[str, Any]:
    """The name and the graph's version, nil when no graph of that name exists (yet)."""
    return {"graph": name, "version": None if entry is None else entry.version}


def _name(call: Call, graph: Any) -> str:
    name = call.text(graph, "graph")
    if not name:
        raise call.invalid("graph name must not be empty")
    return name


@method("graph.subscribe", ("graph",))
def graph_subscribe(call: Call, graph: Any) -> dict[str, Any]:
    """Get ``graph.changed`` and ``graph.diagnostics`` notifications for this graph, now or
    (for a name not created yet) once it is created."""
    name = _name(call, graph)
    return _state(name, call.host.subscribe(call.session, name))


@method("graph.unsubscribe", ("graph",))
def graph_unsubscribe(call: Call, graph: Any) -> dict[str, Any]:
    """Stop this graph's notifications (or the wait for it)."""
    name = _name(call, graph)
    had = call.host.unsubscribe(call.session, name)
    entry = call.host.graphs.get(name)
    if entry is None and not had:
        call.entry(name)  # unknown_graph, naming a close one
    return _state(name, entry)
