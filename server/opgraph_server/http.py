"""The web viewer's transport: HTTP for the page's static files, and MessagePack-RPC over a
WebSocket at ``/rpc``, served by the same `Server` as the TCP, Unix and stdio transports.

``opgraph serve --listen http://127.0.0.1:7451`` serves:

- ``GET /`` and the page's other files (from the ``opgraph_web`` package), read-only: no GET
  changes anything, and any other method gets ``405``;
- ``GET /rpc`` upgraded to a WebSocket: each binary frame carries one MessagePack-RPC message,
  in both directions, read and answered by a `Session` exactly as on TCP (same methods, limits,
  token and notifications).

Both parts are sans-I/O underneath: websockets' `ServerProtocol` turns bytes into the HTTP
request and frames, the server's `RpcProtocol` turns frame payloads into messages.

Security. Every request's ``Host`` must name this server (an IP address, ``localhost`` or the
host it listens on, with its port), so a page of another site whose name was rebound to
127.0.0.1 (DNS rebinding) is refused; a WebSocket's ``Origin``, when present (browsers always
send it), must be this server's own page, so no other site's script can connect
(cross-site WebSocket hijacking). Every response forbids sniffing, referrers, and framing by
anything but local pages (a notebook on localhost may show the page in an IFrame).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import ipaddress
import logging
import mimetypes
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.frames import Opcode
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse
from websockets.protocol import State
from websockets.server import ServerProtocol

from opgraph_server.address import Address
from opgraph_server.connection import LOOPBACK, READ_CHUNK, Session, WatchedProtocol
from opgraph_server.errors import RpcError
from opgraph_server.protocol import RemoteProtocolError

if TYPE_CHECKING:
    from opgraph_server.server import Server

log = logging.getLogger("opgraph.http")

RPC_PATH = "/rpc"
"""Where the page opens its WebSocket."""
HEAD_TIMEOUT = 10.0
"""Seconds a client has to send its whole HTTP request head."""
CLOSE_TIMEOUT = 2.0
"""Seconds to wait for the peer's side of a WebSocket close before dropping the connection."""
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json",
         ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8",
         ".ico": "image/x-icon"}
LOCAL_PAGES = "http://localhost:* http://127.0.0.1:*"
CSP = ("default-src 'self'; script-src 'self'; worker-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; "
       f"form-action 'none'; frame-ancestors 'self' {LOCAL_PAGES}")
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)


def static_root() -> Path:
    """The folder of the page's files (the ``opgraph_web`` package's ``static``)."""
    import opgraph_web

    return opgraph_web.static_root()


class Site:
    """What one ``http://`` listener serves: its files and the names it answers to."""

    def __init__(self, server: Server, host: str, port: int, root: Path | None = None) -> None:
        self.server = server
        self.host = host.lower()
        self.port = port
        self.root = (root or static_root()).resolve()
        self.files = _walk(self.root)
        """URL path -> file, fixed at start: nothing outside it can be asked for."""

    @property
    def url(self) -> str:
        """The page's address (what a person opens)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def host_problem(self, value: str | None) -> str | None:
        """Why a ``Host`` header does not name this server (None when it does).

        Accepted: an IP address (no DNS name can be rebound in it), ``localhost``, or the host
        the server listens on, each with this server's port.
        """
        if not value:
            return "the request has no Host header"
        try:
            parts = urlsplit(f"//{value}")
            name, port = (parts.hostname or ""), parts.port
        except ValueError:
            return f"the Host header {value!r} is not a host and port"
        if port != self.port:
            return (f"the Host header {value!r} does not name this server's port "
                    f"({self.port})")
        if name == "localhost" or name == self.host:
            return None
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return (f"the Host header {value!r} names another host (a page of another site "
                    f"whose name was pointed at this machine?); open {self.url}")
        return None

    def origin_problem(self, origin: str | None, host: str) -> str | None:
        """Why a WebSocket's ``Origin`` is not this server's page (None when it is, or when
        there is none: only browsers send it, and they always do)."""
        if origin is None:
            return None
        if origin.lower() != f"http://{host}".lower():
            return (f"cross-origin WebSocket refused: Origin {origin!r} is not this server's "
                    f"page (http://{host})")
        return None


def _walk(root: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and "__pycache__" not in path.parts:
            files["/" + path.relative_to(root).as_posix()] = path
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


def _response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              extra: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Length", str(len(body))), ("Content-Type", content_type),
                       *SECURITY_HEADERS, *extra])
    return HttpResponse(status, HTTPStatus(status).phrase, headers, body)


def _text(status: int, message: str, *extra: tuple[str, str]) -> HttpResponse:
    return _response(status, f"opgraph: {message}\n".encode(), extra=extra)


async def listen_http(server: Server, address: Address) -> tuple[asyncio.base_events.Server, str]:
    """Listen for the web viewer on ``address`` (an ``http`` `Address`); returns the listening
    server and the page's URL (a port 0 gets a real one)."""
    loop = asyncio.get_running_loop()
    site: Site | None = None

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert site is not None
        with contextlib.suppress(asyncio.CancelledError):
            await HttpConnection(site, reader, writer).run()

    def factory() -> WatchedProtocol:
        return WatchedProtocol(asyncio.StreamReader(limit=2 * READ_CHUNK, loop=loop),
                                on_connect, loop=loop)

    if address.host not in LOOPBACK:
        log.warning("the web viewer listens on %s, reachable from other machines; consider "
                    "--token", address)
    srv = await loop.create_server(factory, address.host, address.port)
    port = srv.sockets[0].getsockname()[1]
    site = Site(server, address.host, port)
    log.info("the web viewer: %s", site.url)
    return srv, site.url


