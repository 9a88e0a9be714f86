"""The server's limits: all configurable, all checked before the work they guard is done."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one server accepts. Over a limit a request gets an error; the server goes on."""

    max_message_bytes: int = 64 * MiB
    """Largest message a client may send; a bigger one closes that connection."""
    max_nodes: int = 2_000_000
    """Nodes per graph."""
    max_graphs: int = 1_000
    """Named graphs on the server."""
    max_connections: int = 256
    """Clients connected at once; one more is refused and closed."""
    request_timeout: float = 60.0
    """Seconds the worker-thread part of a request (analysis, pictures, gradcheck, export, import)
    may run before the request is answered with a timeout error; the thread finishes in the
    background. Everything else a method does runs on the event loop, without a timer."""
    max_queued_output: int = 32 * MiB
    """Bytes of replies and notifications queued for a client that does not read them; past
    this the client is disconnected (as Redis does with slow pub/sub readers)."""
    partial_message_timeout: float = 30.0
    """Seconds a half-received message may wait for the rest before the connection is closed."""
    max_gradcheck_leaves: int = 10_000
    """Leaves `graph.gradcheck` checks at most (each costs a pass over the graph)."""
    max_render_nodes: int = 2_000
    """Nodes `graph.render` draws whole; bigger graphs are summarised."""
    max_render_layout: int = 12_000  # opgraph.render.MAX_LAYOUT (not imported: it is slow)
    """The largest layout size (`opgraph.render.layout_size`: nodes plus the ranks edges cross)
    `graph.render` draws whole; beyond it, ``dot`` could run into the time limit, so the graph
    is summarised."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as `initialize` reports it."""
        return asdict(self)
