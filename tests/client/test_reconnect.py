"""Reconnecting: a client whose server went away (``kill -9``) and came back on the same address
and data connects again by itself, initializes again with its token, subscribes again, and says
so with a ``client.reconnected`` event; a change in flight when the server died is not sent
again (`ConnectionLost`, ``in_doubt``), a read is; with no server, calls fail within the limits.

The servers are real ``opgraph serve --data`` processes. A request is made to be "in flight"
for certain by stopping the server (SIGSTOP) and waiting until the request's bytes sit unread
in the server's socket (``/proc/net/tcp``), then killing it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opgraph_client import AsyncClient, Client, ClientError, ConnectionLost
from opgraph_client.client import RECONNECTED, RETRIED_METHODS
from opgraph_server.dispatch import METHODS
from server_harness import TIMEOUT, ProcessServer, ThreadedServer, short_socket_dir, wait_until

TOKEN = "reconnect-test-token"

CHANGES = {
    "graph.create", "graph.drop", "graph.import", "graph.publish", "graph.publish_values",
    "node.leaf", "node.apply", "node.set", "graph.batch", "graph.eval", "graph.backward",
    "graph.grads", "shutdown",
}
"""Methods a client must not send twice (``graph.eval`` only with ``keep=False`` is a read)."""


# --- servers ----------------------------------------------------------------------------------


class Durable:
    """``opgraph serve --data store --token TOKEN`` on a TCP port and a Unix socket that stay
    the same across `kill` and `start`."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.dir = short_socket_dir()
        self.server: ProcessServer | None = None
        self.listen = ("tcp://127.0.0.1:0", f"unix://{self.dir}/s.sock")
        self.start()
        self.listen = tuple(self.urls)  # (the port the first server got, from now on)

    @property
    def urls(self) -> list[str]:
        assert self.server is not None
        return self.server.urls

    @property
    def tcp(self) -> str:
        return self.urls[0]

    @property
    def unix(self) -> str:
        return self.urls[1]

    @property
    def port(self) -> int:
        return int(self.tcp.rsplit(":", 1)[1])

    def start(self) -> None:
        self.server = ProcessServer("--no-demo", "--data", str(self.store), "--token", TOKEN,
                                    listen=self.listen)

    def kill(self) -> None:
        """SIGKILL, as a crash; the process is gone when this returns."""
        assert self.server is not None
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait(TIMEOUT)
        self.server.stop()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, and what is sent to the server stays unread."""
        assert self.server is not None
        self.server.process.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        if self.server is not None and self.server.process.poll() is None:
            self.kill()


@pytest.fixture
def durable(tmp_path: Path) -> Any:
    server = Durable(tmp_path / "graphs.sqlite3")
    yield server
    server.stop()


def unread_bytes(port: int) -> int:
    """Bytes received by the server's TCP sockets on ``port`` and not read by it yet."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, state, queues = fields[1], fields[3], fields[4]
                if int(local.rsplit(":", 1)[1], 16) == port and state == "01":
                    total += int(queues.split(":")[1], 16)
    return total


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"),
                                reason="needs Linux's /proc/net/tcp to see a request in flight")


def events(got: list[tuple[str, list[Any]]], method: str) -> list[dict[str, Any]]:
    return [params[0] for name, params in got if name == method]


