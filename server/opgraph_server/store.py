"""Named graphs shared by every client, each with a readers-writer lock and its subscribers.

`Store` holds them by name and does what changes which graph a name stands for: add, drop,
replace. It knows nothing of sessions or notifications beyond keeping the subscribers' set:
the server tells them (`opgraph_server.server.Server`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from opgraph.graph import Graph
from opgraph_server.errors import RpcError


class ReadWriteLock:
    """An asyncio readers-writer lock that lets a waiting writer go before new readers.

    Reads (queries, analyses, pictures) run side by side, possibly in worker threads; a
    mutation waits for them and runs alone, so results always describe one version. Taking
    an uncontended lock costs no more than a few attribute updates.
    """

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._read_guard = _Guard(self.acquire_read, self.release_read)
        self._write_guard = _Guard(self.acquire_write, self.release_write)

    async def _wait(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        finally:
            if future in self._waiters:
                self._waiters.remove(future)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    @property
    def writing(self) -> bool:
        """Whether a writer holds the lock now (one that only waits has changed nothing yet)."""
        return self._writer

    def read(self) -> _Guard:
        """``async with lock.read():`` holds the lock for reading."""
        return self._read_guard

    def write(self) -> _Guard:
        """``async with lock.write():`` holds the lock alone."""
        return self._write_guard

    async def acquire_read(self) -> None:
        """Wait until no writer holds or waits for the lock, then count one more reader."""
        while self._writer or self._writers_waiting:
            await self._wait()
        self._readers += 1

    def release_read(self) -> None:
        """One reader fewer."""
        self._readers -= 1
        if not self._readers and self._waiters:
            self._wake()

    async def acquire_write(self) -> None:
        """Wait until nobody holds the lock, then hold it alone."""
        self._writers_waiting += 1
        try:
            while self._writer or self._readers:
                await self._wait()
        except BaseException:  # cancelled while waiting: let the readers held back go on
            self._writers_waiting -= 1
            self._wake()
            raise
        self._writers_waiting -= 1
        self._writer = True

    def release_write(self) -> None:
        """Let the others in."""
        self._writer = False
        if self._waiters:
            self._wake()


class _Guard:
    """The reusable ``async with`` object of one side of a `ReadWriteLock` (no allocation per
    use: the lock is taken on every request)."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire, release) -> None:
        self._acquire = acquire
        self._release = release

    async def __aenter__(self) -> None:
        await self._acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._release()


class ViewCache:
    """Answers computed from one version of a graph (summaries, drill-downs), each kept until
    the graph changes: asking again for the same view of the same version costs a lookup.

    At most ``max_items`` answers and ``max_bytes`` of them (their encoded size); the oldest go
    first, and an answer bigger than ``max_answer`` is not kept (one that lists a million node
    ids costs less to compute again than to hold). Reads and writes happen on the event loop
    only.
    """

    def __init__(self, max_items: int = 256, max_bytes: int = 4 * 1024 * 1024,
                 max_answer: int = 1024 * 1024) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_answer = max_answer
        self._version: tuple[int, int] | None = None
        self._answers: dict[Any, bytes] = {}
        self._bytes = 0

    def get(self, version: tuple[int, int], key: Any) -> bytes | None:
        """The answer kept for ``key`` at ``version`` (``(graph version, node count)``)."""
        if version != self._version:
            return None
        return self._answers.get(key)

    def put(self, version: tuple[int, int], key: Any, answer: bytes) -> None:
        """Keep ``answer`` (forgetting every answer of another version)."""
        if version != self._version:
            self._version = version
            self._answers.clear()
            self._bytes = 0
        if len(answer) > self.max_answer or key in self._answers:
            return
        self._answers[key] = answer
        self._bytes += len(answer)
        while len(self._answers) > self.max_items or self._bytes > self.max_bytes:
            oldest = next(iter(self._answers))
            self._bytes -= len(self._answers.pop(oldest))

    def __len__(self) -> int:
        return len(self._answers)


