"""One client connection: a `Session` reads its messages through an `RpcProtocol`, runs each
request in the order it came (`opgraph_server.dispatch`), and writes the answers and the
server's notifications back; `WatchedProtocol` tells it at once when the peer goes.

A session needs of its server only what `opgraph_server.server.Server` offers: limits, worker
threads, the dispatch host, `forget`. Transports (TCP, Unix sockets, stdio in
`opgraph_server.server`, WebSockets in `opgraph_server.http`) make one per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from opgraph.gcpolicy import gc_paused
from opgraph_server.dispatch import Call, check, translate
from opgraph_server.errors import RpcError, render_error
from opgraph_server.protocol import (
    NEED_DATA,
    ConnectionClosed,
    Deferred,
    Notification,
    Rejected,
    RemoteProtocolError,
    Request,
    Response,
    RpcProtocol,
)

if TYPE_CHECKING:
    from opgraph_server.server import Server

log = logging.getLogger("opgraph.server")

READ_CHUNK = 256 * 1024
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
NVIM_HANDLER = "return require('opgraph').on_notify(...)"
DEFER_BYTES = 1 << 20
"""Messages longer than this are decoded in a worker thread, piece by piece (a 15 MiB graph
document decoded on the event loop would hold up every client for half a second)."""


class WatchedProtocol(asyncio.StreamReaderProtocol):
    """The stream protocol of a connection, telling its session at once when the peer closes
    its side or the connection is lost, even while no one reads (a request is running).

    With ``eof_is_gone`` False (stdio: the end of stdin is the end of the requests, and their
    answers are still wanted), only a connection lost to an error counts.
    """

    gone = False
    on_gone: Any = None
    eof_is_gone = True

    def eof_received(self) -> bool | None:
        keep = super().eof_received()
        if self.eof_is_gone:
            self._lost()
        return keep

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.eof_is_gone or exc is not None:
            self._lost()

    def _lost(self) -> None:
        self.gone = True
        if self.on_gone is not None:
            self.on_gone()


class Session:
    """One client connection and what it said in ``initialize``."""

    def __init__(self, server: Server, writer: asyncio.StreamWriter, peer: str) -> None:
        self.server = server
        self.writer = writer
        self.peer = peer
        self.protocol = RpcProtocol(max_message_size=server.limits.max_message_bytes,
                                    defer_size=DEFER_BYTES, pause=gc_paused)
        self.initialized = False
        self.structured_errors = False
        self.neovim = False
        self.client: Any = None
        self.subscriptions: set[str] = set()
        self.closing = False
        self.closed = False
        self._out: list[bytes] = []
        self._calls: dict[str, Call] = {}  # one per method this client has called (immutable)
        self.task: asyncio.Task[Any] | None = None
        """The task reading and answering this connection (set by `run`)."""
        self.in_flight: Request | None = None
        """The request whose handler is waiting now (for a lock, a thread, ``dot``)."""
        self.gone = False
        """Whether the peer has closed its side of the connection or the connection is lost."""
        self._cancel_reason: str | None = None

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
        durable = self.server.durable
        if durable is not None and durable.hold(self, data):
            return  # (sent once the changes recorded so far are committed)
        out = self._out
        out.append(data)
        if len(out) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def release(self, chunks: list[bytes]) -> None:
        """Send output `opgraph_server.durable.Durable.hold` kept until a commit."""
        self._out.extend(chunks)
        self.flush()

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

    def watch(self, protocol: Any) -> None:
        """Be told by ``protocol`` (a `WatchedProtocol`) when the peer goes."""
        if isinstance(protocol, WatchedProtocol):
            protocol.on_gone = self.peer_gone
            if protocol.gone:
                self.gone = True

    def peer_gone(self) -> None:
        """The client closed its side or the connection was lost: nobody will read the answer
        of the request in flight, so stop its work (a picture's ``dot`` is killed, a wait
        for a lock or a worker thread ends; a change in a worker thread runs to its end)."""
        self.gone = True
        self.cancel("the client closed the connection")

    def cancel(self, reason: str) -> bool:
        """Cancel the request in flight, if any, to be answered ``request_cancelled`` with
        ``reason``; True if there was one."""
        if self.in_flight is None or self.task is None or self._cancel_reason is not None:
            return False
        self._cancel_reason = reason
        self.task.cancel()
        return True

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
        self.task = asyncio.current_task()
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
                if self.server.durable is not None:
                    await self.server.durable.settle()  # (what it holds for us, sent)
                self.flush()
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await asyncio.wait_for(self.writer.drain(),
                                           1 if self.server.stopping else 5)
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

    async def _drain_events(self) -> bool:  # noqa: C901 (the read loop, inline for speed)
        """Handle every complete message; False once the peer has closed."""
        next_event, server, calls = self.protocol.next_event, self.server, self._calls
        check_call = check
        while True:
            event = next_event()
            if type(event) is Deferred:  # a big message: decoded in a worker thread
                head = event.head()
                request = None if head is None else Request(head[0], head[1], [])
                try:
                    event = await self._wait(server.submit(server.read_pool(), event.decode),
                                             request)
                except asyncio.CancelledError:
                    reason = self._cancelled()
                    if reason is None:
                        raise
                    if request is not None:
                        self.fail(request, RpcError("request_cancelled",
                                                    f"{request.method}: {reason}"))
                    if self.gone:
                        return False
                    self.closing = self.closing or server.stopping
                    return True
            if type(event) is Request:
                # Run inline rather than in a helper coroutine: a plain method (node.get)
                # is then answered without making any coroutine at all.
                try:
                    spec, args, options = check_call(server, self, event.method, event.params)
                    if server.durable is not None:
                        server.durable.admit(spec.name)
                    call = calls.get(spec.name)
                    if call is None:
                        call = calls[spec.name] = Call(server, self, spec.name)
                    result = spec.handler(call, *args, **options)
                    if spec.awaits or type(result) is CoroutineType:  # (a plain method may
                        result = await self._wait(result, event)  # wait, as node.get behind
                        # a change)
                except asyncio.CancelledError:
                    reason = self._cancelled()
                    if reason is None:
                        raise  # the server stops without a goodbye (the loop is closing)
                    self.fail(event, RpcError("request_cancelled", f"{event.method}: {reason}"))
                    if self.gone:
                        return False  # nobody to answer: what was sent after it is dropped
                    if server.stopping:
                        self.closing = True
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

    async def _wait(self, awaitable: Any, request: Request | None) -> Any:
        """Await a handler's result (or a big message's decoding), as the request in flight,
        which `cancel` can stop."""
        if self.gone or self.server.stopping:  # (its reason: the one that will be given)
            self._cancel_reason = ("the client closed the connection" if self.gone
                                   else "the server is shutting down")
            if isinstance(awaitable, asyncio.Future):
                awaitable.cancel()
            else:
                awaitable.close()
            raise asyncio.CancelledError
        self.in_flight = request
        try:
            return await awaitable
        finally:
            self.in_flight = None

    def _cancelled(self) -> str | None:
        """The reason the request in flight was cancelled by `cancel` (its cancellation
        taken back, so the connection goes on), or None for any other cancellation."""
        reason, self._cancel_reason = self._cancel_reason, None
        if reason is not None and self.task is not None:
            self.task.uncancel()
        return reason

    def fail(self, request: Request, exc: Exception) -> None:
        """Answer ``request`` with the error ``exc`` stands for (logged if unexpected)."""
        error = translate(exc)
        if error.name == "internal_error":
            log.exception("%s: %s failed", self.peer, request.method)
        self.send(Response(request.msgid, self.render(error), None))
