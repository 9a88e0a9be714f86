"""opgraph's web viewer: the page's static files, served by ``opgraph serve --listen
http://127.0.0.1:7451`` (see ``opgraph_server.http``). The page is a client of the graph server
like any other: it speaks MessagePack-RPC over a WebSocket."""

from __future__ import annotations

from pathlib import Path

__all__ = ["static_root"]


def static_root() -> Path:
    """The folder holding ``index.html`` and the page's scripts."""
    return Path(__file__).with_name("static")
