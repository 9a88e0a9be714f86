"""`AsyncClient` against a real server: concurrent calls, typed errors, notifications."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from opgraph_client import (
    AsyncClient,
    ClientError,
    ConnectionLost,
    GraphExistsError,
    UnauthorizedError,
    UnknownGraphError,
    UnknownNodeError,
)
from server_harness import SEED, SEED_GRADS, SEED_O, TIMEOUT, ThreadedServer, opgraph_command

import opgraph
from opgraph import Value

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    """Run ``coro`` to the end, or fail after TIMEOUT seconds rather than hang."""
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))  # type: ignore[arg-type]


def test_neuron_with_concurrent_calls(url: str) -> None:
    async def scenario() -> dict[str, float]:
        async with await AsyncClient.connect(url) as c:
            assert c.server_info["name"] == "opgraph"
            g = c.graph("aneuron")
            await g.create()
            # Five leaves in flight at once; replies are matched by msgid.
            made = await asyncio.gather(*(g.leaf(v, k) for k, v in SEED.items()))
            ids = {k: m["id"] for k, m in zip(SEED, made, strict=True)}
            result = await g.eval("tanh(x1*w1 + x2*w2 + b)",
                                  **{k: {"id": i} for k, i in ids.items()})
            assert result["data"] == pytest.approx(SEED_O)
            await g.backward(result["root"])
            records = await asyncio.gather(*(g.get(i) for i in ids.values()))
            return {r["nodes"][0]["label"]: r["nodes"][0]["grad"] for r in records}

    assert run(scenario()) == pytest.approx(SEED_GRADS)


def test_many_calls_in_flight_with_errors_mixed_in(server: ThreadedServer) -> None:
    async def scenario() -> list[Any]:
        async with await AsyncClient.connect(server.tcp) as c:
            calls = []
            for i in range(300):
                if i % 3 == 0:
                    calls.append(c.call("node.get", "demo", 99))
                else:
                    calls.append(c.call("node.get", "demo", i % 10))
            return await asyncio.gather(*calls, return_exceptions=True)

    results = run(scenario())
    for i, result in enumerate(results):
        if i % 3 == 0:
            assert isinstance(result, UnknownNodeError)
        else:
            assert result["nodes"][0]["id"] == i % 10


def test_notifications_iterator_and_callback(server: ThreadedServer) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        heard: list[str] = []
        async with await AsyncClient.connect(server.tcp) as writer, \
                await AsyncClient.connect(server.unix,
                                          on_notification=lambda m, p: heard.append(m)) as reader:
            await reader.graph("demo").subscribe()
            made = await writer.graph("demo").leaf(5.0)
            seen = []
            async for method, params in reader.notifications():
                seen.append(method)
                assert params[0]["graph"] == "demo"
                if method == "graph.diagnostics" and params[0]["version"] >= made["version"]:
                    break
            return seen, heard

    seen, heard = run(scenario())
    assert seen[0] == "graph.changed" and seen[-1] == "graph.diagnostics"
    assert heard[: len(seen)] == seen


def test_notifications_end_when_the_connection_closes(server: ThreadedServer) -> None:
    async def scenario() -> list[Any]:
        c = await AsyncClient.connect(server.tcp)
        await c.call("shutdown")  # the server answers, then closes
        got = [item async for item in c.notifications()]
        await c.close()
        return got

    assert run(scenario()) == []


def test_calls_after_the_server_went_away_fail(server: ThreadedServer) -> None:
    async def scenario() -> None:
        c = await AsyncClient.connect(server.tcp, reconnect=False)  # (see test_reconnect.py)
        assert await c.call("graph.list")
        await asyncio.to_thread(server.stop)
        with pytest.raises(ConnectionLost):
            await c.call("graph.list")
        with pytest.raises(ConnectionLost):
            await c.call("graph.info", "demo")
        await c.close()
        with pytest.raises(ClientError, match="closed"):
            await c.call("graph.list")

    run(scenario())


def test_pending_call_fails_when_the_connection_drops() -> None:
    async def scenario() -> None:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)  # a request has started to arrive: hang up without answering
            writer.close()

        listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            c = await AsyncClient.connect(f"tcp://127.0.0.1:{port}", initialize=False)
            with pytest.raises(ConnectionLost):
                await c.call("graph.list")
            await c.close()
            with pytest.raises(ClientError, match="cannot connect"):
                await AsyncClient.connect("unix:///nonexistent/dir/x.sock")
        finally:
            listener.close()
            await listener.wait_closed()

    run(scenario())


def test_async_typed_errors_and_publish(server: ThreadedServer) -> None:
    with opgraph.track_source():
        x = Value(0.5, label="x")
        y = x.sigmoid() * 2

    async def scenario() -> dict[str, Any]:
        async with await AsyncClient.connect(server.unix, structured_errors=False) as c:
            with pytest.raises(UnknownGraphError) as err:
                await c.call("graph.info", "nope")
            assert err.value.message == "no graph named 'nope'"
            published = await c.publish("async-local", y)
            assert published["nodes"] == 4
            return await c.call("graph.nodes", "async-local")

    nodes = run(scenario())["nodes"]
    assert nodes[-1]["data"] == pytest.approx(y.data)
    assert nodes[0]["label"] == "x" and nodes[0]["source"][0] == __file__


def test_a_refused_initialize_leaves_nothing_open() -> None:
    guarded = ThreadedServer(token="right")

    async def scenario() -> None:
        with pytest.raises(UnauthorizedError):
            await AsyncClient.connect(guarded.unix, token="wrong")
        with pytest.raises(UnauthorizedError):
            await AsyncClient.spawn(opgraph_command("serve", "--stdio", "--token", "right"),
                                    token="wrong")

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            run(scenario())
            gc.collect()
    finally:
        guarded.stop()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_async_create_graph_and_its_hint_in_python(server: ThreadedServer) -> None:
    async def scenario() -> None:
        async with await AsyncClient.connect(server.tcp) as c:
            g = await c.create_graph("amine")
            assert (await g.leaf(1.5, "x"))["id"] == 0
            with pytest.raises(GraphExistsError) as err:
                await c.create_graph("amine")
            assert str(err.value) == ("graph_exists: a graph named 'amine' exists; to replace "
                                      "it, call await create_graph('amine', replace=True)")
            with pytest.raises(GraphExistsError,
                               match=r"call await graph\('amine'\)\.create\(replace=True\)$"):
                await g.create()
            with pytest.raises(GraphExistsError,
                               match=r"call call\('graph\.create', 'amine', replace=True\)$"):
                await c.call("graph.create", "amine")
            with pytest.raises(UnknownGraphError):  # other errors pass through as they are
                await c.call("graph.info", "nope")
            assert (await (await c.create_graph("amine", replace=True)).info())["nodes"] == 0

    run(scenario())


def test_async_notify_and_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    guarded = ThreadedServer(token="right", unix=False)
    monkeypatch.setenv("OPGRAPH_TOKEN", "right")

    async def scenario() -> list[str]:
        async with await AsyncClient.connect(guarded.tcp) as c:
            await c.notify("graph.create", "by-notification")  # notifications are ignored
            return [g["name"] for g in await c.call("graph.list")]

    try:
        assert run(scenario()) == ["demo"]
    finally:
        guarded.stop()