def within(func: Any) -> Any:
    """``func()``, run in a thread that must end within TIMEOUT (a deadlock fails, not hangs)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = func()
        except BaseException as exc:  # (raised again below, in the test's thread)
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the call hung"
    if "error" in out:
        raise out["error"]
    return out["value"]


def poll_until(client: Client, method: str, graph: str) -> list[tuple[str, list[Any]]]:
    """Poll ``client`` until a ``method`` notification about ``graph`` arrives; all polled."""
    got: list[tuple[str, list[Any]]] = []
    deadline = time.monotonic() + TIMEOUT
    while not any(p.get("graph") == graph for p in events(got, method)):
        assert time.monotonic() < deadline, f"no {method} for {graph!r}; got {got}"
        got += client.poll(0.05)
    return got


# --- the blocking client ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_after_a_restart_calls_work_and_subscriptions_are_renewed(durable: Durable,
                                                                  transport: str) -> None:
    url = durable.tcp if transport == "tcp" else durable.unix
    heard: list[tuple[str, list[Any]]] = []
    redrawn: list[int] = []

    def redraw(method: str, params: list[Any]) -> None:
        heard.append((method, params))
        if method == RECONNECTED:  # a UI fetches what it shows again: it may call the client
            redrawn.append(c.graph("g").info()["nodes"])

    with Client(url, token=TOKEN, on_notification=redraw) as c, \
            Client(durable.tcp, token=TOKEN) as other:
        g = c.create_graph("g")
        first = g.leaf(1.0)
        c.create_graph("h")
        c.create_graph("d")
        g.subscribe()
        c.graph("h").subscribe()
        c.graph("h").unsubscribe()       # not to be renewed
        c.graph("d").subscribe()
        other.graph("d").drop()           # graph.dropped ends that subscription
        other.graph("g").subscribe()
        poll_until(c, "graph.dropped", "d")
        instance = c.server_info["instance"]

        durable.kill()
        durable.start()

        second = within(lambda: g.leaf(2.0))  # a change: sent on the new connection, once
        assert second["id"] == first["id"] + 1 and second["version"] > first["version"]
        assert c.reconnects == 1 and redrawn == [2]
        assert c.server_info["instance"] != instance
        info = g.info()
        assert info["nodes"] == 2
        assert info["subscribers"] == 1   # this client's, renewed; `other` has not called yet
        assert c.graph("h").info()["subscribers"] == 0
        got = other.poll()                # `other` reconnects in poll, and renews its own
        [event] = events(got, RECONNECTED)
        assert event["restarted"] and event["subscriptions"] == {"g": info["version"]}
        assert g.info()["subscribers"] == 2

        [event] = [p[0] for m, p in heard if m == RECONNECTED]   # told by callback
        assert event == {"instance": c.server_info["instance"], "previous": instance,
                         "restarted": True, "subscriptions": {"g": first["version"]},
                         "failed": {}}
        assert (RECONNECTED, [event]) in c.poll()  # and put in `notifications`


@needs_proc
def test_a_change_in_flight_raises_and_is_not_sent_again(durable: Durable) -> None:
    with Client(durable.tcp, token=TOKEN) as c:
        g = c.create_graph("g")
        g.leaf(1.0)
        outcome: dict[str, Any] = {}

        def change() -> None:
            try:
                outcome["result"] = g.leaf(5.0)
            except ConnectionLost as exc:
                outcome["error"] = exc

        durable.pause()
        thread = threading.Thread(target=change)
        thread.start()
        wait_until(lambda: unread_bytes(durable.port) > 0, what="the request at the server")
        durable.kill()
        thread.join(TIMEOUT)
        error = outcome["error"]
        assert error.in_doubt
        assert "node.leaf" in str(error) and "may or may not have applied" in str(error)

        durable.start()
        assert g.info()["nodes"] == 1     # the client did not send it again
        assert g.leaf(6.0)["id"] == 1     # and the next change goes through
        assert c.reconnects == 1


@needs_proc
def test_a_read_in_flight_is_sent_again_once_reconnected(durable: Durable) -> None:
    with Client(durable.tcp, token=TOKEN) as c:
        g = c.create_graph("g")
        g.leaf(1.0)
        outcome: dict[str, Any] = {}
        durable.pause()
        thread = threading.Thread(target=lambda: outcome.update(info=g.info()))
        thread.start()
        wait_until(lambda: unread_bytes(durable.port) > 0, what="the request at the server")
        durable.kill()
        durable.start()
        thread.join(TIMEOUT)
        assert outcome["info"]["nodes"] == 1
        assert c.reconnects == 1


def test_with_no_server_calls_fail_within_the_limits(durable: Durable) -> None:
    with Client(durable.tcp, token=TOKEN, reconnect_timeout=1.0) as by_time, \
            Client(durable.unix, token=TOKEN, reconnect_attempts=2,
                   reconnect_timeout=TIMEOUT) as by_count:
        durable.kill()
        for client, limit in ((by_time, "within 1 s"), (by_count, "at most 2 ")):
            for _ in range(2):  # and each next call tries again, as limited
                began = time.monotonic()
                with pytest.raises(ConnectionLost) as caught:
                    client.call("graph.list")
                assert time.monotonic() - began < TIMEOUT  # (a hang guard, not a timing)
                message = str(caught.value)
                assert "connecting again failed" in message and limit in message
                assert "cannot connect" in message and not caught.value.in_doubt
        assert "2 attempts in" in message
        durable.start()
        assert by_time.call("graph.list") == [] and by_count.call("graph.list") == []


def test_a_refused_initialize_is_said_and_not_tried_again(durable: Durable) -> None:
    with Client(durable.tcp, token=TOKEN) as c:
        durable.kill()
        durable.server = ProcessServer("--no-demo", "--data", str(durable.store), "--token",
                                       "another", listen=durable.listen)
        with pytest.raises(ConnectionLost, match="initialize failed: unauthorized"):
            c.call("graph.list")


def test_no_reconnecting_when_turned_off_after_shutdown_or_a_broken_protocol() -> None:
    server = ThreadedServer()
    try:
        with Client(server.tcp, reconnect=False) as off, Client(server.tcp) as done:
            done.call("shutdown")  # the server closes this session: the client stays away
            with pytest.raises(ConnectionLost, match="shut down"):
                done.call("graph.list")
            server.stop()
            with pytest.raises(ConnectionLost, match="closed the connection"):
                off.call("graph.list")
            with pytest.raises(ConnectionLost, match="does not reconnect"):
                off.call("graph.list")
    finally:
        server.stop()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def garble() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"\xc1\xc1")  # not MessagePack

    thread = threading.Thread(target=garble, daemon=True)
    thread.start()
    try:
        with Client(f"tcp://127.0.0.1:{port}", initialize=False, timeout=TIMEOUT) as c:
            with pytest.raises(ConnectionLost, match="broke the protocol"):
                c.call("graph.list")
            with pytest.raises(ConnectionLost, match="make a new client"):
                c.call("graph.list")
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.accept()  # (the client did not connect again)
    finally:
        thread.join(TIMEOUT)
        listener.close()


def test_retried_methods_change_nothing_and_every_method_is_classified() -> None:
    assert set(METHODS) - RETRIED_METHODS - CHANGES == set(), "a method to classify"
    assert set(METHODS) >= RETRIED_METHODS
    assert not RETRIED_METHODS & CHANGES
    server = ThreadedServer()
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("initialize", ({},), {}), ("ops.list", (), {}), ("graph.list", (), {}),
        ("graph.info", ("demo",), {}), ("graph.export", ("demo",), {}),
        ("node.get", ("demo", [0, 9]), {}), ("graph.nodes", ("demo",), {}),
        ("graph.gradcheck", ("demo", 9), {}), ("graph.analyze", ("demo",), {}),
        ("graph.diagnostics", ("demo",), {}), ("graph.aggregate", ("demo",), {}),
        ("graph.render", ("demo",), {"format": "dot"}), ("graph.subscribe", ("demo",), {}),
        ("graph.unsubscribe", ("demo",), {}),
        ("graph.eval", ("demo", "o * 2", {}), {"keep": False}),
    ]
    assert {method for method, _, _ in calls} == RETRIED_METHODS | {"graph.eval"}
    try:
        with Client(server.tcp) as c:
            before = c.call("graph.export", "demo"), c.call("graph.list")
            for method, args, options in calls:
                c.call(method, *args, **options)
            assert (c.call("graph.export", "demo"), c.call("graph.list")) == before
    finally:
        server.stop()


def test_reconnect_options_are_checked() -> None:
    for bad in ({"reconnect_attempts": 0}, {"reconnect_timeout": 0}, {"reconnect_attempts": 1.5}):
        with pytest.raises(ValueError, match="reconnect_"):
            Client("tcp://127.0.0.1:1", **bad)  # (before connecting)


# --- the asyncio client ------------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 6 * TIMEOUT))


async def next_event(stream: Any, method: str) -> dict[str, Any]:
    """The payload of the next ``method`` notification from a `notifications()` iterator."""
    while True:
        name, params = await asyncio.wait_for(anext(stream), TIMEOUT)
        if name == method:
            return params[0]


def test_async_client_reconnects_by_itself_and_renews_subscriptions(durable: Durable) -> None:
    async def scenario() -> None:
        async with await AsyncClient.connect(durable.unix, token=TOKEN) as c:
            g = await c.create_graph("g")
            await g.leaf(1.0)
            await g.subscribe()
            version = (await g.info())["version"]
            instance = c.server_info["instance"]
            stream = c.notifications()
            await asyncio.to_thread(durable.kill)
            await asyncio.to_thread(durable.start)
            event = await next_event(stream, RECONNECTED)  # before any call: the loop's own
            assert event["previous"] == instance and event["restarted"]
            assert event["instance"] == c.server_info["instance"] != instance
            assert event["subscriptions"] == {"g": version}
            with Client(durable.tcp, token=TOKEN) as other:
                await asyncio.to_thread(other.graph("g").leaf, 2.0)
            changed = await next_event(stream, "graph.changed")
            assert changed["graph"] == "g" and changed["nodes"] == 2
            assert (await g.info())["subscribers"] == 1
            assert c.reconnects == 1

    run(scenario())


@needs_proc
def test_async_change_in_flight_raises_and_a_read_is_sent_again(durable: Durable) -> None:
    async def scenario() -> None:
        async with await AsyncClient.connect(durable.tcp, token=TOKEN) as c:
            g = await c.create_graph("g")
            await g.leaf(1.0)
            durable.pause()
            change = asyncio.ensure_future(g.leaf(5.0))
            read = asyncio.ensure_future(g.info())
            await asyncio.sleep(0)  # (both are written now, on the stopped server's socket)
            await asyncio.to_thread(wait_until, lambda: unread_bytes(durable.port) > 0)
            await asyncio.to_thread(durable.kill)
            with pytest.raises(ConnectionLost) as caught:
                await change
            assert caught.value.in_doubt and "node.leaf" in str(caught.value)
            await asyncio.to_thread(durable.start)
            assert (await read)["nodes"] == 1  # sent again; and the change was not
            assert (await g.leaf(6.0))["id"] == 1

    run(scenario())


def test_async_client_with_no_server_fails_within_the_limits(durable: Durable) -> None:
    async def scenario() -> None:
        async with await AsyncClient.connect(durable.tcp, token=TOKEN,
                                             reconnect_timeout=1.0) as c:
            stream = c.notifications()
            await asyncio.to_thread(durable.kill)
            with pytest.raises(StopAsyncIteration):  # the notifications end: no server
                await asyncio.wait_for(anext(stream), TIMEOUT)
            with pytest.raises(ConnectionLost, match=r"connecting again failed.*within 1 s"):
                await c.call("graph.list")
            await asyncio.to_thread(durable.start)
            assert await c.call("graph.list") == []  # a later call tries again
            assert c.reconnects == 1
        with pytest.raises(ClientError, match="closed"):
            await c.call("graph.list")

    run(scenario())
