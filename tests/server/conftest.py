"""Fixtures: a real server on a free loopback port and a temporary Unix socket, stopped after."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opgraph_server.limits import Limits
from server_harness import ThreadedServer


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    """A server with the demo graph, default limits, on TCP and a Unix socket."""
    srv = ThreadedServer()
    yield srv
    srv.stop()


@pytest.fixture
def make_server() -> Iterator[Callable[..., ThreadedServer]]:
    """``make_server(limits=None, token=None, demo=True, **limit_fields)``: more servers."""
    made: list[ThreadedServer] = []

    def make(limits: Limits | None = None, *, token: str | None = None, demo: bool = True,
             **fields: object) -> ThreadedServer:
        srv = ThreadedServer(limits or Limits(**fields), token=token, demo=demo)  # type: ignore[arg-type]
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.stop()


@pytest.fixture(params=["tcp", "unix"])
def url(request: pytest.FixtureRequest, server: ThreadedServer) -> str:
    """The server's address, once over TCP and once over its Unix socket."""
    return server.tcp if request.param == "tcp" else server.unix
