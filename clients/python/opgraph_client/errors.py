"""Errors a client raises: one class per server error name, all under `ServerError`."""

from __future__ import annotations

from typing import Any

from opgraph_server.errors import CATALOGUE, RpcError, error_from_wire


class ClientError(Exception):
    """A problem on the client's side: cannot connect, connection lost, timed out."""


class ConnectionLost(ClientError, ConnectionError):
    """The server closed the connection (or it broke) before answering."""


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
