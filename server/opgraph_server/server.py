"""The asyncio server: transports (TCP, Unix socket, stdio) over the I/O-free protocol.

One `Session` per connection: bytes go into an `RpcProtocol`, requests are dispatched in the
order they arrive, replies and notifications go back through the same protocol object. A
framing error closes only that connection (after a best-effort error response); a handler's
exception becomes an error response; nothing a client sends stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import CoroutineType
from typing import Any
from urllib.parse import urlparse

from opgraph.graph import Graph
from opgraph_server.errors import RpcError, render_error
from opgraph_server.limits import Limits
from opgraph_server.methods import METHODS, Call, MethodSpec, translate
from opgraph_server.protocol import (
    NEED_DATA,
    ConnectionClosed,
    Notification,
    Rejected,
    RemoteProtocolError,
    Request,
    Response,
    RpcProtocol,
    split_params,
)
from opgraph_server.store import Entry

log = logging.getLogger("opgraph.server")

DEFAULT_URL = "tcp://127.0.0.1:7450"
READ_CHUNK = 256 * 1024
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
NVIM_HANDLER = "return require('opgraph').on_notify(...)"
_NO_OPTIONS: dict[str, Any] = {}  # passed as **options only, so never changed


@dataclass(frozen=True)
class Address:
    """A parsed listen/connect URL: ``tcp://host:port`` or ``unix:///path``."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_url(url: str) -> Address:
    """``tcp://host:port`` or ``unix:///path`` to an `Address`; ValueError naming the problem."""
    if not isinstance(url, str):
        raise ValueError(f"address must be a string, got {type(url).__name__}")
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        if not path:
            raise ValueError(f"{url!r}: a unix address needs a path (unix:///tmp/opgraph.sock)")
        return Address("unix", path=path)
    if parsed.scheme == "tcp":
        try:
            port = parsed.port
        except ValueError:
            raise ValueError(f"{url!r}: the port must be a number within 0..65535") from None
        if not parsed.hostname or port is None:
            raise ValueError(f"{url!r}: a tcp address needs a host and a port "
                             "(tcp://127.0.0.1:7450)")
        return Address("tcp", host=parsed.hostname, port=port)
    raise ValueError(f"{url!r}: use tcp://host:port or unix:///path")


