"""Named graphs shared by every client, each with a readers-writer lock and its subscribers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from opgraph.graph import Graph


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


@dataclass(eq=False)
class Entry:
    """One named graph on the server."""

    graph: Graph
    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    subscribers: set[Any] = field(default_factory=set)
    dropped: bool = False
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