@dataclass(eq=False)
class Entry:
    """One named graph on the server."""

    graph: Graph
    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    subscribers: set[Any] = field(default_factory=set)
    dropped: bool = False
    views: ViewCache = field(default_factory=ViewCache)
    """Answers of views (`graph.aggregate`) of the graph's current version."""
    published: tuple[str, Graph, int] | None = None
    """The structure token the last `graph.publish` answered, with the graph object and node
    count it stands for: `graph.publish_values` is taken while the graph is still that one."""
    settled: tuple[int, int] | None = None
    """``(nodes, version)`` from before a change running in a worker thread, while it runs:
    what methods that take no lock report (the graph itself is half changed meanwhile)."""

    @property
    def name(self) -> str:
        """The graph's name."""
        return self.graph.name

    @property
    def size(self) -> int:
        """The graph's node count (from before a change running in a worker thread)."""
        return len(self.graph.nodes) if self.settled is None else self.settled[0]

    @property
    def version(self) -> int:
        """The graph's version (from before a change running in a worker thread)."""
        return self.graph.version if self.settled is None else self.settled[1]


class Store:
    """The named graphs of one server, within its limits on graphs and nodes, and the
    subscribers waiting for a graph that does not exist yet."""

    def __init__(self, max_graphs: int, max_nodes: int) -> None:
        self.graphs: dict[str, Entry] = {}
        self.max_graphs = max_graphs
        self.max_nodes = max_nodes
        self.waiting: dict[str, set[Any]] = {}
        """Subscribers by the name of a graph not created yet (they join it when it is)."""

    def add(self, graph: Graph) -> Entry:
        """Share ``graph`` under its name (refused past the graph limit or on a clash)."""
        if graph.name in self.graphs:
            raise RpcError("graph_exists", f"a graph named {graph.name!r} exists")
        if len(self.graphs) >= self.max_graphs:
            raise RpcError("limit_exceeded", f"the server holds {len(self.graphs)} graphs, "
                                             f"its limit")
        graph.max_nodes = self.max_nodes
        entry = Entry(graph)
        self.graphs[graph.name] = entry
        waiting = self.waiting.pop(graph.name, None)
        if waiting:
            entry.subscribers |= waiting
        return entry

    def subscribe(self, name: str, subscriber: Any) -> Entry | None:
        """Add ``subscriber`` to graph ``name``'s, or when there is no such graph yet, to those
        waiting for it; returns the graph's entry (None when it does not exist)."""
        entry = self.graphs.get(name)
        if entry is None:
            self.waiting.setdefault(name, set()).add(subscriber)
        else:
            entry.subscribers.add(subscriber)
        return entry

    def unsubscribe(self, name: str, subscriber: Any) -> bool:
        """Remove ``subscriber`` from graph ``name``'s (or from those waiting for it); False when
        it was in neither."""
        entry = self.graphs.get(name)
        if entry is not None and subscriber in entry.subscribers:
            entry.subscribers.discard(subscriber)
            return True
        waiting = self.waiting.get(name)
        if waiting is None or subscriber not in waiting:
            return False
        waiting.discard(subscriber)
        if not waiting:
            del self.waiting[name]
        return True

    def drop(self, entry: Entry) -> set[Any]:
        """Remove ``entry``; returns the subscribers it had (now none)."""
        self.graphs.pop(entry.name, None)
        entry.dropped = True
        subscribers = set(entry.subscribers)
        entry.subscribers.clear()
        return subscribers

    async def replace(self, entry: Entry, graph: Graph) -> None:
        """Put ``graph`` in ``entry``'s place under its write lock, named as it and with a
        version past the old graph's (clients that hold the old version see a change)."""
        async with entry.lock.write():
            graph.name = entry.name
            graph.max_nodes = self.max_nodes
            graph.version = max(graph.version, entry.graph.version + 1)
            entry.graph = graph