class Session:
    """One client connection and what it said in ``initialize``."""

    def __init__(self, server: Server, writer: asyncio.StreamWriter, peer: str) -> None:
        self.server = server
        self.writer = writer
        self.peer = peer
        self.protocol = RpcProtocol(max_message_size=server.limits.max_message_bytes)
        self.initialized = False
        self.structured_errors = False
        self.neovim = False
        self.client: Any = None
        self.subscriptions: set[str] = set()
        self.closing = False
        self.closed = False
        self._out: list[bytes] = []
        self._calls: dict[str, Call] = {}  # one per method this client has called (immutable)

    def __repr__(self) -> str:
        return f"<Session {self.peer}>"

    # --- output -------------------------------------------------------------------------

    def send(self, event: Response | Notification) -> None:
        """Queue a message. Messages queued in one turn of the event loop go out in one write;
        a client whose unread output passes the limit is disconnected."""
        if self.closed:
            return
        try:
            data = self.protocol.send(event)
        except Exception as exc:  # a result msgpack cannot encode: still answer
            if isinstance(event, Response):
                error = RpcError("internal_error", f"could not encode the result: {exc}")
                data = self.protocol.send(Response(event.msgid, self.render(error), None))
            else:
                log.error("dropped an unencodable notification to %s: %s", self.peer, exc)
                return
        self._queue(data, event.msgid if type(event) is Response else None)

    def reply(self, msgid: int, result: Any) -> None:
        """Queue the successful response to request ``msgid`` (as `send`, with less work)."""
        if self.closed:
            return
        try:
            data = self.protocol.send_result(msgid, result)
        except Exception:  # a result msgpack cannot encode: `send` answers with the error
            self.send(Response(msgid, None, result))
            return
        self._queue(data, msgid)

    def _queue(self, data: bytes, msgid: int | None) -> None:
        limit = self.server.limits.max_queued_output
        if len(data) > limit and msgid is not None:
            # It could never be delivered within the output limit: answer with an error
            # rather than disconnect a client that may be reading perfectly well.
            error = RpcError("limit_exceeded", f"the result is {len(data)} bytes, more than "
                             f"the server's max_queued_output of {limit}",
                             {"limit": "max_queued_output", "max": limit})
            data = self.protocol.send(Response(msgid, self.render(error), None))
        out = self._out
        out.append(data)
        if len(out) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what `send` queued."""
        if not self._out or self.closed:
            self._out.clear()
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self.writer.write(data)
        queued = self.writer.transport.get_write_buffer_size()
        if queued > self.server.limits.max_queued_output:
            log.warning("%s: %d bytes of output unread (limit %d); disconnecting", self.peer,
                        queued, self.server.limits.max_queued_output)
            self.abort()

    def render(self, error: RpcError) -> Any:
        """The error in the shape this client asked for."""
        return render_error(error, self.structured_errors)

    def notify(self, method: str, payload: dict[str, Any]) -> None:
        """A server notification; for Neovim, wrapped as an ``nvim_exec_lua`` call."""
        if self.neovim:
            self.send(Notification("nvim_exec_lua", [NVIM_HANDLER, [method, payload]]))
        else:
            self.send(Notification(method, [payload]))

    def abort(self) -> None:
        """Close at once, dropping queued output."""
        self.closed = True
        transport = self.writer.transport
        if transport is not None and not transport.is_closing():
            transport.abort()

    # --- input --------------------------------------------------------------------------

    async def run(self, reader: asyncio.StreamReader) -> None:
        """Read, dispatch and answer until the peer leaves, errs, or asks to shut down."""
        limits = self.server.limits
        loop = asyncio.get_running_loop()
        started: float | None = None  # when the half-received message, if any, began
        try:
            while not self.closed and not self.closing:
                # The limit is on the whole message, not on the gap between two reads: a
                # client dripping a byte now and then must not hold its connection for ever.
                timeout = None if started is None else max(
                    0.0, started + limits.partial_message_timeout - loop.time())
                try:
                    if timeout is None:  # no half message waiting: no timer to arm
                        data = await reader.read(READ_CHUNK)
                    else:
                        data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
                except TimeoutError:
                    log.info("%s: half a message for %g s; closing", self.peer,
                             limits.partial_message_timeout)
                    break
                before = self.protocol.pending_bytes + len(data)
                self.protocol.receive_data(data)
                if not await self._drain_events():
                    break
                pending = self.protocol.pending_bytes
                if not pending:
                    started = None
                elif started is None or pending < before:  # a new message began in this read
                    started = loop.time()
            if self.closing and not self.closed:
                self.flush()
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await asyncio.wait_for(self.writer.drain(), 5)
        except RemoteProtocolError as exc:
            log.info("%s: protocol error: %s; closing", self.peer, exc)
            response = exc.response(self.structured_errors)
            if response is not None:
                self.send(response)
            else:
                self.send(Notification("error", [self.render(exc.error)]))
            self.flush()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.server.forget(self)
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _drain_events(self) -> bool:
        """Handle every complete message; False once the peer has closed."""
        next_event, server, calls = self.protocol.next_event, self.server, self._calls
        while True:
            event = next_event()
            if type(event) is Request:
                # Run inline rather than in a helper coroutine: a plain method (node.get)
                # is then answered without making any coroutine at all.
                try:
                    spec, args, options = server.check(self, event.method, event.params)
                    call = calls.get(spec.name)
                    if call is None:
                        call = calls[spec.name] = Call(server, self, spec.name)
                    result = spec.handler(call, *args, **options)
                    if spec.awaits or type(result) is CoroutineType:  # (a plain method may
                        result = await result  # have to wait, as node.get behind a change)
                except Exception as exc:
                    self.fail(event, exc)
                else:
                    self.reply(event.msgid, result)
                if self.closing or self.closed:
                    return True
            elif event is NEED_DATA:
                return True
            elif type(event) is ConnectionClosed:
                return False
            elif type(event) is Rejected:
                response = event.response(self.structured_errors)
                if response is not None:
                    self.send(response)
            # Notifications from clients (pynvim's nvim_set_client_info, ...) and stray
            # responses are ignored.

    def fail(self, request: Request, exc: Exception) -> None:
        """Answer ``request`` with the error ``exc`` stands for (logged if unexpected)."""
        error = translate(exc)
        if error.name == "internal_error":
            log.exception("%s: %s failed", self.peer, request.method)
        self.send(Response(request.msgid, self.render(error), None))


class Server:
    """Named graphs shared by all clients, served over any number of listeners."""

    def __init__(self, limits: Limits | None = None, token: str | None = None) -> None:
        self.limits = limits or Limits()
        self.token = token
        self.graphs: dict[str, Entry] = {}
        self.sessions: set[Session] = set()
        self.addresses: list[str] = []
        self._servers: list[asyncio.base_events.Server] = []
        self._unix_paths: list[str] = []
        self._pending: set[Entry] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._change_pool: ThreadPoolExecutor | None = None

    def change_pool(self) -> ThreadPoolExecutor:
        """The worker threads for big changes (`Call.change`), apart from the default pool
        where analyses and pictures run, so a change never queues behind them."""
        if self._change_pool is None:
            self._change_pool = ThreadPoolExecutor(max_workers=4,
                                                   thread_name_prefix="opgraph-change")
        return self._change_pool

    # --- graphs -------------------------------------------------------------------------

    def add_graph(self, graph: Graph) -> Entry:
        """Share ``graph`` under its name (refused past the graph limit or on a clash)."""
        if graph.name in self.graphs:
            raise RpcError("graph_exists", f"a graph named {graph.name!r} exists")
        if len(self.graphs) >= self.limits.max_graphs:
            raise RpcError("limit_exceeded", f"the server holds {len(self.graphs)} graphs, "
                                             f"its limit")
        graph.max_nodes = self.limits.max_nodes
        entry = Entry(graph)
        self.graphs[graph.name] = entry
        return entry

    def drop_graph(self, entry: Entry) -> None:
        """Remove a graph and tell its subscribers."""
        self.graphs.pop(entry.name, None)
        entry.dropped = True
        for session in list(entry.subscribers):
            session.subscriptions.discard(entry.name)
            session.notify("graph.dropped", {"graph": entry.name})
        entry.subscribers.clear()
        # Objects frozen after big work (methods._without_gc) go back to the collector: the
        # graph's own are freed by reference counting, cycles frozen with them collected.
        gc.unfreeze()

    def changed(self, entry: Entry) -> None:
        """Note a change; subscribers are told once per loop turn, however many changes."""
        if entry.subscribers and entry not in self._pending:
            self._pending.add(entry)
            asyncio.get_running_loop().call_soon(self._spawn_notify, entry)

    def _spawn_notify(self, entry: Entry) -> None:
        task = asyncio.get_running_loop().create_task(self._notify(entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self, entry: Entry) -> None:
        self._pending.discard(entry)
        if entry.dropped or not entry.subscribers:
            return
        from opgraph.diagnostics import run_diagnostics

        async with entry.lock.read():
            graph = entry.graph
            version = graph.version
            changed = {"graph": entry.name, "version": version, "nodes": len(graph.nodes)}
            for session in list(entry.subscribers):
                session.notify("graph.changed", changed)
            try:
                result = await asyncio.to_thread(run_diagnostics, graph)
            except Exception:
                log.exception("diagnostics of %r failed", entry.name)
                return
        payload = {"graph": entry.name, "version": version,
                   "diagnostics": [d.to_dict() for d in result.diagnostics]}
        for session in list(entry.subscribers):
            session.notify("graph.diagnostics", payload)

    # --- requests -----------------------------------------------------------------------

    def check_token(self, token: Any) -> bool:
        """True when ``token`` is the server's token (compared in constant time)."""
        return (isinstance(token, str) and self.token is not None
                and hmac.compare_digest(token.encode(), self.token.encode()))

    def check(self, session: Session, name: str,
              params: list[Any]) -> tuple[MethodSpec, list[Any], dict[str, Any]]:
        """Check one method call for ``session``: its method, arguments and options.

        Raises `RpcError` for an unknown method, missing authorisation or bad parameters.
        """
        spec = METHODS.get(name)
        # With a token, every request before a successful initialize fails, unknown methods
        # included (so an unauthorised peer learns nothing, not even the method names).
        if (self.token is not None and not session.initialized
                and (spec is None or not spec.before_initialize)):
            raise RpcError("unauthorized", f"{name}: call initialize with the server's "
                                           "token first")
        if spec is None:
            import difflib

            close = difflib.get_close_matches(name, list(METHODS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RpcError("method_not_found", f"no method named {name!r}{hint}")
        if not session.initialized and not spec.before_initialize:
            session.initialized = True  # without a token, initialize is optional
        if len(params) == spec.exact:  # every argument given, no options: nothing to split
            return spec, params, _NO_OPTIONS
        args, options = split_params(name, params, spec.required, spec.optional,
                                     options=spec.allowed_options, reserved=spec.reserved)
        return spec, args, options

    # --- transports ---------------------------------------------------------------------

    def forget(self, session: Session) -> None:
        """Drop a closed session from every subscription."""
        self.sessions.discard(session)
        for name in session.subscriptions:
            entry = self.graphs.get(name)
            if entry is not None:
                entry.subscribers.discard(session)
        session.subscriptions.clear()

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or writer.get_extra_info("sockname") or "?"
        peer = peer if isinstance(peer, str) and peer else str(peer)
        if len(self.sessions) >= self.limits.max_connections:
            log.warning("refusing %s: %d connections is the limit", peer,
                        self.limits.max_connections)
            writer.close()
            return
        session = Session(self, writer, peer)
        self.sessions.add(session)
        # A connection's task is cancelled only when the server stops (Ctrl-C). End it quietly:
        # asyncio's stream callback calls task.exception() on it, which for a cancelled task
        # logs a traceback per connected client. (Session.run's finally has cleaned up.)
        with contextlib.suppress(asyncio.CancelledError):
            await session.run(reader)

    async def listen(self, url: str) -> str:
        """Start listening on ``url``; returns the actual address (a port 0 gets a real one)."""
        address = parse_url(url)
        limit = 2 * READ_CHUNK
        if address.scheme == "tcp":
            if address.host not in LOOPBACK:
                log.warning("listening on %s, reachable from other machines; "
                            "consider --token", address)
            srv = await asyncio.start_server(self._on_connect, address.host, address.port,
                                             limit=limit)
            host, port = srv.sockets[0].getsockname()[:2]
            actual = str(Address("tcp", host=host, port=port))
        else:
            path = address.path
            _remove_stale_socket(path)
            old_umask = os.umask(0o177)  # the socket is created 0600: only this user connects
            try:
                srv = await asyncio.start_unix_server(self._on_connect, path, limit=limit)
            finally:
                os.umask(old_umask)
            os.chmod(path, 0o600)
            self._unix_paths.append(path)
            actual = f"unix://{path}"
        self._servers.append(srv)
        self.addresses.append(actual)
        return actual

    async def serve_stdio(self) -> None:
        """Serve one client over stdin/stdout until stdin closes. Only protocol bytes go out."""
        loop = asyncio.get_running_loop()
        # Everything else printed to stdout (by a plugin, say) must not corrupt the protocol:
        # keep a private copy of the real stdout for the protocol and point fd 1 at stderr.
        out_fd = os.dup(sys.stdout.fileno())
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        reader = asyncio.StreamReader(limit=2 * READ_CHUNK)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", buffering=0))
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        session = Session(self, writer, "stdio")
        self.sessions.add(session)
        await session.run(reader)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        for srv in self._servers:
            srv.close()
        for session in list(self.sessions):
            session.abort()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await srv.wait_closed()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._servers.clear()
        self._unix_paths.clear()
        if self._change_pool is not None:
            self._change_pool.shutdown(wait=False)
            self._change_pool = None


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a dead server; refuse to clobber anything else."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody answers: stale
    else:
        raise ValueError(f"{path}: another server is listening there")
    finally:
        probe.close()


async def serve(
    urls: Iterable[str] = (DEFAULT_URL,),
    *,
    stdio: bool = False,
    limits: Limits | None = None,
    token: str | None = None,
    demo: bool = True,
    ready: Any = None,
) -> None:
    """Run a server until cancelled (or, with ``stdio``, until stdin closes).

    ``ready`` is called with the list of addresses once listening.
    """
    # Worker threads (analysis, pictures) hold the GIL in slices of this length; shorter
    # slices keep small requests answered quickly while a big analysis runs.
    sys.setswitchinterval(0.001)
    server = Server(limits, token)
    if demo:
        from opgraph_server.demo import neuron

        server.add_graph(neuron())
    try:
        if stdio:
            if ready:
                ready(["stdio"])
            await server.serve_stdio()
            return
        for url in urls:
            await server.listen(url)
        if ready:
            ready(list(server.addresses))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)  # a clean stop: the socket file goes too
        await stop.wait()
    finally:
        await server.close()
