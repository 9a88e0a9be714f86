"""The session's methods: ``initialize``, ``shutdown``, ``ops.list``."""

from __future__ import annotations

from typing import Any

import opgraph
from opgraph_server.dispatch import METHODS, Call, method
from opgraph_server.errors import RpcError
from opgraph_server.params import kind

PROTOCOL_VERSION = 1
NOTIFICATIONS = ("graph.changed", "graph.diagnostics", "graph.dropped")


@method("initialize", options=("token", "client", "errors", "neovim"), before_initialize=True)
async def initialize(call: Call, token: Any = None, client: Any = None, errors: Any = None,
                     neovim: Any = False) -> dict[str, Any]:
    """Handshake: check the token, note the client, return versions, methods, ops and limits."""
    host, session = call.host, call.session
    if host.token is not None and not host.check_token(token):
        raise RpcError("unauthorized", "initialize: missing or wrong token")
    if errors not in (None, "default", "structured"):
        raise call.invalid(f"errors must be 'default' or 'structured', got {kind(errors)}")
    if client is not None and not isinstance(client, str | dict):
        raise call.invalid(f"client must be a name or a map, got {kind(client)}")
    session.initialized = True
    session.structured_errors = errors == "structured"
    session.client = client
    name = client.get("name") if isinstance(client, dict) else client
    session.neovim = bool(neovim) or name in ("nvim", "neovim")
    return {
        "name": "opgraph",
        "version": opgraph.__version__,
        "instance": host.instance,
        "protocol": PROTOCOL_VERSION,
        "methods": sorted(METHODS),
        "notifications": list(NOTIFICATIONS),
        "ops": op_catalogue(),
        "limits": host.limits.to_dict(),
    }


@method("shutdown")
def shutdown(call: Call) -> None:
    """End the session: the reply is sent, then the connection is closed."""
    call.session.closing = True


def op_catalogue() -> list[dict[str, Any]]:
    """Every installed op: name, arity, symbol, doc, plugin, attributes."""
    return [
        {"name": op.name, "arity": op.arity, "symbol": op.symbol, "doc": op.doc,
         "plugin": op.plugin, "attrs": list(op.attrs)}
        for op in opgraph.default_registry()
    ]


@method("ops.list")
def ops_list(call: Call) -> list[dict[str, Any]]:
    """The op catalogue."""
    return op_catalogue()
