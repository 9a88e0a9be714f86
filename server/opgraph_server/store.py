"""Named graphs shared by every client, each with a readers-writer lock and its subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from opgraph.graph import Graph


class ReadWriteLock:
    """An asyncio readers-writer lock that lets a waiting writer go before new readers.

    Reads (queries, analyses, pictures) run side by side, possibly in worker threads; a
    mutation waits for them and runs alone, so results always describe one version.
    """

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        """Hold the lock for reading."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            async with self._changed:
                self._readers -= 1
                self._changed.notify_all()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        """Hold the lock alone."""
        async with self._changed:
            self._writers_waiting += 1
            try:
                await self._changed.wait_for(lambda: not self._writer and not self._readers)
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            async with self._changed:
                self._writer = False
                self._changed.notify_all()


@dataclass(eq=False)
class Entry:
    """One named graph on the server."""

    graph: Graph
    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    subscribers: set[Any] = field(default_factory=set)
    dropped: bool = False

    @property
    def name(self) -> str:
        """The graph's name."""
        return self.graph.name
