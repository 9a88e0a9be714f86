"""Errors a client raises: one class per server error name, all under `ServerError`."""

from __future__ import annotations

from typing import Any

from opgraph_server.errors import CATALOGUE, RpcError, error_from_wire


class ClientError(Exception):
    """A problem on the client's side: cannot connect, connection lost, timed out."""


class ConnectionLost(ClientError, ConnectionError):
    """The server closed the connection (or it broke) before answering, or the client could
    not connect again.

    ``in_doubt`` is true when the request was a change that had been sent whole and got no
    answer: the server may or may not have applied it, and the client did not send it again
    (look, e.g. with ``graph.info``, before sending it again).
    """

    def __init__(self, message: str = "", *, in_doubt: bool = False) -> None:
        super().__init__(message)
        self.in_doubt = in_doubt


class ServerError(Exception):
    """An error response from the server: ``name``, ``code``, ``message``, ``data``."""

    def __init__(self, name: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.code = code
        self.message = message
        self.data = data


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_")) + (
        "" if name.endswith("error") else "Error")


ERRORS: dict[str, type[ServerError]] = {
    name: type(_class_name(name), (ServerError,), {"__doc__": spec.summary})
    for name, spec in CATALOGUE.items()
}
"""The error class for each server error name, e.g. ``ERRORS['unknown_graph']``."""

UnknownGraphError = ERRORS["unknown_graph"]
UnknownNodeError = ERRORS["unknown_node"]
UnknownOpError = ERRORS["unknown_op"]
InvalidParamsError = ERRORS["invalid_params"]
MethodNotFoundError = ERRORS["method_not_found"]
OpFailedError = ERRORS["op_failed"]
LimitExceededError = ERRORS["limit_exceeded"]
UnauthorizedError = ERRORS["unauthorized"]
GraphExistsError = ERRORS["graph_exists"]
NotALeafError = ERRORS["not_a_leaf"]
BadFileError = ERRORS["bad_file"]
BadExpressionError = ERRORS["bad_expression"]
InternalError = ERRORS["internal_error"]


def from_wire(error: Any) -> ServerError:
    """The typed exception for an ``error`` element of a response (either shape)."""
    rpc: RpcError = error_from_wire(error)
    return ERRORS[rpc.name](rpc.name, rpc.code, rpc.message, rpc.data)


_REPLACEABLE = {"graph.create": "{name!r}", "graph.import": "{name!r}, data"}
"""Methods whose ``graph_exists`` error a ``replace=True`` keyword avoids, with their arguments."""


def exists_in_python(error: ServerError, name: Any, how: str) -> ServerError:
    """``error`` (a ``graph_exists``) with its hint in Python: ``how`` is the call to make.

    The server words the hint for the wire (``pass replace: true``); a Python caller passes
    the keyword argument ``replace=True``.
    """
    message = f"a graph named {name!r} exists; to replace it, call {how}"
    return type(error)(error.name, error.code, message, error.data)


def in_python(error: ServerError, method: str, args: tuple[Any, ...]) -> ServerError:
    """``error``, as `Client.call(method, *args)` raises it: hints worded for Python."""
    arguments = _REPLACEABLE.get(method)
    if error.name == "graph_exists" and arguments is not None and args:
        how = f"call({method!r}, {arguments.format(name=args[0])}, replace=True)"
        return exists_in_python(error, args[0], how)
    return error
