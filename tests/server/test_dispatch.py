"""Dispatch on its own: handlers run against a small host (no server, no socket), the checks
before a handler, and which methods are plain (answered without a coroutine)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from opgraph_server.dispatch import METHODS, Call, Host, Peer, check, translate
from opgraph_server.errors import RpcError
from opgraph_server.limits import Limits
from opgraph_server.store import Entry, Store

import opgraph
from opgraph.errors import ExpressionError, NodeNotFoundError
from opgraph.graph import Graph


class FakePeer:
    def __init__(self) -> None:
        self.initialized = False
        self.structured_errors = False
        self.neovim = False
        self.client: Any = None
        self.subscriptions: set[str] = set()
        self.closing = False


class FakeHost:
    """Only what `Host` names: a store, limits, and a record of what handlers asked for."""

    def __init__(self, token: str | None = None) -> None:
        self.limits = Limits()
        self.store = Store(self.limits.max_graphs, self.limits.max_nodes)
        self.graphs = self.store.graphs
        self.token = token
        self.instance = "fake"
        self.stopping = False
        self.layouts = asyncio.Semaphore(1)
        self.durable = None  # (graphs in memory only)
        self.changes: list[str] = []
        self.subscribed: list[tuple[Any, str]] = []

    def check_token(self, token: Any) -> bool:
        return token == self.token

    def run_read(self, func: Any, *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(None, func, *args)

    run_change = run_read

    def frozen(self, func: Any, *args: Any) -> Any:
        return func(*args)

    def changed(self, entry: Entry) -> None:
        self.changes.append(entry.name)

    def add_graph(self, graph: Graph) -> Entry:
        return self.store.add(graph)

    def drop_graph(self, entry: Entry) -> None:
        self.store.drop(entry)

    async def replace_graph(self, entry: Entry, graph: Graph) -> None:
        await self.store.replace(entry, graph)
        self.changed(entry)

    def subscribe(self, peer: Peer, name: str) -> Entry | None:
        self.subscribed.append((peer, name))
        peer.subscriptions.add(name)
        return self.graphs.get(name)

    def unsubscribe(self, peer: Peer, name: str) -> bool:
        had = name in peer.subscriptions
        peer.subscriptions.discard(name)
        return had


def test_the_fake_host_is_a_host() -> None:
    """(The fake has every member `Host` declares, so the tests below use nothing more.)"""
    declared = {name for name in dir(Host) if not name.startswith("_")}
    declared |= set(Host.__annotations__)
    assert declared <= set(dir(FakeHost())), declared - set(dir(FakeHost()))


def run(host: Host, peer: Peer, method: str, *params: Any) -> Any:
    async def go() -> Any:
        spec, args, options = check(host, peer, method, list(params))
        result = spec.handler(Call(host, peer, method), *args, **options)
        return await result if inspect.isawaitable(result) else result

    return asyncio.run(go())


def test_handlers_run_against_a_host_without_a_server() -> None:
    host, peer = FakeHost(), FakePeer()
    made = run(host, peer, "graph.create", "g")
    assert made == {"name": "g", "nodes": 0, "version": 0, "subscribers": 0}
    leaf = run(host, peer, "node.leaf", "g", 2.0, {"label": "x"})
    out = run(host, peer, "node.apply", "g", "tanh", [leaf["id"]])
    assert run(host, peer, "node.get", "g", out["id"])["nodes"][0]["inputs"] == [leaf["id"]]
    assert host.changes == ["g", "g"]
    assert run(host, peer, "graph.subscribe", "g") == {"graph": "g",
                                                       "version": out["version"]}
    assert host.subscribed == [(peer, "g")]
    run(host, peer, "graph.create", "g", {"replace": True})
    assert run(host, peer, "graph.info", "g")["nodes"] == 0
    assert run(host, peer, "graph.info", "g")["version"] == out["version"] + 1


def test_without_a_token_the_first_call_initializes() -> None:
    host, peer = FakeHost(), FakePeer()
    run(host, peer, "graph.list")
    assert peer.initialized


def test_with_a_token_nothing_but_initialize_goes_first() -> None:
    host, peer = FakeHost(token="t"), FakePeer()
    for name in ("graph.list", "no.such.method"):
        with pytest.raises(RpcError, match="unauthorized") as caught:
            check(host, peer, name, [])
        assert caught.value.name == "unauthorized"
    with pytest.raises(RpcError, match="missing or wrong token"):
        run(host, peer, "initialize", {"token": "wrong"})
    info = run(host, peer, "initialize", {"token": "t"})
    assert peer.initialized and info["methods"] == sorted(METHODS)
    with pytest.raises(RpcError, match=r"no method named 'graph\.lst'; did you mean 'graph\.list'"):
        check(host, peer, "graph.lst", [])


def test_subscriptions_are_plain_methods() -> None:
    """They never wait: the session answers them without making a coroutine."""
    for name in ("graph.subscribe", "graph.unsubscribe", "node.get", "graph.list"):
        assert METHODS[name].awaits is False, name


@pytest.mark.parametrize(("exc", "name"), [
    (NodeNotFoundError("no node 9"), "unknown_node"),
    (ExpressionError("bad", "1 +", 3), "bad_expression"),
    (opgraph.errors.ForwardError("f", op="log", node="n"), "op_failed"),
    (KeyError("x"), "internal_error"),
    (RpcError("graph_exists", "g"), "graph_exists"),
])
def test_translate(exc: BaseException, name: str) -> None:
    assert translate(exc).name == name


def test_the_view_cache_keeps_one_version_within_its_bounds() -> None:
    from opgraph_server.store import ViewCache

    cache = ViewCache(max_items=2, max_bytes=10, max_answer=6)
    cache.put((1, 5), "a", b"aaaa")
    assert cache.get((1, 5), "a") == b"aaaa" and cache.get((2, 5), "a") is None
    cache.put((1, 5), "big", b"x" * 7)  # over max_answer: not kept
    assert cache.get((1, 5), "big") is None
    cache.put((1, 5), "b", b"bbbb")
    cache.put((1, 5), "c", b"cccc")  # three: the oldest goes (and 12 bytes > 10)
    assert cache.get((1, 5), "a") is None and len(cache) == 2
    cache.put((2, 6), "d", b"d")  # a new version: the old answers go
    assert len(cache) == 1 and cache.get((1, 5), "c") is None
