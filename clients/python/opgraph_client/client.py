"""`Client` (blocking) and `AsyncClient` (asyncio) for the opgraph server.

Both speak MessagePack-RPC through the same I/O-free protocol object the server uses, connect
to ``tcp://host:port``, ``unix:///path``, or spawn ``opgraph serve --stdio`` and talk over its
pipes, raise typed `ServerError` subclasses, and hand server notifications to a callback (and,
for the async client, to an async iterator). When a socket connection is lost (the server
restarted), they connect again by themselves, initialize again, subscribe again, and say so
with a `RECONNECTED` event; a change in flight is never sent twice (`RETRIED_METHODS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import queue
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from opgraph_server.address import DEFAULT_URL, Address, parse_url
from opgraph_server.protocol import (
    NEED_DATA,
    ConnectionClosed,
    LocalProtocolError,
    Notification,
    ProtocolError,
    Request,
    Response,
    RpcProtocol,
)

from opgraph_client.errors import (
    ClientError,
    ConnectionLost,
    GraphExistsError,
    ServerError,
    exists_in_python,
    from_wire,
    in_python,
)
from opgraph_client.publish import Publisher, Snapshot
from opgraph_client.remote import RemoteGraph, local_document

NotificationHandler = Callable[[str, list[Any]], None]
STDIO_COMMAND = (sys.executable, "-m", "opgraph", "serve", "--stdio", "--no-demo")


TOKEN_VARIABLE = "OPGRAPH_TOKEN"
"""The environment variable a client takes its token from when it is given none."""


_pause_lock = threading.Lock()
_pauses = 0  # this module's pauses in force, in every thread
_resume = False  # whether the collector ran when the first of them began


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a big reply is decoded (it makes millions of
    containers and no cycles: a collection over them triples the time).

    In a process that has loaded opgraph, opgraph's own pause (`opgraph.gcpolicy`: one counter
    for the engine, the server and this client); else a pause of this module's, as simple
    (the client imports no part of opgraph for it).
    """
    policy = sys.modules.get("opgraph.gcpolicy")
    if policy is not None:
        with policy.gc_paused():
            yield
        return
    global _pauses, _resume
    with _pause_lock:
        if not _pauses:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if not _pauses and _resume:
                gc.enable()


def _protocol() -> RpcProtocol:
    return RpcProtocol(pause=_collector_paused)


def _token(token: str | None) -> str | None:
    """``token``, or else ``$OPGRAPH_TOKEN`` (the variable ``opgraph serve`` reads), if set."""
    return token if token is not None else os.environ.get(TOKEN_VARIABLE) or None


def _options(args: tuple[Any, ...], options: dict[str, Any]) -> list[Any]:
    return [*args, options] if options else list(args)


def _encode_call(protocol: RpcProtocol, msgid: int, method: str, args: tuple[Any, ...],
                 options: dict[str, Any]) -> bytes:
    """The bytes of a request; arguments msgpack cannot carry are a `ClientError`."""
    try:
        return protocol.send(Request(msgid, method, _options(args, options)))
    except LocalProtocolError as exc:
        raise ClientError(f"{method}: cannot send these arguments: {exc}") from None


RECONNECT_ATTEMPTS = 10
"""Attempts at most to connect again after a connection is lost (``reconnect_attempts``)."""
RECONNECT_TIMEOUT = 10.0
"""Seconds at most that connecting again may take, all attempts together
(``reconnect_timeout``; a `Client`'s ``timeout`` too, when it is shorter)."""
RECONNECT_DELAY = 0.05
"""Seconds between the first failed attempt and the next; each next wait is twice as long."""
MAX_RECONNECT_DELAY = 1.0
"""The longest wait between two attempts."""
RECONNECTED = "client.reconnected"
"""The event a client posts, as if it were a server notification, once it has connected
again: ``(RECONNECTED, [{"instance", "previous", "restarted", "subscriptions", "failed"}])``.
``instance`` is the server's ``initialize`` instance now (None without initialize),
``previous`` the one before; ``restarted`` is true when they differ (another server life: what
the client holds of the old one is stale); ``subscriptions`` maps each graph subscribed to
again to its version (None: no such graph yet); ``failed`` maps a graph whose subscription
the server refused to its error (that subscription is gone)."""

RETRIED_METHODS = frozenset({
    "initialize", "ops.list", "graph.list", "graph.info", "graph.export", "node.get",
    "graph.nodes", "graph.gradcheck", "graph.analyze", "graph.diagnostics", "graph.aggregate",
    "graph.render", "graph.subscribe", "graph.unsubscribe",
})
"""Methods that change nothing on the server (or, for the session's, nothing that a second
call would change again): one in flight when the connection is lost is sent again, once, after
reconnecting. So is ``graph.eval`` called with ``keep=False``. Any other request lost in flight
is a change that may or may not have been applied: it raises `ConnectionLost` (``in_doubt``)."""


def _retried(method: str, options: dict[str, Any]) -> bool:
    return method in RETRIED_METHODS or (method == "graph.eval" and options.get("keep") is False)


def _check_reconnect(attempts: int, timeout: float) -> None:
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"reconnect_attempts must be an integer of at least 1, got {attempts!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"reconnect_timeout must be a number of seconds above 0, got "
                         f"{timeout!r}")


