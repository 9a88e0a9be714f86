"""The LSP base protocol read strictly: headers, a JSON body, and the JSON-RPC error the spec
names for each way a message can be wrong, instead of a log line and silence.

- bytes that are not JSON (or not UTF-8), or a header block without a valid
  ``Content-Length``: ``-32700`` parse error, with ``id: null``;
- JSON that is not a JSON-RPC 2.0 message (not an object, no ``jsonrpc: "2.0"``, a method that
  is not a string, an id that is neither a number nor a string, a batch array):
  ``-32600`` invalid request, with the message's id when it has a usable one, else null;
- a request whose params do not fit its method: ``-32602`` invalid params (from
  `OpgraphProtocol`; unknown methods get ``-32601`` there);
- a body over `MAX_BODY` bytes is skipped unread and answered ``-32600``.

Notifications that are wrong in any of these ways are only logged: the spec forbids answering
a notification. The loop never stops for a bad message; it stops at the end of its input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from typing import Any

from lsprotocol.types import ErrorCodes
from pygls.exceptions import JsonRpcException

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024 * 1024
"""The largest message body read (a document of this size is far beyond any editor's)."""
MAX_HEADER_LINE = 8192
_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.IGNORECASE)


def error_message(msgid: Any, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error response (``id`` may be None: it is sent as null)."""
    return {"jsonrpc": "2.0", "id": msgid, "error": {"code": int(code), "message": message}}


def check_message(data: Any) -> tuple[Any, str | None]:
    """``(id to answer with, None)`` when ``data`` is a well-formed JSON-RPC 2.0 message, else
    ``(id or None, what is wrong)``."""
    if isinstance(data, list):
        return None, "a batch (JSON array) is not a Language Server Protocol message"
    if not isinstance(data, dict):
        return None, f"a message must be a JSON object, got {type(data).__name__}"
    msgid = data.get("id")
    usable = msgid if (isinstance(msgid, int | str) and not isinstance(msgid, bool)) else None
    if data.get("jsonrpc") != "2.0":
        return usable, "the message lacks \"jsonrpc\": \"2.0\""
    if "id" in data and msgid is not None and usable is None:
        return None, f"the id must be a number or a string, got {json.dumps(msgid)[:40]}"
    if "method" in data:
        if not isinstance(data["method"], str):
            return usable, "the method must be a string"
        params = data.get("params")
        if params is not None and not isinstance(params, dict | list):
            return usable, "params must be an object or an array"
        return usable, None
    if "id" in data and ("result" in data or "error" in data):
        return usable, None  # a response to one of our requests
    return usable, "the message has no method (and is not a response)"


async def serve(reader: Any, protocol: Any, stop: threading.Event) -> None:
    """Read messages from ``reader`` (``readline()`` and ``readexactly(n)`` awaitables) and hand
    them to ``protocol`` (a pygls protocol) until the input ends or ``stop`` is set."""
    while not stop.is_set():
        length: int | None = None
        bad_header: str | None = None
        seen_any = False
        while True:
            line = await reader.readline()
            if not line:
                return  # the end of the input
            if len(line) > MAX_HEADER_LINE:
                bad_header = "a header line is too long"
            stripped = line.rstrip(b"\r\n")
            if not stripped:
                if seen_any:
                    break
                continue  # blank lines between messages
            seen_any = True
            found = _LENGTH.match(stripped)
            if found:
                length = int(found.group(1))
            elif b":" not in stripped:
                bad_header = f"not a header: {stripped[:60]!r}"
        if length is None or bad_header is not None:
            send(protocol, error_message(
                None, ErrorCodes.ParseError,
                f"malformed message header: {bad_header or 'no Content-Length'}"))
            continue
        if length > MAX_BODY:
            await _skip(reader, length)
            send(protocol, error_message(None, ErrorCodes.InvalidRequest,
                                         f"a message of {length} bytes is over the limit "
                                         f"of {MAX_BODY}"))
            continue
        body = await reader.readexactly(length) if length else b""
        if len(body) < length:
            return  # the input ended inside a message
        handle_body(protocol, body)


def handle_body(protocol: Any, body: bytes) -> None:
    """Decode, check and dispatch one message body, answering what is wrong with it."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        send(protocol, error_message(None, ErrorCodes.ParseError, f"parse error: {exc}"))
        return
    msgid, problem = check_message(data)
    is_request = isinstance(data, dict) and "method" in data and msgid is not None
    if problem is not None:
        if isinstance(data, dict) and "method" in data and "id" not in data:
            log.warning("ignored a malformed notification: %s", problem)
            return
        send(protocol, error_message(msgid, ErrorCodes.InvalidRequest,
                                     f"invalid request: {problem}"))
        return
    try:
        message = protocol.structure_message(data)
    except JsonRpcException as exc:
        if is_request:
            code = exc.code if exc.code != ErrorCodes.InternalError else ErrorCodes.InvalidParams
            send(protocol, error_message(msgid, code,
                                         f"invalid params for {data['method']}: "
                                         f"{_cause(exc)}"))
        else:
            log.warning("ignored a notification %s with invalid params: %s",
                        data.get("method"), _cause(exc))
        return
    try:
        protocol.handle_message(message)
    except Exception as exc:  # a bug: answer it, keep serving
        log.exception("handling a message failed")
        if is_request:
            send(protocol, error_message(msgid, ErrorCodes.InternalError,
                                         f"internal error: {exc}"))


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__
    text = str(cause) if cause is not None else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:300]


def send(protocol: Any, message: dict[str, Any]) -> None:
    """Write a plain JSON-RPC message through the protocol's writer."""
    protocol._send_data(message)


async def _skip(reader: Any, length: int) -> None:
    left = length
    while left > 0:
        chunk = await reader.readexactly(min(left, 1 << 20))
        if not chunk:
            return
        left -= len(chunk)


class StreamReader:
    """Adapts an asyncio ``StreamReader`` (a TCP connection) to `serve`'s reader."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    async def readline(self) -> bytes:
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError:
            return await self.reader.read(MAX_HEADER_LINE + 1)

    async def readexactly(self, n: int) -> bytes:
        try:
            return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            return exc.partial