class HttpConnection:
    """One HTTP connection: a request for a file (answered, then closed) or a WebSocket."""

    def __init__(self, site: Site, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.site = site
        self.reader = reader
        self.writer = writer
        limits = site.server.limits
        self.ws = ServerProtocol(max_size=limits.max_message_bytes, logger=log)
        peer = writer.get_extra_info("peername") or "?"
        self.peer = f"http:{peer}"

    def _write_out(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.writer.write(data)
            elif self.writer.can_write_eof() and not self.writer.is_closing():
                with contextlib.suppress(OSError):
                    self.writer.write_eof()

    async def _request(self) -> HttpRequest | None:
        """Read the request head (or give up after HEAD_TIMEOUT)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HEAD_TIMEOUT
        while True:
            remaining = deadline - loop.time()
            try:
                data = await asyncio.wait_for(self.reader.read(READ_CHUNK), max(0, remaining))
            except TimeoutError:
                return None
            if data:
                self.ws.receive_data(data)
            else:
                self.ws.receive_eof()
            events = self.ws.events_received()
            self._write_out()  # (a malformed head: websockets has answered it)
            if events:
                return events[0]  # type: ignore[return-value]
            if not data or self.ws.handshake_exc is not None:
                return None

    def _send(self, response: HttpResponse) -> None:
        self.ws.send_response(response)
        self._write_out()

    async def run(self) -> None:
        """Answer one request; a WebSocket then runs as a `Session` until it closes."""
        try:
            request = await self._request()
            if request is None:
                return
            response = self.answer(request)
            if response is not None:
                self._send(response)
                return
            await self.websocket(request)
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                self.writer.close()

    def answer(self, request: HttpRequest) -> HttpResponse | None:
        """The response to a plain request (None for a WebSocket to accept)."""
        site = self.site
        host = request.headers.get("Host")
        problem = site.host_problem(host)
        if problem is not None:
            log.warning("%s: refused %s %s: %s", self.peer, request.method, request.path,
                        problem)
            return _text(403, problem)
        path = request.path.split("?", 1)[0].split("#", 1)[0]
        if request.method != "GET":
            return _text(405, f"{request.method} is not served here: the viewer's files are "
                              "read with GET, and graphs change only through the protocol",
                         ("Allow", "GET"))
        if path == RPC_PATH:
            problem = site.origin_problem(request.headers.get("Origin"), host or "")
            if problem is not None:
                log.warning("%s: %s", self.peer, problem)
                return _text(403, problem)
            if len(site.server.sessions) >= site.server.limits.max_connections:
                log.warning("refusing %s: %d connections is the limit", self.peer,
                            site.server.limits.max_connections)
                return _text(503, f"the server has {site.server.limits.max_connections} "
                                  "connections, its limit; try again later")
            return None
        file = site.files.get(path)
        if file is None:
            return _text(404, f"nothing at {path}; the viewer is at {site.url}")
        try:
            body = file.read_bytes()
        except OSError as exc:
            return _text(500, f"cannot read {path}: {exc.strerror}")
        kind = TYPES.get(file.suffix.lower()) or mimetypes.guess_type(file.name)[0]
        if file.name.upper().startswith(("LICENSE", "README")):
            kind = "text/plain; charset=utf-8"
        return _response(200, body, kind or "application/octet-stream")

    async def websocket(self, request: HttpRequest) -> None:
        """Complete the handshake and run the RPC session over the WebSocket."""
        response = self.ws.accept(request)
        self._send(response)
        if response.status_code != 101:
            return
        server = self.site.server
        channel = FrameChannel(self.ws, self.reader, self.writer)
        session = WebSocketSession(server, channel, self.peer)
        channel.session = session
        session.watch(self.writer.transport.get_protocol())
        server.sessions.add(session)
        try:
            await session.run(channel)  # type: ignore[arg-type]
        finally:
            await channel.finish()


class FrameChannel:
    """A WebSocket as the reader and writer a `Session` reads and writes.

    `read` returns the payload of the next binary frame (or b"" once the peer closed);
    `WebSocketSession.flush` sends each message in a frame of its own.
    """

    def __init__(self, ws: ServerProtocol, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.ws = ws
        self.reader = reader
        self.writer = writer
        self.session: Session | None = None
        self._chunks: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._eof = False
        self._ended_message = True  # the last payload read ended its frame's message
        self._text = False  # a text message is being received

    @property
    def transport(self) -> asyncio.WriteTransport:
        return self.writer.transport  # type: ignore[return-value]

    def _write_out(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.writer.write(data)
            elif self.writer.can_write_eof() and not self.writer.is_closing():
                with contextlib.suppress(OSError):
                    self.writer.write_eof()

    def send_messages(self, messages: list[bytes]) -> None:
        """Each message in one binary frame, written in one go."""
        if self.ws.state is not State.OPEN:
            return
        for message in messages:
            self.ws.send_binary(message)
        self._write_out()

    def write(self, data: bytes) -> None:
        """One binary frame (what a `Session` writes outside `flush`)."""
        self.send_messages([data])

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        """Start the WebSocket's closing handshake (the TCP connection closes in `finish`)."""
        if self.ws.state is State.OPEN:
            self.ws.send_close(1000)
            self._write_out()

    async def finish(self) -> None:
        """Close the WebSocket, wait a little for the peer's close, then the connection."""
        self.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.drain(), CLOSE_TIMEOUT)
        if self.ws.state is not State.CLOSED and not self._eof:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._until_closed(), CLOSE_TIMEOUT)
        self.writer.close()

    async def _until_closed(self) -> None:
        while self.ws.state is not State.CLOSED:
            data = await self.reader.read(READ_CHUNK)
            if not data:
                return
            self.ws.receive_data(data)
            self.ws.events_received()
            self._write_out()

    async def read(self, _n: int = -1) -> bytes:
        """The next payload of a binary frame; b"" once the WebSocket is closed."""
        while True:
            if self._ended_message:
                self._check_boundary()
            if self._chunks:
                chunk, self._ended_message = self._chunks.popleft()
                return chunk
            if self._eof:
                return b""
            data = await self.reader.read(READ_CHUNK)
            if data:
                self.ws.receive_data(data)
            else:
                self.ws.receive_eof()
                self._eof = True
            for frame in self.ws.events_received():
                self._take(frame)
            self._write_out()  # pongs, the answer to a close
            if self.ws.state is State.CLOSED or self.ws.parser_exc is not None:
                self._eof = True

    def _take(self, frame: Any) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or (opcode is Opcode.CONT and self._text):
            self._text = not frame.fin
            raise RemoteProtocolError(RpcError(
                "invalid_request", "a text WebSocket frame: send each MessagePack-RPC message "
                                   "in a binary frame"))
        if opcode is Opcode.BINARY or opcode is Opcode.CONT:
            if frame.data:
                self._chunks.append((bytes(frame.data), frame.fin))
            elif frame.fin and self._chunks:
                self._chunks[-1] = (self._chunks[-1][0], True)
        elif opcode is Opcode.CLOSE:
            self._eof = True

    def _check_boundary(self) -> None:
        """A WebSocket message must end where a MessagePack-RPC message ends."""
        session = self.session
        if session is not None and session.protocol.pending_bytes:
            raise RemoteProtocolError(RpcError(
                "invalid_request", f"a WebSocket message ended inside a MessagePack-RPC message "
                                   f"({session.protocol.pending_bytes} bytes of it): send each "
                                   "message whole, in one binary frame"))


class WebSocketSession(Session):
    """A `Session` whose messages go out one per WebSocket frame."""

    def __init__(self, server: Server, channel: FrameChannel, peer: str) -> None:
        super().__init__(server, channel, peer)  # type: ignore[arg-type]
        self.channel = channel

    def flush(self) -> None:
        """Write what `send` queued, one frame per message."""
        if not self._out or self.closed:
            self._out.clear()
            return
        out = self._out[:]
        self._out.clear()
        self.channel.send_messages(out)
        queued = self.channel.transport.get_write_buffer_size()
        if queued > self.server.limits.max_queued_output:
            log.warning("%s: %d bytes of output unread (limit %d); disconnecting", self.peer,
                        queued, self.server.limits.max_queued_output)
            self.abort()
