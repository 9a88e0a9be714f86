"""The asyncio server: the named graphs, the worker threads, the listeners (TCP, Unix socket,
stdio, and HTTP for the web viewer through `opgraph_server.http`), and `serve`.

Each connection is a `opgraph_server.connection.Session`: its requests are dispatched in the
order they arrive, each answered or failed on its own; a framing error closes only that
connection; nothing a client sends stops the server. The `Server` is the host the method
handlers see (`opgraph_server.dispatch.Host`).
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
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import opgraph_server.methods  # noqa: F401  (registers every method)
from opgraph.gcpolicy import gc_paused
from opgraph.graph import Graph
from opgraph_server.address import DEFAULT_URL, Address, parse_url
from opgraph_server.connection import (
    LOOPBACK,
    READ_CHUNK,
    Session,
    WatchedProtocol,
)
from opgraph_server.dispatch import Peer
from opgraph_server.durable import Durable
from opgraph_server.errors import RpcError
from opgraph_server.limits import Limits
from opgraph_server.store import Entry, Store

log = logging.getLogger("opgraph.server")

def frozen(func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` with the cyclic garbage collector paused, then what survived frozen.

    An analysis of a big graph allocates millions of objects (the cached networkx graph among
    them) and makes no cycles; a big batch makes a million long-lived nodes. Collections during
    such work, or one over everything it allocated right after it, would hold the GIL for a
    second or more and stall every client; frozen objects are skipped by later collections (and
    still freed by reference counting). `thaw` gives them back to the collector.
    """
    with gc_paused():
        try:
            return func(*args)
        finally:
            gc.freeze()


def thaw() -> None:
    """Give every frozen object back to the collector: a graph was dropped or replaced, and
    its objects are freed by reference counting, the cycles frozen with them collected."""
    gc.unfreeze()