def _socket_url(url: Any) -> bool:
    """Whether ``url`` is an address a client can connect to again (``tcp:``, ``unix:``)."""
    try:
        return parse_url(url).scheme in ("tcp", "unix")
    except ValueError:
        return False


def _readable(sock: socket.socket) -> bool:
    """Whether ``sock`` has data (or its end) to read now."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


async def _open_streams(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if address.scheme == "tcp":
        return await asyncio.open_connection(address.host, address.port)
    return await asyncio.open_unix_connection(address.path)


def _reconnected(previous: str | None, instance: str | None, subscriptions: dict[str, Any],
                 failed: dict[str, str]) -> tuple[str, list[Any]]:
    """The `RECONNECTED` event."""
    return RECONNECTED, [{"instance": instance, "previous": previous,
                          "restarted": instance != previous, "subscriptions": subscriptions,
                          "failed": failed}]


def _gave_up(url: str, reason: str, attempt: int, elapsed: float, attempts: int, limit: float,
             last: str) -> str:
    return (f"{reason}, and connecting again failed: {attempt} attempt"
            f"{'' if attempt == 1 else 's'} in {elapsed:.1f} s (at most {attempts} within "
            f"{limit:g} s: reconnect_attempts, reconnect_timeout); the last: {last}")


def _unanswered_error(method: str, options: dict[str, Any], reason: str,
                      final: str | None) -> ConnectionLost:
    """The error for a request whose answer never came (the connection was lost meanwhile)."""
    why = reason if final is None or final.startswith(reason) else f"{reason}; {final}"
    if _retried(method, options):
        return ConnectionLost(f"{method}: {why}, before the answer came")
    return ConnectionLost(
        f"{method}: {why}, before the answer came: the server may or may not have applied "
        "this change, and it was not sent again (look, e.g. with graph.info, before repeating "
        "it)", in_doubt=True)


def _forget_dropped(subscriptions: dict[str, None], params: list[Any]) -> None:
    """A ``graph.dropped`` ends the subscription to that graph (the server's too)."""
    payload = params[0] if params else None
    if isinstance(payload, dict) and isinstance(payload.get("graph"), str):
        subscriptions.pop(payload["graph"], None)


class _Unsent(Exception):
    """The connection was found lost before the whole request was on it: the server cannot
    have read it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Unanswered(Exception):
    """The connection was lost after the request was sent, before its answer came."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Pipes:
    """A spawned server's stdin/stdout with a socket-like recv/sendall."""

    def __init__(self, command: Sequence[str]) -> None:
        self.process = subprocess.Popen(list(command), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=None)
        self.timeout: float | None = None

    def sendall(self, data: bytes) -> None:
        try:
            self.process.stdin.write(data)  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError) as exc:
            raise ConnectionLost("the server process closed its input") from exc

    def recv(self, size: int) -> bytes:
        fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        if self.timeout is not None:
            ready, _, _ = select.select([fd], [], [], self.timeout)
            if not ready:
                raise TimeoutError("timed out")  # as a socket with a timeout does
        return os.read(fd, size)

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def gettimeout(self) -> float | None:
        return self.timeout

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Client:
    """A blocking client. ``with Client("tcp://127.0.0.1:7450") as c: c.call("graph.list")``.

    ``on_notification(method, params)`` is called for server notifications that arrive while
    waiting for a reply or in `poll`; every notification is also put in ``notifications`` (a
    queue of ``(method, params)``). ``initialize`` runs on connect, with ``token``, or when that
    is not given, with ``$OPGRAPH_TOKEN`` if it is set (as for ``opgraph serve``).

    **Reconnecting** (``tcp:`` and ``unix:`` addresses; a spawned server is not restarted).
    When the connection is lost (the server restarted, say), the next `call` or `poll`
    connects again: at most ``reconnect_attempts`` attempts within ``reconnect_timeout``
    seconds (or ``timeout``, if shorter), waiting 0.05 s after the first failed one and twice as
    long after each next (at most 1 s). It sends ``initialize`` again with the same options,
    subscribes again to every graph this client is subscribed to, and tells the caller with a
    ``client.reconnected`` event, shaped like a server notification: ``("client.reconnected",
    [{"instance", "previous", "restarted", "subscriptions", "failed"}])`` (see
    `RECONNECTED`). It goes to ``notifications`` and to ``on_notification``, which is called
    once the client's lock is released, so the handler may call the client to fetch what it
    shows again. A request that was sent and got no answer is sent again, once, only when it
    changes nothing (`RETRIED_METHODS`); a change raises `ConnectionLost` with ``in_doubt``
    set. When the server does not come back, the call raises `ConnectionLost` saying how many
    attempts were made. ``reconnect=False`` turns all this off: after a loss every call raises
    `ConnectionLost`.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float | None = 60.0,
        on_notification: NotificationHandler | None = None,
        structured_errors: bool = True,
        initialize: bool = True,
        reconnect: bool = True,
        reconnect_attempts: int = RECONNECT_ATTEMPTS,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
    ) -> None:
        _check_reconnect(reconnect_attempts, reconnect_timeout)
        self.url = url
        self.timeout = timeout
        self.on_notification = on_notification
        self.notifications: queue.SimpleQueue[tuple[str, list[Any]]] = queue.SimpleQueue()
        self.reconnect = reconnect
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_timeout = reconnect_timeout
        self.reconnects = 0
        """How many times this client has connected again after losing its connection."""
        self._protocol = _protocol()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self._eof = False  # the server closed its side of the current connection
        self._lost = ""  # why the last connection ended
        self._final: str | None = None  # why this client will not connect again, if it will not
        self._subscriptions: dict[str, None] = {}  # graphs subscribed to, in order
        self._init: tuple[tuple[Any, ...], dict[str, Any]] | None = None  # initialize's params
        self._handover: queue.SimpleQueue[tuple[str, list[Any]]] = queue.SimpleQueue()
        self._conn: Any = self._open(url)
        self.server_info: dict[str, Any] = {}
        if initialize:
            options: dict[str, Any] = {"client": {"name": "opgraph-python"}}
            token = _token(token)
            if token is not None:
                options["token"] = token
            if structured_errors:
                options["errors"] = "structured"
            try:
                self.call("initialize", options)
            except BaseException:
                self.close()  # a refused token must not leave a socket or a child process
                raise

    @classmethod
    def spawn(cls, command: Sequence[str] = STDIO_COMMAND, **kwargs: Any) -> Client:
        """Start ``opgraph serve --stdio`` as a child process and talk to it over its pipes
        (a server that exits is not started again: calls then raise `ConnectionLost`)."""
        return cls(_SpawnURL(command), **kwargs)  # type: ignore[arg-type]

    def _open(self, url: Any, timeout: float | None = None) -> Any:
        """A new connection to ``url`` (a socket, or a spawned server's pipes); `ClientError`
        if it cannot be made. ``timeout`` bounds connecting (``self.timeout`` by default)."""
        if isinstance(url, _SpawnURL):
            pipes = _Pipes(url.command)
            pipes.settimeout(self.timeout)
            return pipes
        address = parse_url(url)
        wait = self.timeout if timeout is None else timeout
        try:
            if address.scheme == "tcp":
                sock = socket.create_connection((address.host, address.port), timeout=wait)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(wait)
                    sock.connect(address.path)
                except BaseException:
                    sock.close()
                    raise
        except OSError as exc:
            raise ClientError(f"cannot connect to {url}: {exc.strerror or exc}") from None
        sock.settimeout(self.timeout)
        return sock

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (or stop the spawned server). Calls after it raise
        `ClientError`."""
        self._closed = True
        _close_publisher(self)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    # --- calls --------------------------------------------------------------------------

    def call(self, method: str, *args: Any, **options: Any) -> Any:
        """Call ``method`` with positional ``args`` and an options map; return its result.

        Raises the typed `ServerError` of an error response, `ClientError` when no answer
        comes within ``timeout``, and `ConnectionLost` when the connection is lost and cannot
        be made again, or was lost with this change in flight (``in_doubt``).
        """
        try:
            with self._lock:
                return self._call(method, args, options)
        finally:
            self._hand_over()

    def notify(self, method: str, *args: Any) -> None:
        """Send a notification (no reply; connecting again first if the connection was lost)."""
        try:
            with self._lock:
                self._ready()
                try:
                    self._conn.sendall(self._protocol.send(Notification(method, list(args))))
                except (OSError, ConnectionLost) as exc:
                    raise self._lose(f"lost the connection to {self.url}: {exc}") from None
        finally:
            self._hand_over()

    def poll(self, timeout: float = 0.0) -> list[tuple[str, list[Any]]]:
        """Read notifications that arrive within ``timeout`` seconds; return them (with any
        taken from ``notifications`` before). A lost connection is made again, as in `call`,
        and its ``client.reconnected`` event is among those returned."""
        got: list[tuple[str, list[Any]]] = []
        try:
            with self._lock:
                self._poll(timeout)
        finally:
            self._hand_over()
        while not self.notifications.empty():
            got.append(self.notifications.get())
        return got

    # --- the connection ------------------------------------------------------------------

    def _call(self, method: str, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        if self._closed:
            raise ClientError("the client is closed")
        self._ready()
        try:
            result = self._send(method, args, options)
        except _Unsent as unsent:  # the server cannot have seen it: send it on a new connection
            self._reopen(unsent.reason)
            result = self._send_again(method, args, options)
        except _Unanswered as lost:
            if not _retried(method, options) or not self._reopenable():
                raise _unanswered_error(method, options, lost.reason, self._final) from None
            self._reopen(lost.reason)
            result = self._send_again(method, args, options)
        self._note(method, args, options, result)
        return result

    def _send_again(self, method: str, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """`_send` on a new connection, once: a second loss is the caller's `ConnectionLost`."""
        try:
            return self._send(method, args, options)
        except (_Unsent, _Unanswered) as exc:
            raise _lost_again(method, options, exc, self._final) from None

    def _send(self, method: str, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """Send one request on the current connection and wait for its answer.

        `_Unsent` when the connection was found lost before the whole request was on it (the
        server cannot have read it); `_Unanswered` when it was lost after.
        """
        msgid = next(self._ids) % 2**32
        data = _encode_call(self._protocol, msgid, method, args, options)
        try:
            self._conn.sendall(data)
        except TimeoutError:
            self._lose(f"{self.url} took no data for {self.timeout} s")
            raise ClientError(f"{method}: {self.url} took none of the request within "
                              f"{self.timeout} s") from None
        except (OSError, ConnectionLost) as exc:
            raise _Unsent(str(self._lose(f"lost the connection to {self.url}: {exc}"))) \
                from None
        while True:
            try:
                event = self._read_event()
            except ConnectionLost as exc:
                raise _Unanswered(str(exc)) from None
            if isinstance(event, Response) and event.msgid == msgid:
                if event.error is not None:
                    raise in_python(from_wire(event.error), method, args)
                return event.result

    def _note(self, method: str, args: tuple[Any, ...], options: dict[str, Any],
              result: Any) -> None:
        """Remember what a reconnection has to do again: initialize, the subscriptions."""
        _note_session(self, method, args, options, result)

    def _ready(self) -> None:
        """Make sure there is a connection: take what the server sent meanwhile (its end
        included, so that a request is not sent on a connection already closed), and connect
        again if the connection is lost."""
        if self._closed:
            raise ClientError("the client is closed")
        if self._conn is not None:
            self._drain()
        if self._conn is None:
            self._reopen(self._lost)

    def _drain(self) -> None:
        """Read what has arrived, without waiting: notifications are delivered, and a closed
        connection is found (and dropped)."""
        conn = self._conn
        if not isinstance(conn, socket.socket):
            return  # (a spawned server's pipes: nothing to reconnect to)
        try:
            while self._conn is conn and _readable(conn):
                data = conn.recv(256 * 1024)
                self._eof = not data
                self._protocol.receive_data(data)
                while self._read_event(block=False, wait=False) is not NEED_DATA:
                    pass  # (a late answer to a call that timed out is dropped)
        except ConnectionLost:
            pass  # (_read_event dropped the connection and said why)
        except OSError as exc:
            self._lose(f"lost the connection to {self.url}: {exc}")

    def _poll(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._ready()
        while True:
            conn = self._conn
            conn.settimeout(max(deadline - time.monotonic(), 0.000001))
            try:
                while True:
                    self._read_event(block=False)
            except (TimeoutError, BlockingIOError):
                return
            except ConnectionLost:
                self._reopen(self._lost)  # then wait for the rest of the time on the new one
                if time.monotonic() >= deadline:
                    return
            finally:
                if self._conn is conn:
                    conn.settimeout(self.timeout)

    def _reopenable(self) -> bool:
        return (self.reconnect and self._final is None and not self._closed
                and not isinstance(self.url, _SpawnURL))

    def _reopen(self, reason: str) -> None:
        """Connect again (see `_reconnect`), or raise `ConnectionLost` saying why not."""
        if self._closed:
            raise ClientError("the client is closed")
        if self._final is not None:
            raise ConnectionLost(self._final)
        if isinstance(self.url, _SpawnURL):
            raise ConnectionLost(f"{reason}; a spawned server is not started again: spawn a "
                                 "new client")
        if not self.reconnect:
            raise ConnectionLost(f"{reason}; this client does not reconnect (reconnect=False)")
        self._reconnect(reason)

    def _reconnect(self, reason: str) -> None:
        """Connect again within the limits, initialize, subscribe again, and post the
        ``client.reconnected`` event; `ConnectionLost` when no attempt succeeds."""
        start = time.monotonic()
        budget = self.reconnect_timeout if self.timeout is None \
            else min(self.reconnect_timeout, self.timeout)
        deadline = start + budget
        delay, attempt, last = RECONNECT_DELAY, 0, reason
        while True:
            attempt += 1
            try:
                self._conn = self._open(self.url, max(deadline - time.monotonic(), 0.001))
            except ClientError as exc:
                last = str(exc)
            else:
                self._protocol, self._eof = _protocol(), False
                try:
                    self._renew(deadline)
                    return
                except ServerError as exc:  # a refused initialize: trying again cannot help
                    self._lose(f"{self.url} refused initialize")
                    raise ConnectionLost(f"lost the connection to {self.url} ({reason}); "
                                         f"connected again, but initialize failed: {exc}") \
                        from exc
                except (ClientError, _Unsent, _Unanswered) as exc:
                    self._lose(str(exc))
                    last = str(exc)
            remaining = deadline - time.monotonic()
            if attempt >= self.reconnect_attempts or remaining <= 0:
                raise ConnectionLost(_gave_up(self.url, reason, attempt,
                                              time.monotonic() - start, self.reconnect_attempts,
                                              budget, last))
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_RECONNECT_DELAY)

    def _renew(self, deadline: float) -> None:
        """On a new connection: initialize as before, subscribe again, post the event."""
        self._conn.settimeout(max(deadline - time.monotonic(), 0.001))
        previous = self.server_info.get("instance")
        if self._init is not None:
            info = self._send("initialize", *self._init)
            self.server_info = info if isinstance(info, dict) else {}
        subscriptions, failed = {}, {}
        for name in list(self._subscriptions):
            try:
                subscriptions[name] = self._send("graph.subscribe", (name,), {})["version"]
            except ServerError as exc:
                failed[name] = str(exc)
                self._subscriptions.pop(name, None)
        self._conn.settimeout(self.timeout)
        self.reconnects += 1
        event = _reconnected(previous, self.server_info.get("instance"), subscriptions, failed)
        self.notifications.put(event)
        self._handover.put(event)

    def _lose(self, reason: str, *, final: bool = False) -> ConnectionLost:
        """Drop the current connection (lost for ``reason``); the error to raise for it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
        self._lost = reason
        if final:
            self._final = f"{reason}: make a new client"
        return ConnectionLost(reason)

    def _read_event(self, block: bool = True, wait: bool = True) -> Any:
        """The next event from the server, notifications delivered on the way (and, unless
        ``block``, returned too). ``wait=False`` returns `NEED_DATA` instead of reading."""
        while True:
            try:
                event = self._protocol.next_event()
            except ProtocolError as exc:  # the server sent something that is not msgpack-rpc
                if self._eof:  # (or it went away in the middle of a message: a loss as any)
                    raise self._lose(f"{self.url} closed the connection in the middle of a "
                                     "message") from None
                raise self._lose(f"{self.url} broke the protocol: {exc}", final=True) from None
            if event is not NEED_DATA:
                if isinstance(event, ConnectionClosed):
                    raise self._lose(f"{self.url} closed the connection")
                if isinstance(event, Notification):
                    self._deliver(event)
                    if not block:
                        return event
                    continue
                return event
            if not wait:
                return NEED_DATA
            try:
                data = self._conn.recv(256 * 1024)
            except TimeoutError:
                if block:
                    waited = self._conn.gettimeout()
                    raise ClientError(f"no answer from {self.url} within {waited:g} s") \
                        from None
                raise
            except OSError as exc:
                raise self._lose(f"lost the connection to {self.url}: {exc}") from None
            self._eof = not data
            self._protocol.receive_data(data)

    def _deliver(self, event: Notification) -> None:
        if event.method == "graph.dropped":
            _forget_dropped(self._subscriptions, event.params)
        self.notifications.put((event.method, event.params))
        if self.on_notification is not None:
            self.on_notification(event.method, event.params)

    def _hand_over(self) -> None:
        """Call ``on_notification`` with the events held until the lock was released."""
        while True:
            try:
                method, params = self._handover.get_nowait()
            except queue.Empty:
                return
            if self.on_notification is not None:
                self.on_notification(method, params)

    # --- conveniences -------------------------------------------------------------------

    def graph(self, name: str) -> RemoteGraph:
        """A handle on the server's graph ``name`` (which need not exist yet)."""
        return RemoteGraph(self, name)

    def create_graph(self, name: str, *, replace: bool = False) -> RemoteGraph:
        """Create graph ``name`` on the server and return a handle on it.

        A graph of that name is a `GraphExistsError`, unless ``replace`` is true: then the new,
        empty graph replaces it.
        """
        try:
            self.call("graph.create", name, replace=replace)
        except GraphExistsError as exc:
            raise exists_in_python(exc, name, f"create_graph({name!r}, replace=True)") from None
        return RemoteGraph(self, name)

    def publish(self, name: str, root: Any) -> dict[str, Any]:
        """Send the local graph under ``root`` (a `opgraph.Value`, or a `opgraph.Graph`) as
        graph ``name``.

        Replaces any graph of that name; subscribers see a new version. Source locations
        recorded with ``opgraph.track_source()`` travel with the nodes. When the graph has the
        structure this client last published as ``name`` (a training step's graph, built
        again), only its data and gradients are sent, as arrays (``graph.publish_values``);
        else, or when the server's graph changed meanwhile, the whole graph.
        """
        publisher = _publisher(self)
        snapshot = Snapshot.of(root)
        args = publisher.values_request(name, snapshot)
        if args is not None:
            try:
                return self.call("graph.publish_values", *args)
            except ServerError as exc:
                if not publisher.stale(name, exc):
                    raise
        result = self.call("graph.publish", name, local_document(root))
        publisher.published(name, snapshot, result)
        return result


class _SpawnURL:
    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)

    def __str__(self) -> str:
        return "stdio:" + " ".join(self.command)


class AsyncClient:
    """An asyncio client: ``client = await AsyncClient.connect(url)``; ``await client.call(...)``.

    Requests may be in flight together; replies are matched by msgid. Notifications go to
    ``on_notification`` and to `notifications()`, an async iterator.

    It reconnects as `Client` does (``tcp:`` and ``unix:``; ``reconnect``,
    ``reconnect_attempts``, ``reconnect_timeout``), and at once: when the connection is lost
    it starts connecting again in the background, so a program that only reads
    `notifications()` gets the ``client.reconnected`` event, then the notifications of the new
    connection. Calls made meanwhile wait for that reconnection (within its limits). The
    iterator ends when the client is closed, or when reconnecting has failed.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 url: str, on_notification: NotificationHandler | None = None,
                 process: asyncio.subprocess.Process | None = None, *,
                 reconnect: bool = True, reconnect_attempts: int = RECONNECT_ATTEMPTS,
                 reconnect_timeout: float = RECONNECT_TIMEOUT) -> None:
        _check_reconnect(reconnect_attempts, reconnect_timeout)
        self.url = url
        self.on_notification = on_notification
        self.server_info: dict[str, Any] = {}
        self.reconnect = reconnect
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_timeout = reconnect_timeout
        self.reconnects = 0
        """How many times this client has connected again after losing its connection."""
        self._process = process
        self._ids = itertools.count(1)
        self._queue: asyncio.Queue[tuple[str, list[Any]] | None] = asyncio.Queue()
        self._closed = False
        self._final: str | None = None  # why this client will not connect again, if it will not
        self._subscriptions: dict[str, None] = {}
        self._init: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer = writer
        self._attach(reader, writer)

    @classmethod
    async def connect(cls, url: str = DEFAULT_URL, *, token: str | None = None,
                      on_notification: NotificationHandler | None = None,
                      structured_errors: bool = True, initialize: bool = True,
                      reconnect: bool = True, reconnect_attempts: int = RECONNECT_ATTEMPTS,
                      reconnect_timeout: float = RECONNECT_TIMEOUT) -> AsyncClient:
        """Connect to ``url`` and (by default) initialize, with ``token`` or ``$OPGRAPH_TOKEN``.

        ``reconnect``, ``reconnect_attempts`` and ``reconnect_timeout``: as for `Client`.
        """
        _check_reconnect(reconnect_attempts, reconnect_timeout)
        try:
            reader, writer = await _open_streams(parse_url(url))
        except OSError as exc:
            raise ClientError(f"cannot connect to {url}: {exc.strerror or exc}") from None
        client = cls(reader, writer, url, on_notification, reconnect=reconnect,
                     reconnect_attempts=reconnect_attempts, reconnect_timeout=reconnect_timeout)
        if initialize:
            try:
                await client._initialize(token, structured_errors)
            except BaseException:
                await client.close()
                raise
        return client

    @classmethod
    async def spawn(cls, command: Sequence[str] = STDIO_COMMAND, *,
                    on_notification: NotificationHandler | None = None,
                    **kwargs: Any) -> AsyncClient:
        """Start ``opgraph serve --stdio`` and talk to it over its pipes (a server that exits
        is not started again)."""
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        writer = process.stdin
        client = cls(process.stdout, writer, "stdio", on_notification, process)  # type: ignore[arg-type]
        try:
            await client._initialize(kwargs.get("token"), kwargs.get("structured_errors", True))
        except BaseException:
            await client.close()  # stops the child too
            raise
        return client

    async def _initialize(self, token: str | None, structured: bool) -> None:
        options: dict[str, Any] = {"client": {"name": "opgraph-python-async"}}
        token = _token(token)
        if token is not None:
            options["token"] = token
        if structured:
            options["errors"] = "structured"
        await self.call("initialize", options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (and stop a spawned server, or a reconnection under way)."""
        if self._closed:
            return
        self._closed = True
        _close_publisher(self)
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnecting
        self._writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._queue.put_nowait(None)
        if self._process is not None:
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()

    async def call(self, method: str, *args: Any, **options: Any) -> Any:
        """Call ``method``; return its result or raise its typed `ServerError`.

        `ConnectionLost` as for `Client.call`: the connection cannot be made again, or was
        lost with this change in flight (``in_doubt``).
        """
        await self._ready()
        try:
            result = await self._request(method, args, options)
        except _Unsent as unsent:
            await self._ready(unsent.reason)
            result = await self._request_again(method, args, options)
        except _Unanswered as lost:
            if not _retried(method, options) or not self._reopenable():
                raise _unanswered_error(method, options, lost.reason, self._final) from None
            await self._ready(lost.reason)
            result = await self._request_again(method, args, options)
        self._note(method, args, options, result)
        return result

    async def notify(self, method: str, *args: Any) -> None:
        """Send a notification (no reply; connecting again first if the connection was lost)."""
        await self._ready()
        self._writer.write(self._protocol.send(Notification(method, list(args))))
        try:
            await self._writer.drain()
        except OSError as exc:
            raise ConnectionLost(f"lost the connection to {self.url}: {exc}") from None

    async def notifications(self) -> AsyncIterator[tuple[str, list[Any]]]:
        """Server notifications as ``(method, params)``, and ``client.reconnected`` events,
        until the client is closed or the connection is lost for good."""
        while True:
            item = await self._queue.get()
            if item is None:
                if self._closed or self._lost is not None:
                    return
                continue  # (the end of a connection a later call has made again)
            yield item

    # --- the connection ----------------------------------------------------------------

    def _attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Use a new connection: its own protocol object, table of calls and read loop."""
        self._reader, self._writer = reader, writer
        self._protocol = _protocol()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._lost: ConnectionLost | None = None  # why the connection ended, once it has
        self._task = asyncio.get_running_loop().create_task(
            self._read_loop(reader, self._protocol, self._waiting))

    def _detach(self, reason: str) -> None:
        """Give up the current connection (one a reconnection could not initialize)."""
        self._reader = None  # (its read loop no longer speaks for the client)
        self._lost = ConnectionLost(reason)
        self._writer.close()
        self._task.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionLost(reason))

    async def _ready(self, reason: str | None = None) -> None:
        """Return once there is a connection ready for requests: wait for a reconnection
        under way, or start one if the connection is lost; `ConnectionLost` if none can be
        made."""
        if self._closed:
            raise ClientError("the client is closed")
        reconnecting = self._reconnecting
        if reconnecting is None or reconnecting.done():
            if self._lost is None and reason is None:
                return
            if not self._reopenable():
                why = reason or str(self._lost)
                if self._final is not None:
                    raise ConnectionLost(self._final)
                if self._process is not None or not _socket_url(self.url):
                    raise ConnectionLost(f"{why}; a spawned server is not started again: "
                                         "spawn a new client")
                raise ConnectionLost(f"{why}; this client does not reconnect "
                                     "(reconnect=False)")
            if self._lost is None:  # (lost, but its read loop has not seen it yet)
                self._detach(reason or "the connection was lost")
            reconnecting = self._start_reconnect(str(self._lost))
        try:
            await asyncio.shield(reconnecting)
        except ConnectionLost as exc:
            raise ConnectionLost(str(exc)) from None
        if self._closed:
            raise ClientError("the client is closed")

    def _reopenable(self) -> bool:
        return (self.reconnect and self._final is None and self._process is None
                and not self._closed and _socket_url(self.url))

    def _start_reconnect(self, reason: str) -> asyncio.Task[None]:
        """The reconnection under way, started now if there is none."""
        task = self._reconnecting
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._reconnect(reason))
            task.add_done_callback(self._reconnect_done)
            self._reconnecting = task
        return task

    def _reconnect_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._queue.put_nowait(None)  # the notifications end: the server is gone

    async def _reconnect(self, reason: str) -> None:
        """Connect again within the limits, initialize, subscribe again, and post the
        ``client.reconnected`` event; `ConnectionLost` when no attempt succeeds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.reconnect_timeout
        address = parse_url(self.url)
        delay, attempt, last = RECONNECT_DELAY, 0, reason
        while True:
            attempt += 1
            try:
                reader, writer = await asyncio.wait_for(
                    _open_streams(address), max(deadline - loop.time(), 0.001))
            except (OSError, TimeoutError) as exc:
                last = f"cannot connect to {self.url}: " + (
                    "no connection within the time left" if isinstance(exc, TimeoutError)
                    else exc.strerror or str(exc))
            else:
                self._attach(reader, writer)
                try:
                    await asyncio.wait_for(self._renew(), max(deadline - loop.time(), 0.001))
                    return
                except ServerError as exc:  # a refused initialize: trying again cannot help
                    self._detach(f"{self.url} refused initialize")
                    raise ConnectionLost(f"{reason}; connected again, but initialize failed: "
                                         f"{exc}") from exc
                except (ClientError, _Unsent, _Unanswered, TimeoutError) as exc:
                    last = str(exc) or f"no answer from {self.url} within the time left"
                    self._detach(last)
            remaining = deadline - loop.time()
            if attempt >= self.reconnect_attempts or remaining <= 0:
                raise ConnectionLost(_gave_up(self.url, reason, attempt, loop.time() - start,
                                              self.reconnect_attempts, self.reconnect_timeout,
                                              last))
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_RECONNECT_DELAY)

    async def _renew(self) -> None:
        """On a new connection: initialize as before, subscribe again, post the event."""
        previous = self.server_info.get("instance")
        if self._init is not None:
            info = await self._request("initialize", *self._init)
            self.server_info = info if isinstance(info, dict) else {}
        subscriptions, failed = {}, {}
        for name in list(self._subscriptions):
            try:
                subscriptions[name] = (await self._request("graph.subscribe", (name,),
                                                           {}))["version"]
            except ServerError as exc:
                failed[name] = str(exc)
                self._subscriptions.pop(name, None)
        self.reconnects += 1
        method, params = _reconnected(previous, self.server_info.get("instance"),
                                      subscriptions, failed)
        self._deliver(method, params)

    async def _request(self, method: str, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """Send one request on the current connection and wait for its answer (`_Unsent`,
        `_Unanswered`: as for `Client`)."""
        msgid = next(self._ids) % 2**32
        data = _encode_call(self._protocol, msgid, method, args, options)
        if self._lost is not None or self._writer.is_closing():
            raise _Unsent(str(self._lost or f"lost the connection to {self.url}"))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiting = self._waiting
        waiting[msgid] = future
        try:
            self._writer.write(data)
            try:
                await self._writer.drain()
                return await future
            except ServerError as exc:
                worded = in_python(exc, method, args)
                if worded is exc:
                    raise
                raise worded from None
            except ConnectionLost as exc:
                raise _Unanswered(str(exc)) from None
            except OSError as exc:  # (drain: the request may have gone out in part or whole)
                raise _Unanswered(f"lost the connection to {self.url}: {exc}") from None
        finally:
            waiting.pop(msgid, None)

    async def _request_again(self, method: str, args: tuple[Any, ...],
                             options: dict[str, Any]) -> Any:
        try:
            return await self._request(method, args, options)
        except (_Unsent, _Unanswered) as exc:
            raise _lost_again(method, options, exc, self._final) from None

    def _note(self, method: str, args: tuple[Any, ...], options: dict[str, Any],
              result: Any) -> None:
        """Remember what a reconnection has to do again (as `Client` does)."""
        _note_session(self, method, args, options, result)

    def _deliver(self, method: str, params: list[Any]) -> None:
        if method == "graph.dropped":
            _forget_dropped(self._subscriptions, params)
        self._queue.put_nowait((method, params))
        if self.on_notification is not None:
            self.on_notification(method, params)

    async def _read_loop(self, reader: asyncio.StreamReader, protocol: RpcProtocol,
                         waiting: dict[int, asyncio.Future[Any]]) -> None:
        error: ClientError = ConnectionLost(f"{self.url} closed the connection")
        final: str | None = None
        data = b"-"
        try:
            while True:
                data = await reader.read(256 * 1024)
                protocol.receive_data(data)
                for event in protocol.events():
                    if isinstance(event, ConnectionClosed):
                        return
                    if isinstance(event, Response):
                        future = waiting.get(event.msgid)
                        if future is not None and not future.done():
                            if event.error is not None:
                                future.set_exception(from_wire(event.error))
                            else:
                                future.set_result(event.result)
                    elif isinstance(event, Notification):
                        self._deliver(event.method, event.params)
        except asyncio.CancelledError:
            error = ClientError("the client is closed")
            raise
        except ProtocolError as exc:
            if data:
                final = f"{self.url} broke the protocol: {exc}"
                error = ConnectionLost(final)
            else:  # (it went away in the middle of a message: a loss as any)
                error = ConnectionLost(f"{self.url} closed the connection in the middle of a "
                                       "message")
        except Exception as exc:
            error = ConnectionLost(f"lost the connection to {self.url}: {exc}")
        finally:
            self._lost_by(reader, waiting, error, final)

    def _lost_by(self, reader: asyncio.StreamReader, waiting: dict[int, asyncio.Future[Any]],
                 error: ClientError, final: str | None) -> None:
        """The end of the read loop of ``reader``'s connection: its calls fail, and (if it is
        still the client's connection) a reconnection starts, or the notifications end."""
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)
        if self._reader is not reader:
            return  # (a connection the client had already given up)
        self._lost = error if isinstance(error, ConnectionLost) else ConnectionLost(str(error))
        if final is not None:
            self._final = f"{final}: make a new client"
        self._writer.close()
        if self._reopenable():
            self._start_reconnect(str(error))
        else:
            self._queue.put_nowait(None)

    def graph(self, name: str) -> RemoteGraph:
        """A handle on graph ``name`` whose methods return awaitables."""
        return RemoteGraph(self, name)

    async def create_graph(self, name: str, *, replace: bool = False) -> RemoteGraph:
        """Create graph ``name`` on the server and return a handle on it (see `Client`)."""
        try:
            await self.call("graph.create", name, replace=replace)
        except GraphExistsError as exc:
            raise exists_in_python(
                exc, name, f"await create_graph({name!r}, replace=True)") from None
        return RemoteGraph(self, name)

    async def publish(self, name: str, root: Any) -> dict[str, Any]:
        """Send the local graph under ``root`` as graph ``name`` (see `Client.publish`: only
        the values when the structure is the one last published)."""
        publisher = _publisher(self)
        snapshot = Snapshot.of(root)
        args = publisher.values_request(name, snapshot)
        if args is not None:
            try:
                return await self.call("graph.publish_values", *args)
            except ServerError as exc:
                if not publisher.stale(name, exc):
                    raise
        result = await self.call("graph.publish", name, local_document(root))
        publisher.published(name, snapshot, result)
        return result


def _lost_again(method: str, options: dict[str, Any], exc: _Unsent | _Unanswered,
                final: str | None) -> ConnectionLost:
    """The error of a request lost again on the connection made after a first loss."""
    if isinstance(exc, _Unsent):
        return ConnectionLost(f"{method}: {exc.reason} (again, after reconnecting; it was not "
                              "sent)")
    return _unanswered_error(method, options, f"{exc.reason} (again, after reconnecting)", final)


def _note_session(client: Any, method: str, args: tuple[Any, ...], options: dict[str, Any],
                  result: Any) -> None:
    """What `Client._note` and `AsyncClient._note` keep of a successful call: how to
    initialize again, which graphs to subscribe to again, whether the session is over."""
    if method == "initialize":
        client._init = (args, options)
        if isinstance(result, dict):
            client.server_info = result
    elif method in ("graph.subscribe", "graph.unsubscribe") and args \
            and isinstance(args[0], str):
        if method == "graph.subscribe":
            client._subscriptions[args[0]] = None
        else:
            client._subscriptions.pop(args[0], None)
    elif method == "shutdown":
        client._final = (f"the session with {client.url} was shut down (shutdown): make a "
                         "new client to talk to the server again")


def _close_publisher(client: Any) -> None:
    publisher = client.__dict__.pop("_publisher", None)
    if publisher is not None:
        publisher.close()


def _publisher(client: Any) -> Publisher:
    """What ``client`` last published (see `opgraph_client.publish`), made on first use."""
    publisher = client.__dict__.get("_publisher")
    if publisher is None:
        publisher = client.__dict__["_publisher"] = Publisher()
    return publisher
