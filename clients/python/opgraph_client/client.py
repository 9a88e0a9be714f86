"""`Client` (blocking) and `AsyncClient` (asyncio) for the opgraph server.

Both speak MessagePack-RPC through the same I/O-free protocol object the server uses, connect
to ``tcp://host:port``, ``unix:///path``, or spawn ``opgraph serve --stdio`` and talk over its
pipes, raise typed `ServerError` subclasses, and hand server notifications to a callback (and,
for the async client, to an async iterator).
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
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from opgraph_server.address import DEFAULT_URL, parse_url
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
    waiting for a reply or in `poll`. ``initialize`` runs on connect, with ``token``, or when
    that is not given, with ``$OPGRAPH_TOKEN`` if it is set (as for ``opgraph serve``).
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
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.on_notification = on_notification
        self.notifications: queue.SimpleQueue[tuple[str, list[Any]]] = queue.SimpleQueue()
        self._protocol = _protocol()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
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
                self.server_info = self.call("initialize", options)
            except BaseException:
                self.close()  # a refused token must not leave a socket or a child process
                raise

    @classmethod
    def spawn(cls, command: Sequence[str] = STDIO_COMMAND, **kwargs: Any) -> Client:
        """Start ``opgraph serve --stdio`` as a child process and talk to it over its pipes."""
        return cls(_SpawnURL(command), **kwargs)  # type: ignore[arg-type]

    def _open(self, url: Any) -> Any:
        if isinstance(url, _SpawnURL):
            pipes = _Pipes(url.command)
            pipes.settimeout(self.timeout)
            return pipes
        address = parse_url(url)
        try:
            if address.scheme == "tcp":
                sock = socket.create_connection((address.host, address.port),
                                                timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(address.path)
        except OSError as exc:
            raise ClientError(f"cannot connect to {url}: {exc.strerror or exc}") from None
        return sock

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (or stop the spawned server)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- calls --------------------------------------------------------------------------

    def call(self, method: str, *args: Any, **options: Any) -> Any:
        """Call ``method`` with positional ``args`` and an options map; return its result."""
        with self._lock:
            if self._conn is None:
                raise ClientError("the client is closed")
            msgid = next(self._ids) % 2**32
            self._write(_encode_call(self._protocol, msgid, method, args, options))
            while True:
                event = self._read_event()
                if isinstance(event, Response) and event.msgid == msgid:
                    if event.error is not None:
                        raise in_python(from_wire(event.error), method, args)
                    return event.result

    def notify(self, method: str, *args: Any) -> None:
        """Send a notification (no reply)."""
        with self._lock:
            self._write(self._protocol.send(Notification(method, list(args))))

    def poll(self, timeout: float = 0.0) -> list[tuple[str, list[Any]]]:
        """Read notifications that arrive within ``timeout`` seconds; return them."""
        got: list[tuple[str, list[Any]]] = []
        with self._lock:
            conn = self._conn
            if conn is None:
                raise ClientError("the client is closed")
            conn.settimeout(timeout if timeout > 0 else 0.000001)
            try:
                while True:
                    event = self._read_event(block=False)
                    if event is None:
                        break
            except (TimeoutError, BlockingIOError):
                pass
            finally:
                conn.settimeout(self.timeout)
        while not self.notifications.empty():
            got.append(self.notifications.get())
        return got

    def _write(self, data: bytes) -> None:
        try:
            self._conn.sendall(data)
        except OSError as exc:
            raise ConnectionLost(f"lost the connection to {self.url}: {exc}") from None

    def _read_event(self, block: bool = True) -> Any:
        while True:
            try:
                event = self._protocol.next_event()
            except ProtocolError as exc:  # the server sent something that is not msgpack-rpc
                raise ConnectionLost(f"{self.url} broke the protocol: {exc}") from None
            if event is not NEED_DATA:
                if isinstance(event, ConnectionClosed):
                    raise ConnectionLost(f"{self.url} closed the connection")
                if isinstance(event, Notification):
                    self._deliver(event)
                    if not block:
                        return event
                    continue
                return event
            try:
                data = self._conn.recv(256 * 1024)
            except TimeoutError:
                if block:
                    raise ClientError(f"no answer from {self.url} within {self.timeout} s") \
                        from None
                raise
            except OSError as exc:
                raise ConnectionLost(f"lost the connection to {self.url}: {exc}") from None
            self._protocol.receive_data(data)

    def _deliver(self, event: Notification) -> None:
        self.notifications.put((event.method, event.params))
        if self.on_notification is not None:
            self.on_notification(event.method, event.params)

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
        """Send the local graph under ``root`` (a `opgraph.Value`) as graph ``name``.

        Replaces any graph of that name; subscribers see a new version. Source locations
        recorded with ``opgraph.track_source()`` travel with the nodes.
        """
        return self.call("graph.publish", name, local_document(root))


class _SpawnURL:
    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)

    def __str__(self) -> str:
        return "stdio:" + " ".join(self.command)


class AsyncClient:
    """An asyncio client: ``client = await AsyncClient.connect(url)``; ``await client.call(...)``.

    Requests may be in flight together; replies are matched by msgid. Notifications go to
    ``on_notification`` and to `notifications()`, an async iterator.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 url: str, on_notification: NotificationHandler | None = None,
                 process: asyncio.subprocess.Process | None = None) -> None:
        self.url = url
        self.on_notification = on_notification
        self.server_info: dict[str, Any] = {}
        self._reader, self._writer, self._process = reader, writer, process
        self._protocol = _protocol()
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._queue: asyncio.Queue[tuple[str, list[Any]] | None] = asyncio.Queue()
        self._closed = False
        self._lost: BaseException | None = None  # why the connection ended, once it has
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(cls, url: str = DEFAULT_URL, *, token: str | None = None,
                      on_notification: NotificationHandler | None = None,
                      structured_errors: bool = True, initialize: bool = True) -> AsyncClient:
        """Connect to ``url`` and (by default) initialize, with ``token`` or ``$OPGRAPH_TOKEN``."""
        address = parse_url(url)
        try:
            if address.scheme == "tcp":
                reader, writer = await asyncio.open_connection(address.host, address.port)
            else:
                reader, writer = await asyncio.open_unix_connection(address.path)
        except OSError as exc:
            raise ClientError(f"cannot connect to {url}: {exc.strerror or exc}") from None
        client = cls(reader, writer, url, on_notification)
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
        """Start ``opgraph serve --stdio`` and talk to it over its pipes."""
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
        self.server_info = await self.call("initialize", options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (and stop a spawned server)."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        if self._process is not None:
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()

    async def call(self, method: str, *args: Any, **options: Any) -> Any:
        """Call ``method``; return its result or raise its typed `ServerError`."""
        if self._closed:
            raise ClientError("the client is closed")
        if self._lost is not None:  # no reply could ever come: fail now rather than hang
            raise ConnectionLost(str(self._lost))
        msgid = next(self._ids) % 2**32
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[msgid] = future
        try:
            self._writer.write(_encode_call(self._protocol, msgid, method, args, options))
            try:
                await self._writer.drain()
            except OSError as exc:
                raise ConnectionLost(f"lost the connection to {self.url}: {exc}") from None
            try:
                return await future
            except ServerError as exc:
                worded = in_python(exc, method, args)
                if worded is exc:
                    raise
                raise worded from None
        finally:
            self._waiting.pop(msgid, None)

    async def notify(self, method: str, *args: Any) -> None:
        """Send a notification (no reply)."""
        if self._closed:
            raise ClientError("the client is closed")
        self._writer.write(self._protocol.send(Notification(method, list(args))))
        try:
            await self._writer.drain()
        except OSError as exc:
            raise ConnectionLost(f"lost the connection to {self.url}: {exc}") from None

    async def notifications(self) -> AsyncIterator[tuple[str, list[Any]]]:
        """Server notifications as ``(method, params)``, until the connection closes."""
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def _read_loop(self) -> None:
        error: BaseException = ConnectionLost(f"{self.url} closed the connection")
        try:
            while True:
                data = await self._reader.read(256 * 1024)
                self._protocol.receive_data(data)
                for event in self._protocol.events():
                    if isinstance(event, ConnectionClosed):
                        return
                    if isinstance(event, Response):
                        future = self._waiting.get(event.msgid)
                        if future is not None and not future.done():
                            if event.error is not None:
                                future.set_exception(from_wire(event.error))
                            else:
                                future.set_result(event.result)
                    elif isinstance(event, Notification):
                        self._queue.put_nowait((event.method, event.params))
                        if self.on_notification is not None:
                            self.on_notification(event.method, event.params)
        except asyncio.CancelledError:
            error = ClientError("the client is closed")
            raise
        except Exception as exc:
            error = ConnectionLost(f"lost the connection to {self.url}: {exc}")
        finally:
            self._lost = error
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(error)
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
        """Send the local graph under ``root`` as graph ``name`` (see `Client.publish`)."""
        return await self.call("graph.publish", name, local_document(root))