class Server:
    """Named graphs shared by all clients, served over any number of listeners.

    The host of the method handlers (`opgraph_server.dispatch.Host`): they reach the graphs,
    the worker threads and the subscriptions through it. This class owns when objects are
    frozen out of the collector's reach and when they are given back (`frozen`, `thaw`).
    """

    def __init__(self, limits: Limits | None = None, token: str | None = None,
                 durable: Durable | None = None) -> None:
        self.limits = limits or Limits()
        self.token = token
        self.durable = durable
        """Where changes are committed before they are answered (None: in memory only)."""
        self.store = Store(self.limits.max_graphs, self.limits.max_nodes)
        self.graphs: dict[str, Entry] = self.store.graphs
        """The graphs by name (the store's own dict: change it through the methods here)."""
        self.instance = uuid.uuid4().hex
        """This server's id, new each time a server starts: versions of graphs are comparable
        only between answers of the same instance (a restarted server counts from 0 again)."""
        self.sessions: set[Session] = set()
        self.addresses: list[str] = []
        self._servers: list[asyncio.base_events.Server] = []
        self._unix_paths: list[str] = []
        self._pending: set[Entry] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._change_pool: ThreadPoolExecutor | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._running: set[Future[Any]] = set()
        self.stopping = False
        """Set once `close` begins: requests in flight are cancelled, new ones refused."""
        self.layouts = asyncio.Semaphore(max(2, os.cpu_count() or 2))
        """``dot`` processes running at once (more wait their turn, within their time)."""

    def change_pool(self) -> ThreadPoolExecutor:
        """The worker threads for big changes (`Call.change`), apart from the pool where
        analyses and pictures run, so a change never queues behind them."""
        if self._change_pool is None:
            self._change_pool = ThreadPoolExecutor(max_workers=4,
                                                   thread_name_prefix="opgraph-change")
        return self._change_pool

    def read_pool(self) -> ThreadPoolExecutor:
        """The worker threads for long reads (`Call.in_thread`: analyses, pictures, ...)."""
        if self._read_pool is None:
            self._read_pool = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4),
                                                 thread_name_prefix="opgraph-read")
        return self._read_pool

    def submit(self, pool: ThreadPoolExecutor, func: Any, *args: Any) -> asyncio.Future[Any]:
        """``func(*args)`` in a thread of ``pool``, as an asyncio future. The thread is counted
        in `busy_threads` until it returns, even after its request stopped waiting for it."""
        future = pool.submit(func, *args)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        return asyncio.wrap_future(future)

    def run_read(self, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``func(*args)`` in a read thread (`read_pool`), as `frozen` runs it."""
        return self.submit(self.read_pool(), frozen, func, *args)

    def run_change(self, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``func(*args)`` in a change thread (`change_pool`), as `frozen` runs it."""
        return self.submit(self.change_pool(), frozen, func, *args)

    def frozen(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` in this thread, as the module's `frozen` runs it."""
        return frozen(func, *args)

    @property
    def busy_threads(self) -> int:
        """Worker threads still running a function (some perhaps for a request that has
        stopped waiting for them: over its time limit, cancelled)."""
        return sum(1 for f in list(self._running) if not f.done())

    # --- graphs -------------------------------------------------------------------------

    def add_graph(self, graph: Graph) -> Entry:
        """Share ``graph`` under its name (refused past the graph limit or on a clash).
        Sessions that subscribed to the name before are subscribers now, and told."""
        entry = self.store.add(graph)
        if self.durable is not None:
            self.durable.record(entry)
        if entry.subscribers:
            self.changed(entry)
        return entry

    def drop_graph(self, entry: Entry) -> None:
        """Remove a graph and tell its subscribers."""
        if self.durable is not None:
            self.durable.dropped(entry)
        for session in self.store.drop(entry):
            session.subscriptions.discard(entry.name)
            session.notify("graph.dropped", {"graph": entry.name})
        thaw()

    async def replace_graph(self, entry: Entry, graph: Graph) -> None:
        """Put ``graph`` in the place of ``entry``'s (under its write lock), as a new version;
        subscribers are told."""
        await self.store.replace(entry, graph)
        thaw()
        self.changed(entry)

    def subscribe(self, peer: Peer, name: str) -> Entry | None:
        """Subscribe ``peer`` (a `Session`) to graph ``name``, which need not exist yet (then
        None; the subscription starts when a graph of that name is created)."""
        if name not in self.graphs and name not in peer.subscriptions:
            waiting = sum(1 for n in peer.subscriptions if n not in self.graphs)
            if waiting >= self.limits.max_graphs:
                raise RpcError("limit_exceeded", f"graph.subscribe: this connection waits for "
                               f"{waiting} graphs not created yet, the limit (max_graphs)",
                               {"limit": "max_graphs", "max": self.limits.max_graphs})
        peer.subscriptions.add(name)
        return self.store.subscribe(name, peer)

    def unsubscribe(self, peer: Peer, name: str) -> bool:
        """End ``peer``'s subscription to graph ``name`` (or its wait for it); False when it
        had none."""
        peer.subscriptions.discard(name)
        return self.store.unsubscribe(name, peer)

    def changed(self, entry: Entry) -> None:
        """Note a change; subscribers are told once per loop turn, however many changes.
        With a store, the change is recorded to be committed before anything is answered."""
        if self.durable is not None:
            self.durable.record(entry)
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

    # --- transports ---------------------------------------------------------------------

    def forget(self, session: Session) -> None:
        """Drop a closed session from every subscription (and every wait for a graph)."""
        self.sessions.discard(session)
        if self.durable is not None:
            self.durable.forget(session)
        for name in session.subscriptions:
            self.store.unsubscribe(name, session)
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
        session.watch(writer.transport.get_protocol())
        self.sessions.add(session)
        # A connection's task is cancelled only when the server stops (Ctrl-C). End it quietly:
        # asyncio's stream callback calls task.exception() on it, which for a cancelled task
        # logs a traceback per connected client. (Session.run's finally has cleaned up.)
        with contextlib.suppress(asyncio.CancelledError):
            await session.run(reader)

    async def listen(self, url: str) -> str:
        """Start listening on ``url``; returns the actual address (a port 0 gets a real one)."""
        address = parse_url(url, listen=True)
        if address.scheme == "http":  # the web viewer: its page, and the protocol over a WebSocket
            from opgraph_server.http import listen_http

            srv, page = await listen_http(self, address)
            self._servers.append(srv)
            self.addresses.append(page)
            return page
        limit = 2 * READ_CHUNK
        loop = asyncio.get_running_loop()

        def factory() -> WatchedProtocol:  # as asyncio.start_server's, but watched
            return WatchedProtocol(asyncio.StreamReader(limit=limit, loop=loop),
                                    self._on_connect, loop=loop)

        if address.scheme == "tcp":
            if address.host not in LOOPBACK:
                log.warning("listening on %s, reachable from other machines; "
                            "consider --token", address)
            srv = await loop.create_server(factory, address.host, address.port)
            host, port = srv.sockets[0].getsockname()[:2]
            actual = str(Address("tcp", host=host, port=port))
        else:
            path = address.path
            _remove_stale_socket(path)
            old_umask = os.umask(0o177)  # the socket is created 0600: only this user connects
            try:
                srv = await loop.create_unix_server(factory, path)
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
        watched = WatchedProtocol(reader)
        watched.eof_is_gone = False
        await loop.connect_read_pipe(lambda: watched, sys.stdin)
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", buffering=0))
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        session = Session(self, writer, "stdio")
        session.watch(watched)
        self.sessions.add(session)
        await session.run(reader)

    async def close(self, grace: float = 2.0) -> None:
        """Stop listening, answer every request in flight with ``request_cancelled`` (waiting
        up to ``grace`` seconds for those answers to go out), then close every connection.

        Worker threads are not waited for: a change or an analysis in one runs on in the
        background (see `busy_threads`; `serve` exits the process without them).
        """
        self.stopping = True
        for srv in self._servers:
            srv.close()
        answering = [s.task for s in list(self.sessions)
                     if s.cancel("the server is shutting down") and s.task is not None]
        if answering:
            await asyncio.wait(answering, timeout=grace)
        if self.durable is not None:  # what was answered goes out once committed
            await self.durable.close()
            for session in list(self.sessions):
                session.flush()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(session.writer.drain(), 0.5)
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
        for pool in (self._change_pool, self._read_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._change_pool = self._read_pool = None


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
    data: str | os.PathLike[str] | None = None,
    quarantine: bool = False,
    max_store_bytes: int | None = None,
) -> None:
    """Run a server until cancelled (or, with ``stdio``, until stdin closes).

    ``ready`` is called with the list of addresses once listening. With ``data`` (an SQLite
    file, made if missing) the graphs are kept there: read at start, every change committed
    before it is answered (`opgraph_server.durable`); ``quarantine`` sets aside graphs the file
    holds that are not valid graphs, rather than refuse to start.
    """
    # Worker threads (analysis, pictures) hold the GIL in slices of this length; shorter
    # slices keep small requests answered quickly while a big analysis runs.
    sys.setswitchinterval(0.001)
    durable = None
    stored: list[Graph] = []
    if data is not None:
        from opgraph_server.durable import open_durable

        durable, stored = open_durable(data, quarantine=quarantine, max_bytes=max_store_bytes)
    server = Server(limits, token, durable)
    for graph in stored:
        durable.attach(server.store.add(graph))  # type: ignore[union-attr]
    if demo and not any(g.name == "demo" for g in stored):
        from opgraph_server.demo import neuron

        server.add_graph(neuron())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGHUP)
    for signum in signals:
        loop.add_signal_handler(signum, _stopping, loop, stop, signals)
    try:
        if stdio:
            if ready:
                ready(["stdio"])
            main: asyncio.Future[Any] = asyncio.ensure_future(server.serve_stdio())
        else:
            for url in urls:
                await server.listen(url)
            if ready:
                ready(list(server.addresses))
            main = asyncio.ensure_future(stop.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({main, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if main.done() and not main.cancelled():
                main.result()  # (an error serving stdio: raised here)
    finally:
        await server.close()  # in-flight requests answered; the socket file removed
        for signum in signals:
            loop.remove_signal_handler(signum)
        busy = server.busy_threads
        if busy:
            # Their work is for graphs that live only in memory: nothing is lost by not
            # waiting, and a process that waited could hang (asyncio and the interpreter
            # would join them on exit).
            log.warning("exiting with %d worker thread%s still running", busy,
                        "s" * (busy != 1))
            logging.shutdown()
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(0)


SHUTDOWN_DEADLINE = 5
"""Seconds after SIGTERM (or SIGHUP) by which the process is gone, whatever its threads do:
an alarm at the default action (termination) is set as the stop begins."""


def _stopping(loop: asyncio.AbstractEventLoop, stop: asyncio.Event,
              signals: tuple[signal.Signals, ...]) -> None:
    """Begin a clean stop. A second signal ends the process at once (the handlers go back to
    the default), and so does the alarm if the stop takes longer than SHUTDOWN_DEADLINE."""
    log.info("stopping: answering requests in flight, then exiting")
    stop.set()
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(SHUTDOWN_DEADLINE)
    for signum in signals:
        loop.remove_signal_handler(signum)
