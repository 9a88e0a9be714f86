"""The blocking `Client` and its `RemoteGraph` handles, against a real server."""

from __future__ import annotations

import gc
import itertools
import json
import os
import socket
import subprocess
import threading
import warnings
from typing import Any

import pytest
from opgraph_client import (
    ERRORS,
    BadExpressionError,
    Client,
    ClientError,
    ConnectionLost,
    GraphExistsError,
    InternalError,
    InvalidParamsError,
    MethodNotFoundError,
    NotALeafError,
    RemoteGraph,
    ServerError,
    UnauthorizedError,
    UnknownGraphError,
    UnknownNodeError,
    UnknownOpError,
)
from opgraph_client.errors import from_wire
from opgraph_client.remote import local_document
from opgraph_server.errors import CATALOGUE
from server_harness import (
    SEED,
    SEED_GRADS,
    SEED_O,
    TIMEOUT,
    ThreadedServer,
    opgraph_command,
    wait_until,
)

import opgraph
from opgraph import Value


def test_remote_graph_builds_the_neuron(url: str) -> None:
    with Client(url) as c:
        g = c.create_graph("neuron")
        assert isinstance(g, RemoteGraph) and "neuron" in repr(g)
        ids = {name: g.leaf(value, name)["id"] for name, value in SEED.items()}
        x1w1 = g.apply("mul", [ids["x1"], ids["w1"]], label="x1*w1")["id"]
        x2w2 = g.apply("mul", [ids["x2"], ids["w2"]])["id"]
        n = g.apply("add", [g.apply("add", [x1w1, x2w2])["id"], ids["b"]], label="n")["id"]
        o = g.apply("tanh", [n], label="o")
        assert o["data"] == pytest.approx(SEED_O)
        g.backward(o["id"])
        grads = {r["label"]: r["grad"] for r in g.get(list(ids.values()))["nodes"]}
        assert grads == pytest.approx(SEED_GRADS)
        assert g.grads(o["id"], [ids["x1"]])["grads"] == {str(ids["x1"]): pytest.approx(-1.5)}
        assert g.gradcheck(o["id"])["ok"] is True
        assert g.info()["nodes"] == 10
        assert g.nodes(start=9, count=5)["nodes"][0]["label"] == "o"
        assert g.analyze()["depth"] == 5
        assert g.diagnostics()["diagnostics"] == []
        assert g.diagnostics(group=True, limit=5)["counts"]["groups"] == 0
        summary = g.aggregate()
        assert summary["total"]["count"] == 10 and summary["version"] == g.info()["version"]
        assert g.aggregate(op="tanh", members=1)["members"] == [o["id"]]
        assert "data 2.0000" in g.render(format="dot")["data"]
        assert len(g.export()["nodes"]) == 10
        changed = g.set(ids["w2"], 2.0)
        assert o["id"] in changed["changed"]
        batch = g.batch([{"leaf": 1.0}, {"op": "neg", "inputs": ["$0"]}])
        assert g.get(batch["ids"][1])["nodes"][0]["data"] == -1.0
        assert g.eval("a * b", a=2.0, b=4.0)["data"] == 8.0
        assert g.subscribe()["graph"] == "neuron"
        assert g.unsubscribe()["graph"] == "neuron"
        assert g.drop() == {"graph": "neuron", "dropped": True}
        with pytest.raises(UnknownGraphError):
            g.info()
        handle = c.graph("later")
        handle.create()
        with pytest.raises(GraphExistsError):
            handle.create()
        assert handle.create(replace=True)["nodes"] == 0


