"""The error catalogue of the opgraph protocol: stable names, numeric codes and wire shapes.

Every error a client can receive has a stable *name* (``unknown_op``) and a stable numeric
*code*. Codes follow the Language Server Protocol where one fits (-32700 .. -32600 from
JSON-RPC, -32002, -32800, -32801); opgraph's own codes live in **-32010 .. -32099**, inside
JSON-RPC's range for implementation-defined server errors, clear of the two codes LSP keeps
there (-32001, -32002).

Each error also has a *kind*, the number Neovim puts in front of an error: ``0`` when the
server failed (Neovim shows "Exception"), ``1`` when the request was wrong ("Validation").

Two wire shapes (see `render_error`):

* default, ``[kind, "name: message"]``: the only shape Neovim and pynvim show properly;
* structured, ``{"code": ..., "name": ..., "message": ..., "data": ...}``: for clients that
  ask for it in ``initialize``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "BAD_REQUEST",
    "CATALOGUE",
    "SERVER_FAILURE",
    "ErrorSpec",
    "RpcError",
    "error_from_wire",
    "render_error",
]

SERVER_FAILURE: Final = 0
"""Error kind 0: the server failed to do something it should have managed."""
BAD_REQUEST: Final = 1
"""Error kind 1: the request was wrong (bad arguments, unknown names, over a limit...)."""


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One entry of the catalogue: a stable name, its numeric code, its kind and a summary."""

    name: str
    code: int
    kind: int
    summary: str


_SPECS = (
    # JSON-RPC / LSP codes.
    ErrorSpec("parse_error", -32700, BAD_REQUEST, "the bytes received are not MessagePack"),
    ErrorSpec("invalid_request", -32600, BAD_REQUEST,
              "MessagePack, but not a MessagePack-RPC message (or not allowed now)"),
    ErrorSpec("method_not_found", -32601, BAD_REQUEST, "no method with that name"),
    ErrorSpec("invalid_params", -32602, BAD_REQUEST,
              "wrong number or type of arguments, or an unknown option"),
    ErrorSpec("internal_error", -32603, SERVER_FAILURE,
              "a bug or unexpected failure in the server"),
    ErrorSpec("not_initialized", -32002, BAD_REQUEST,
              "a request other than initialize before a successful initialize"),
    ErrorSpec("request_cancelled", -32800, SERVER_FAILURE, "the request was cancelled"),
    ErrorSpec("content_modified", -32801, BAD_REQUEST,
              "the graph changed since the version the request refers to"),
    # opgraph's own codes: -32010 .. -32099.
    ErrorSpec("unknown_graph", -32010, BAD_REQUEST, "no graph with that name"),
    ErrorSpec("unknown_node", -32011, BAD_REQUEST, "no node with that id in the graph"),
    ErrorSpec("unknown_op", -32012, BAD_REQUEST, "no op with that name"),
    ErrorSpec("op_failed", -32013, SERVER_FAILURE, "an op raised while computing a value or grad"),
    ErrorSpec("limit_exceeded", -32014, BAD_REQUEST,
              "over a configured limit (message size, nesting, nodes, graphs, time...)"),
    ErrorSpec("unauthorized", -32015, BAD_REQUEST, "a token is required and was missing or wrong"),
    ErrorSpec("graph_exists", -32016, BAD_REQUEST, "a graph with that name already exists"),
    ErrorSpec("not_a_leaf", -32017, BAD_REQUEST, "the node is computed by an op, not a leaf"),
    ErrorSpec("bad_file", -32018, BAD_REQUEST, "data that is not a valid graph file"),
    ErrorSpec("bad_expression", -32019, BAD_REQUEST,
              "an expression that does not parse or uses what is not allowed"),
)

CATALOGUE: Final[Mapping[str, ErrorSpec]] = MappingProxyType({s.name: s for s in _SPECS})
"""Every error name the server uses, in documentation order."""

_BY_CODE: Final = {s.code: s for s in _SPECS}


class RpcError(Exception):
    """An error to send (or received) as the ``error`` of a response.

    ``name`` must be in `CATALOGUE`; ``code`` and ``kind`` come from it. ``data`` is any
    MessagePack-able value with details (only the structured shape carries it).
    """

    def __init__(self, name: str, message: str, data: Any = None) -> None:
        try:
            spec = CATALOGUE[name]
        except KeyError:
            raise ValueError(f"unknown error name {name!r}; add it to the catalogue") from None
        super().__init__(f"{name}: {message}")
        self.name = name
        self.code = spec.code
        self.kind = spec.kind
        self.message = message
        self.data = data

    def __repr__(self) -> str:
        return f"RpcError({self.name!r}, {self.message!r}, data={self.data!r})"

    def to_wire(self, structured: bool = False) -> list[Any] | dict[str, Any]:
        """This error in one of the two wire shapes; see `render_error`."""
        return render_error(self, structured)


def render_error(error: RpcError, structured: bool = False) -> list[Any] | dict[str, Any]:
    """The ``error`` element of a response for ``error``.

    Default: ``[kind, "name: message"]`` (kind 0 server failure, 1 bad request). With
    ``structured``: ``{"code", "name", "message", "data"}`` (``data`` always present, nil when
    there is none).
    """
    if structured:
        return {"code": error.code, "name": error.name, "message": error.message,
                "data": error.data}
    return [error.kind, f"{error.name}: {error.message}"]


def error_from_wire(obj: Any) -> RpcError:
    """Turn a received ``error`` element back into an `RpcError` (for clients).

    Accepts both shapes. Anything else (a foreign server's error, an unknown name or code)
    becomes ``internal_error`` with the original object in ``data``.
    """
    text = repr(obj)
    if isinstance(obj, str):
        text = obj
    elif isinstance(obj, dict):
        name, code = obj.get("name"), obj.get("code")
        if name not in CATALOGUE and code in _BY_CODE:
            name = _BY_CODE[code].name
        if isinstance(name, str) and name in CATALOGUE:
            return RpcError(name, str(obj.get("message", "")), obj.get("data"))
    elif isinstance(obj, list | tuple) and len(obj) == 2 and isinstance(obj[1], str):
        text = obj[1]
        name, sep, message = text.partition(": ")
        if sep and name in CATALOGUE:
            return RpcError(name, message)
    return RpcError("internal_error", text, data=obj)
