"""Notifications: ``graph.subscribe``, ``graph.unsubscribe`` (plain methods: they never wait)."""

from __future__ import annotations

from typing import Any

from opgraph_server.dispatch import Call, method


@method("graph.subscribe", ("graph",))
def graph_subscribe(call: Call, graph: Any) -> dict[str, Any]:
    """Get ``graph.changed`` and ``graph.diagnostics`` notifications for this graph."""
    entry = call.entry(graph)
    call.host.subscribe(call.session, entry.name)
    return {"graph": entry.name, "version": entry.version}


@method("graph.unsubscribe", ("graph",))
def graph_unsubscribe(call: Call, graph: Any) -> dict[str, Any]:
    """Stop this graph's notifications."""
    entry = call.entry(graph)
    call.host.unsubscribe(call.session, entry.name)
    return {"graph": entry.name, "version": entry.version}