def test_typed_errors(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        o = next(n["id"] for n in c.call("graph.nodes", "demo")["nodes"] if n["label"] == "o")
        cases: list[tuple[Any, type[ServerError]]] = [
            (lambda: c.call("graph.info", "nope"), UnknownGraphError),
            (lambda: c.call("node.get", "demo", 99), UnknownNodeError),
            (lambda: c.call("node.apply", "demo", "sofplus", [0]), UnknownOpError),
            (lambda: c.call("node.set", "demo", o, 1.0), NotALeafError),
            (lambda: c.call("graph.create", "demo"), GraphExistsError),
            (lambda: c.call("no.such"), MethodNotFoundError),
            (lambda: c.call("node.leaf", "demo", "x"), InvalidParamsError),
            (lambda: c.call("graph.eval", "demo", "1 +"), BadExpressionError),
        ]
        for call, kind in cases:
            with pytest.raises(kind) as err:
                call()
            error = err.value
            assert isinstance(error, ServerError)
            assert error.code == CATALOGUE[error.name].code
            assert str(error) == f"{error.name}: {error.message}"
        with pytest.raises(InvalidParamsError) as err:
            c.call("node.leaf", "demo")
        assert err.value.data == {"method": "node.leaf", "argument": "data"}


def test_typed_errors_from_the_default_shape(server: ThreadedServer) -> None:
    with Client(server.tcp, structured_errors=False) as c:
        with pytest.raises(UnknownGraphError) as err:
            c.call("graph.info", "nope")
        assert err.value.message == "no graph named 'nope'"
        assert err.value.code == -32010


def test_error_classes_cover_the_catalogue() -> None:
    assert set(ERRORS) == set(CATALOGUE)
    for name, cls in ERRORS.items():
        error = from_wire([1, f"{name}: boom"])
        assert type(error) is cls and error.message == "boom"
        error = from_wire({"code": CATALOGUE[name].code, "name": name, "message": "m",
                           "data": {"k": 1}})
        assert type(error) is cls and error.data == {"k": 1}
    for foreign in ("plain text", [1, "no code here"], {"code": 7, "message": "x"}, 42):
        assert type(from_wire(foreign)) is InternalError


def test_no_server_there() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(ClientError, match="cannot connect"):
        Client(f"tcp://127.0.0.1:{port}")
    with pytest.raises(ClientError, match="cannot connect"):
        Client("unix:///nonexistent/dir/opgraph.sock")
    with pytest.raises(ValueError):
        Client("http://example.org")


def silent_server() -> tuple[socket.socket, str]:
    """A listening socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener, f"tcp://127.0.0.1:{listener.getsockname()[1]}"


def test_timeout_when_the_server_does_not_answer() -> None:
    listener, url = silent_server()
    try:
        with pytest.raises(ClientError, match="no answer"):
            Client(url, timeout=0.2)
        with Client(url, timeout=0.2, initialize=False) as c:
            with pytest.raises(ClientError, match="no answer"):
                c.call("graph.list")
            assert c.poll(0.05) == []
    finally:
        listener.close()


def test_connection_lost_and_closed_client(server: ThreadedServer) -> None:
    c = Client(server.tcp, reconnect=False)  # (reconnecting: test_reconnect.py)
    assert c.call("graph.list")
    server.stop()
    with pytest.raises(ConnectionLost):
        c.call("graph.list")
    c.close()
    c.close()  # twice is fine
    with pytest.raises(ClientError, match="closed"):
        c.call("graph.list")
    with pytest.raises(ClientError, match="closed"):
        c.poll()


def test_notifications_by_callback_and_poll(server: ThreadedServer) -> None:
    heard: list[tuple[str, list[Any]]] = []
    with Client(server.tcp) as writer, \
            Client(server.unix, on_notification=lambda m, p: heard.append((m, p))) as reader:
        reader.graph("demo").subscribe()
        made = writer.graph("demo").leaf(1.0)
        polled: list[tuple[str, list[Any]]] = []
        wait_until(lambda: polled.extend(reader.poll(0.02)) or any(
            m == "graph.diagnostics" for m, _ in polled), what="diagnostics")
        assert polled == heard
        assert polled[0] == ("graph.changed", [{"graph": "demo", "version": made["version"],
                                                "nodes": 11}])
        # Notifications that arrive while waiting for a reply reach the callback too.
        count = len(heard)
        writer.graph("demo").leaf(2.0)
        wait_until(lambda: reader.call("graph.list") and len(heard) >= count + 2,
                   what="notifications during calls")
        assert [m for m, _ in heard[count:count + 2]] == ["graph.changed", "graph.diagnostics"]


def test_msgids_wrap_around(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        c._ids = itertools.count(2**32 - 2)
        for _ in range(4):  # ids 2**32-2, 2**32-1, 0, 1
            assert c.call("graph.info", "demo")["nodes"] == 10


def test_one_client_shared_by_threads(server: ThreadedServer) -> None:
    problems: list[BaseException] = []
    with Client(server.tcp) as c:
        ids = [n["id"] for n in c.call("graph.nodes", "demo")["nodes"]]

        def work(k: int) -> None:
            try:
                for i in range(30):
                    node = ids[(k + i) % len(ids)]
                    assert c.call("node.get", "demo", node)["nodes"][0]["id"] == node
            except BaseException as exc:
                problems.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
    assert not problems and not any(t.is_alive() for t in threads)


def test_publish_and_local_document(server: ThreadedServer) -> None:
    with opgraph.track_source():
        a = Value(3.0, label="a")
        y = (a * a).tanh()
    document = local_document(y)
    assert document["nodes"][0]["label"] == "a"
    assert document["nodes"][0]["source"][0] == __file__
    assert a._graph is None  # sending joins no graph
    with Client(server.tcp) as c:
        published = c.publish("local", y)
        assert published["nodes"] == 3
        nodes = c.call("graph.nodes", "local")["nodes"]
        assert nodes[-1]["data"] == pytest.approx(y.data)
        assert nodes[0]["source"] == list(a._loc)


def test_notify_sends_without_waiting(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        c.notify("graph.create", "by-notification")
        c.notify("no.such.thing", 1, 2)
        names = [g["name"] for g in c.call("graph.list")]
        assert names == ["demo"]  # notifications are ignored (documented); the line is fine


@pytest.mark.parametrize("reply", [
    b"\x94\x01\x01\xc0",          # half a response, then the server hangs up
    b"\xc1\xc1\xc1",              # not MessagePack at all
    b"\x93\x01\x01\xc0",          # MessagePack, not MessagePack-RPC
])
def test_a_broken_server_is_a_client_error(reply: bytes) -> None:
    listener, url = silent_server()

    def answer_badly() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            conn.recv(65536)
            conn.sendall(reply)

    thread = threading.Thread(target=answer_badly, daemon=True)
    thread.start()
    try:
        with Client(url, timeout=TIMEOUT, initialize=False, reconnect=False) as c:
            with pytest.raises(ConnectionLost):
                c.call("graph.list")
            with pytest.raises(ConnectionLost):  # and so is every later call
                c.call("graph.list")
    finally:
        thread.join(TIMEOUT)
        listener.close()


def test_a_refused_initialize_leaves_nothing_open() -> None:
    """Connecting with a wrong token raises, and closes the socket (or stops the child)."""
    guarded = ThreadedServer(token="right")
    url = guarded.tcp
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(UnauthorizedError):
            Client(url, token="wrong")
        with pytest.raises(UnauthorizedError):
            Client.spawn(opgraph_command("serve", "--stdio", "--token", "right"),
                         token="wrong", timeout=TIMEOUT)
        gc.collect()
    guarded.stop()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_arguments_msgpack_cannot_carry_are_a_client_error(server) -> None:
    from opgraph_client import ClientError

    with Client(server.tcp) as c:
        with pytest.raises(ClientError, match=r"node\.get: cannot send these arguments"):
            c.call("node.get", "demo", 2**70)
        assert c.call("graph.info", "demo")["name"] == "demo"  # the connection is still good


# --- hints in Python, and the token from the environment ---------------------------------------


def test_graph_exists_says_how_to_replace_in_python(server: ThreadedServer) -> None:
    """The server's hint is for the wire (``replace: true``); a Python caller reads Python."""
    with Client(server.tcp) as c:
        c.create_graph("mine")
        with pytest.raises(GraphExistsError) as err:
            c.create_graph("mine")
        assert str(err.value) == ("graph_exists: a graph named 'mine' exists; to replace it, "
                                  "call create_graph('mine', replace=True)")
        assert err.value.name == "graph_exists" and err.value.code == CATALOGUE[
            "graph_exists"].code
        assert err.value.__suppress_context__  # the wire's wording does not follow it
        with pytest.raises(GraphExistsError,
                           match=r"call graph\('mine'\)\.create\(replace=True\)$"):
            c.graph("mine").create()
        with pytest.raises(GraphExistsError,
                           match=r"call call\('graph\.create', 'mine', replace=True\)$"):
            c.call("graph.create", "mine")
        document = c.graph("mine").export()
        with pytest.raises(GraphExistsError,
                           match=r"call call\('graph\.import', 'mine', data, replace=True\)$"):
            c.call("graph.import", "mine", document)
        assert c.create_graph("mine", replace=True).info()["nodes"] == 0  # the hint works


def test_the_token_comes_from_opgraph_token(monkeypatch: pytest.MonkeyPatch) -> None:
    guarded = ThreadedServer(token="right", unix=False)
    try:
        monkeypatch.delenv("OPGRAPH_TOKEN", raising=False)
        with pytest.raises(UnauthorizedError):
            Client(guarded.tcp, timeout=TIMEOUT)
        monkeypatch.setenv("OPGRAPH_TOKEN", "right")
        with Client(guarded.tcp, timeout=TIMEOUT) as c:
            assert c.call("graph.list")[0]["name"] == "demo"
        with pytest.raises(UnauthorizedError):  # a token given outright wins
            Client(guarded.tcp, token="wrong", timeout=TIMEOUT)
    finally:
        guarded.stop()


def test_spawn_with_opgraph_token_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child server reads ``$OPGRAPH_TOKEN`` (as ``opgraph serve`` does); so does the client."""
    monkeypatch.setenv("OPGRAPH_TOKEN", "from-the-environment")
    with Client.spawn(timeout=TIMEOUT) as c:
        assert c.call("graph.list") == []


def test_the_connect_commands_send_opgraph_token() -> None:
    """``opgraph analyze --connect`` has no token option: it sends ``$OPGRAPH_TOKEN``."""
    guarded = ThreadedServer(token="right", unix=False)
    command = opgraph_command("analyze", "--connect", guarded.tcp, "--graph", "demo", "--json")
    try:
        for token, code in ((None, 1), ("right", 0)):
            env = {k: v for k, v in os.environ.items() if k != "OPGRAPH_TOKEN"}
            if token is not None:
                env["OPGRAPH_TOKEN"] = token
            run = subprocess.run(command, env=env, capture_output=True, text=True,
                                 timeout=60)
            assert run.returncode == code, run.stderr
            assert ("unauthorized" in run.stderr) == (token is None), run.stderr
        assert json.loads(run.stdout)["nodes"] == 10
    finally:
        guarded.stop()
