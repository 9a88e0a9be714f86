"""Python client of the opgraph server: `Client` (blocking) and `AsyncClient` (asyncio)."""

from opgraph_client.client import AsyncClient, Client
from opgraph_client.errors import (
    ERRORS,
    BadExpressionError,
    BadFileError,
    ClientError,
    ConnectionLost,
    GraphExistsError,
    InternalError,
    InvalidParamsError,
    LimitExceededError,
    MethodNotFoundError,
    NotALeafError,
    OpFailedError,
    ServerError,
    UnauthorizedError,
    UnknownGraphError,
    UnknownNodeError,
    UnknownOpError,
)
from opgraph_client.remote import RemoteGraph

__all__ = [
    "ERRORS",
    "AsyncClient",
    "BadExpressionError",
    "BadFileError",
    "Client",
    "ClientError",
    "ConnectionLost",
    "GraphExistsError",
    "InternalError",
    "InvalidParamsError",
    "LimitExceededError",
    "MethodNotFoundError",
    "NotALeafError",
    "OpFailedError",
    "RemoteGraph",
    "ServerError",
    "UnauthorizedError",
    "UnknownGraphError",
    "UnknownNodeError",
    "UnknownOpError",
]
