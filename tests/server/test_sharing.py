"""Shared graphs: two clients on one graph, subscriptions and notifications (Neovim too)."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Any

import opgraph_server.methods.compute
import pytest
from opgraph_client import AsyncClient, Client, LimitExceededError
from server_harness import SEED_GRADS, TIMEOUT, Raw, ThreadedServer, wait_until

import opgraph
from opgraph import core

NVIM_HANDLER = "return require('opgraph').on_notify(...)"


_backlog: weakref.WeakKeyDictionary[Client, list[tuple[str, list[Any]]]] = \
    weakref.WeakKeyDictionary()


def next_notification(client: Client, method: str, graph: str,
                      min_version: int = 0) -> dict[str, Any]:
    """Poll ``client`` until ``method`` about ``graph`` at ``min_version`` or later arrives.

    Notifications polled but not yet asked for are kept for the next call.
    """
    backlog = _backlog.setdefault(client, [])
    deadline = time.monotonic() + TIMEOUT
    while True:
        while backlog:
            name, params = backlog.pop(0)
            payload = params[0]
            if name == method and payload["graph"] == graph and \
                    payload.get("version", min_version) >= min_version:
                return payload
        if time.monotonic() > deadline:
            raise AssertionError(f"no {method} for {graph!r} within {TIMEOUT} s")
        backlog.extend(client.poll(0.05))


def test_two_clients_share_a_graph(server: ThreadedServer) -> None:
    with Client(server.tcp) as a, Client(server.unix) as b:
        a.call("graph.create", "shared")
        leaf = a.call("node.leaf", "shared", 4.0, {"label": "from a"})
        seen = b.call("node.get", "shared", leaf["id"])
        assert seen["nodes"][0]["label"] == "from a" and seen["version"] == leaf["version"]
        made = b.call("node.apply", "shared", "mul", [leaf["id"], leaf["id"]])
        assert a.call("node.get", "shared", made["id"])["nodes"][0]["data"] == 16.0
        listed = {g["name"]: g for g in a.call("graph.list")}
        assert listed["shared"]["nodes"] == 2 and listed["shared"]["version"] == made["version"]


def test_subscriber_gets_changes_and_diagnostics(server: ThreadedServer) -> None:
    received: list[tuple[str, list[Any]]] = []

    def hear(method: str, params: list[Any]) -> None:
        received.append((method, params))

    with Client(server.tcp) as a, Client(server.unix, on_notification=hear) as b:
        a.call("graph.create", "watched")
        sub = b.call("graph.subscribe", "watched")
        assert sub == {"graph": "watched", "version": 0}
        assert {g["name"]: g for g in a.call("graph.list")}["watched"]["subscribers"] == 1
        x = a.call("node.leaf", "watched", 3.0)
        changed = next_notification(b, "graph.changed", "watched", x["version"])
        assert changed == {"graph": "watched", "version": x["version"], "nodes": 1}
        y = a.call("node.apply", "watched", "tanh", [x["id"]])
        changed = next_notification(b, "graph.changed", "watched", y["version"])
        assert changed["nodes"] == 2
        diags = next_notification(b, "graph.diagnostics", "watched", y["version"])
        assert [d["code"] for d in diags["diagnostics"]] == ["saturated-tanh"]
        assert diags["diagnostics"][0]["node"] == y["id"]
        # The callback saw the same notifications, in order.
        methods = [m for m, _ in received]
        assert "graph.changed" in methods and "graph.diagnostics" in methods
        # A change that clears the problem sends an empty list (LSP style: replace the set).
        z = a.call("node.set", "watched", x["id"], 0.1)
        diags = next_notification(b, "graph.diagnostics", "watched", z["version"])
        assert diags["diagnostics"] == []


def test_unsubscribe_and_drop(server: ThreadedServer) -> None:
    with Client(server.tcp) as a, Client(server.tcp) as b, Client(server.unix) as c:
        a.call("graph.create", "g")
        b.call("graph.subscribe", "g")
        c.call("graph.subscribe", "g")
        b.call("graph.unsubscribe", "g")
        made = a.call("node.leaf", "g", 1.0)
        # c hears everything about this change; by then the server has sent b all it would.
        next_notification(c, "graph.diagnostics", "g", made["version"])
        b.call("graph.list")  # anything sent to b before this reply would be read by now
        assert [m for m, _ in b.poll()] == []
        a.call("graph.drop", "g")
        assert next_notification(c, "graph.dropped", "g") == {"graph": "g"}


def test_a_subscriber_that_leaves_does_not_disturb_others(server: ThreadedServer) -> None:
    with Client(server.tcp) as a, Client(server.tcp) as c:
        a.call("graph.create", "g")
        c.call("graph.subscribe", "g")
        leaving = Client(server.unix)
        leaving.call("graph.subscribe", "g")
        leaving.close()
        server.wait_sessions(2)
        made = a.call("node.leaf", "g", 1.0)
        next_notification(c, "graph.changed", "g", made["version"])
        assert {g["name"]: g for g in a.call("graph.list")}["g"]["subscribers"] == 1


def test_async_client_notifications_iterator(server: ThreadedServer) -> None:
    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        callback: list[str] = []
        async with await AsyncClient.connect(server.tcp) as a, \
                await AsyncClient.connect(server.unix,
                                          on_notification=lambda m, p: callback.append(m)) as b:
            await a.call("graph.create", "async")
            await b.graph("async").subscribe()
            made = await a.graph("async").leaf(2.0, "x")
            got: list[tuple[str, dict[str, Any]]] = []
            async for method, params in b.notifications():
                got.append((method, params[0]))
                if method == "graph.diagnostics" and params[0]["version"] >= made["version"]:
                    break
            assert "graph.changed" in callback
            return got

    got = asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    assert got[0][0] == "graph.changed" and got[0][1]["graph"] == "async"
    assert got[-1][1]["diagnostics"] == []


@pytest.mark.parametrize("options", [{"client": {"name": "nvim", "version": {"major": 0}}},
                                     {"client": "neovim"}, {"neovim": True}])
def test_neovim_gets_nvim_exec_lua(server: ThreadedServer, options: dict[str, Any]) -> None:
    """Neovim accepts only API calls: notifications come as ``nvim_exec_lua`` calls."""
    with Raw(server.tcp) as nvim, Client(server.unix) as other:
        nvim.ok("initialize", options)
        nvim.ok("graph.subscribe", "demo")
        made = other.call("node.leaf", "demo", 1.0)
        seen: dict[str, Any] = {}
        while "graph.diagnostics" not in seen:
            kind, method, params = nvim.read()
            assert (kind, method) == (2, "nvim_exec_lua")
            code, args = params
            assert code == NVIM_HANDLER
            assert len(args) == 2
            seen[args[0]] = args[1]
        assert seen["graph.changed"]["graph"] == "demo"
        assert seen["graph.changed"]["version"] == made["version"]
        assert seen["graph.diagnostics"]["version"] == made["version"]
        # Errors keep Neovim's [kind, message] shape.
        error, _ = nvim.call("graph.info", "nope")
        assert error[0] == 1 and error[1].startswith("unknown_graph: ")


def test_mutations_from_many_clients_are_serialised(server: ThreadedServer) -> None:
    with Client(server.tcp) as setup:
        setup.call("graph.create", "busy")
        setup.call("graph.subscribe", "busy")
    errors: list[BaseException] = []
    results: list[list[int]] = []

    def writer(url: str) -> None:
        try:
            with Client(url) as c:
                for _ in range(20):
                    batch = c.call("graph.batch", "busy", [{"leaf": 1.0}] * 10)
                    results.append(batch["ids"])
                    c.call("node.leaf", "busy", 2.0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(url,))
               for url in (server.tcp, server.unix, server.tcp)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    assert not errors and not any(t.is_alive() for t in threads)
    with Client(server.tcp) as c:
        info = c.call("graph.info", "busy")
        assert info["nodes"] == 3 * 20 * 11
        # Every batch got consecutive ids: nobody else's node landed in the middle of one.
        for ids in results:
            assert ids == list(range(ids[0], ids[0] + 10))
        assert len({i for ids in results for i in ids}) == 600
    wait_until(lambda: server.sync(lambda: not server.server._pending), what="notifications")


def test_concurrent_gradchecks_leave_gradients_intact(server: ThreadedServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """gradcheck sets and restores ``grad`` as it goes; two at once on one graph, each seeing
    the other's half-done state, must neither report nonsense nor leave the graph's gradients
    changed. The two are made to overlap at the worst point: the second one starts while the
    first is inside its backward pass (if the server lets them overlap at all)."""
    real_gradcheck, real_backward = opgraph.gradcheck, core.backward_over
    local = threading.local()
    ranks: list[int] = []
    rank_lock = threading.Lock()
    second_in, first_done = threading.Event(), threading.Event()

    def gradcheck(root: Any, **options: Any) -> Any:
        with rank_lock:
            local.rank = len(ranks)
            ranks.append(local.rank)
        try:
            return real_gradcheck(root, **options)
        finally:
            if local.rank == 0:
                first_done.set()

    def backward_over(order: Any, root: Any) -> Any:
        rank = getattr(local, "rank", None)
        if rank == 0:
            second_in.wait(1.0)  # give a second gradcheck the chance to start meanwhile
        elif rank == 1:
            second_in.set()
            first_done.wait(TIMEOUT)
        return real_backward(order, root)

    monkeypatch.setattr(opgraph, "gradcheck", gradcheck)
    monkeypatch.setattr(opgraph_server.methods.compute, "gradcheck", gradcheck, raising=False)
    monkeypatch.setattr(core, "backward_over", backward_over)
    with Client(server.tcp) as c:
        before = c.call("graph.nodes", "demo")["nodes"]
    o = next(n["id"] for n in before if n["label"] == "o")
    reports: list[Any] = []

    def check() -> None:
        with Client(server.tcp) as c:
            reports.append(c.call("graph.gradcheck", "demo", o))

    threads = [threading.Thread(target=check) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    assert len(reports) == 2 and ranks == [0, 1]
    for report in reports:
        assert report["ok"] is True, report
        analytic = {leaf["label"]: leaf["analytic"] for leaf in report["leaves"]}
        assert analytic == pytest.approx(SEED_GRADS)
    with Client(server.tcp) as c:
        assert c.call("graph.nodes", "demo")["nodes"] == before


# --- subscribing before the graph exists ------------------------------------------------------


@pytest.mark.parametrize("how", ["create", "import", "publish"])
def test_a_subscription_may_come_before_the_graph(server: ThreadedServer, how: str) -> None:
    with Client(server.tcp) as a, Client(server.unix) as b:
        assert b.call("graph.subscribe", "later") == {"graph": "later", "version": None}
        document = a.call("graph.export", "demo")
        made = {"create": lambda: a.call("graph.create", "later"),
                "import": lambda: a.call("graph.import", "later", document),
                "publish": lambda: a.call("graph.publish", "later", document)}[how]()
        changed = next_notification(b, "graph.changed", "later")
        assert changed == {"graph": "later", "version": made["version"],
                           "nodes": made["nodes"]}
        assert {g["name"]: g for g in a.call("graph.list")}["later"]["subscribers"] == 1
        x = a.call("node.leaf", "later", 1.0)
        assert next_notification(b, "graph.changed", "later", x["version"])["nodes"] == \
            made["nodes"] + 1
        a.call("graph.drop", "later")
        assert next_notification(b, "graph.dropped", "later") == {"graph": "later"}
    assert server.sync(lambda: dict(server.server.store.waiting)) == {}


def test_a_wait_ends_with_unsubscribe_or_the_connection(server: ThreadedServer) -> None:
    with Client(server.tcp) as a, Client(server.tcp) as b:
        b.call("graph.subscribe", "w1")
        assert b.call("graph.unsubscribe", "w1") == {"graph": "w1", "version": None}
        leaving = Client(server.unix)
        leaving.call("graph.subscribe", "w2")
        assert server.sync(lambda: set(server.server.store.waiting)) == {"w2"}
        leaving.close()
        server.wait_sessions(2)
        assert server.sync(lambda: dict(server.server.store.waiting)) == {}
        for name in ("w1", "w2"):
            a.call("graph.create", name)
            assert {g["name"]: g for g in a.call("graph.list")}[name]["subscribers"] == 0
        b.call("graph.list")  # anything sent to b before this reply would be read by now
        assert b.poll() == []


def test_waiting_subscriptions_are_bounded(make_server: Any) -> None:
    server = make_server(max_graphs=2)
    with Client(server.tcp) as c:
        c.call("graph.subscribe", "n1")
        c.call("graph.subscribe", "n2")
        c.call("graph.subscribe", "n2")  # (again: the same wait)
        with pytest.raises(LimitExceededError, match="waits for 2 graphs not created yet"):
            c.call("graph.subscribe", "n3")
        assert c.call("graph.subscribe", "demo")["version"] is not None  # existing: no limit
        c.call("graph.unsubscribe", "n1")
        c.call("graph.subscribe", "n3")


def test_each_server_has_its_own_instance_id(make_server: Any) -> None:
    first, second = make_server(), make_server()
    with Client(first.tcp) as a, Client(first.unix) as b, Client(second.tcp) as c:
        instance = a.server_info["instance"]
        assert isinstance(instance, str) and len(instance) >= 16
        assert b.server_info["instance"] == instance  # one server, one id
        assert c.server_info["instance"] != instance
        # Both count versions from the same start: only the instance tells them apart.
        assert a.call("graph.info", "demo")["version"] == c.call("graph.info", "demo")["version"]
