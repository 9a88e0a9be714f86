"""Fixtures: a real server (in-process, on TCP and a Unix socket) for the client tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The server harness lives with the server tests; share it rather than copy it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from server_harness import ThreadedServer


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    """A server with the demo graph, default limits, on TCP and a Unix socket."""
    srv = ThreadedServer()
    yield srv
    srv.stop()


@pytest.fixture(params=["tcp", "unix"])
def url(request: pytest.FixtureRequest, server: ThreadedServer) -> str:
    """The server's address, once over TCP and once over its Unix socket."""
    return server.tcp if request.param == "tcp" else server.unix
