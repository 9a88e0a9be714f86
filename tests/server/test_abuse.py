"""Abuse on separate connections, and every limit. After each: the server answers other
clients, and the graphs are intact."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import opgraph_server.methods.views
import pytest
from opgraph_client import BadExpressionError, Client, LimitExceededError
from server_harness import TIMEOUT, Raw, ThreadedServer, intact, pack, wait_until

import opgraph.analysis
from opgraph.graph import Graph

MakeServer = Callable[..., ThreadedServer]

# The start of a request [0, 1, "node.get", [...]]: an array of 4, msgid 1, the method.
REQUEST_HEAD = b"\x94\x00\x01" + pack("node.get")


def chain(name: str, length: int) -> Graph:
    """x * c * c * ... (``length`` muls): deep, with two leaves."""
    g = Graph(name)
    node, c = g.leaf(0.5, "x"), g.leaf(1.0, "c")
    for _ in range(length):
        node = g.apply("mul", [node, c])
    return g


def add_graph(server: ThreadedServer, graph: Graph) -> None:
    server.sync(server.server.add_graph, graph)


# --- bytes that are not MessagePack-RPC ------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(server: ThreadedServer, seed: int) -> None:
    garbage = random.Random(seed).randbytes(4096)
    with intact(server.tcp), Raw(server.unix) as raw:
        raw.send(garbage)
        raw.sock.shutdown(socket.SHUT_WR)  # whatever it made of them, the rest never comes
        assert raw.closed()
    server.wait_sessions(0)


@pytest.mark.parametrize("data", [
    b"\xc1",                                # never valid MessagePack
    pack("hello"),                          # not an array
    pack([]),                               # empty array
    pack([3, 1, "x", []]),                  # unknown message type
    pack([0, -1, "graph.list", []]),        # bad msgid
    pack([0, 1, 5, []]),                    # method not a string
    pack([0, 1, b"\xff\xfe", []]),          # method not UTF-8
    pack([0, 1, "graph.list", {}]),         # params not an array
    pack([0, 1, "graph.list"]),             # too short
    b"\x81\x01\x02",                        # a map with an int key (strict_map_key)
    b"\xd9\x02\xff\xfe",                    # a str that is not UTF-8
], ids=lambda d: d[:8].hex())
def test_malformed_messages_close_only_that_connection(server: ThreadedServer,
                                                        data: bytes) -> None:
    with intact(server.tcp), Raw(server.tcp) as bystander, Raw(server.tcp) as raw:
        assert bystander.ok("graph.list")
        raw.send(data)
        assert raw.closed()
        for message in raw.received:  # a best-effort error before closing, if anything
            assert message[0] in (1, 2)
        assert bystander.ok("graph.list")


def test_framing_error_after_a_good_request_names_its_msgid(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        raw.send(pack([0, 42, "graph.list", "not an array"]))
        assert raw.closed()
        assert raw.received[0][:2] == [1, 42]
        assert raw.received[0][2][1].startswith("invalid_request: ")


def holds_half_a_message(server: ThreadedServer, size: int) -> bool:
    """Whether some connection has exactly ``size`` bytes of an unfinished message read."""
    return server.sync(lambda: any(s.protocol.pending_bytes == size
                                   for s in server.server.sessions))


def test_array_header_claiming_2_31_items(server: ThreadedServer) -> None:
    claim = b"\xdd" + struct.pack(">I", 2**31) + b"\x00" * 1000
    with intact(server.tcp), Raw(server.tcp) as raw:
        raw.send(claim)
        # The server has read it all and waits for the rest, allocating nothing for the claim
        # and serving others meanwhile.
        wait_until(lambda: holds_half_a_message(server, len(claim)), what="the claim read")
        for _ in range(3):
            assert demo_is_served(server)
        raw.sock.shutdown(socket.SHUT_WR)
        assert raw.closed()


def test_string_header_claiming_4_gib(server: ThreadedServer) -> None:
    claim = REQUEST_HEAD + b"\x91\xdb" + struct.pack(">I", 2**32 - 1) + b"a" * 100_000
    with intact(server.tcp), Raw(server.tcp) as raw:
        raw.send(claim)
        wait_until(lambda: holds_half_a_message(server, len(claim)), what="the claim read")
        assert demo_is_served(server)
        raw.sock.shutdown(socket.SHUT_WR)
        assert raw.closed()


def test_5000_levels_of_nesting(server: ThreadedServer) -> None:
    with intact(server.tcp), Raw(server.unix) as raw:
        raw.send(REQUEST_HEAD + b"\x91" * 5000 + b"\xc0")
        assert raw.closed()
        # No msgid could be trusted, so the error comes as a notification before the close.
        [(kind, method, [error])] = raw.received
        assert (kind, method) == (2, "error")
        assert error[0] == 1 and error[1].startswith("parse_error: ")
    with intact(server.tcp), Raw(server.tcp) as raw:
        raw.send(b"\x91" * 5000 + b"\xc0")  # not even inside a request
        assert raw.closed()


def test_moderate_nesting_is_refused_but_keeps_the_connection(server: ThreadedServer) -> None:
    nested: Any = 1
    for _ in range(100):
        nested = [nested]
    with intact(server.tcp), Raw(server.tcp) as raw:
        error, _ = raw.call("node.get", "demo", nested)
        assert error[1].startswith("limit_exceeded: ") and "nested deeper" in error[1]
        assert raw.ok("graph.info", "demo")["nodes"] == 10


def test_message_over_the_size_limit(make_server: MakeServer) -> None:
    server = make_server(max_message_bytes=64 * 1024)
    with intact(server.tcp), Raw(server.tcp) as raw:
        # Just under the limit is fine...
        assert raw.call("graph.create", "x" * 60_000)[0][1].startswith("invalid_params")
        # ...over it closes the connection.
        raw.send(pack([0, 9, "graph.create", ["x" * 70_000]]))
        assert raw.closed()
        assert not any(m[0] == 1 and m[1] == 9 and m[2] is None for m in raw.received)
    with Client(server.tcp) as c:
        assert [g["name"] for g in c.call("graph.list")] == ["demo"]


def test_half_a_message_then_silence(make_server: MakeServer,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="opgraph.server")
    server = make_server(partial_message_timeout=0.3)
    whole = pack([0, 1, "graph.list", []])
    with intact(server.tcp), Raw(server.tcp) as silent:
        silent.send(whole[: len(whole) // 2])
        assert demo_is_served(server)  # others are served meanwhile
        assert silent.closed()  # the server gives up on the silent one
    server.wait_sessions(0)
    assert "half a message" in caplog.text


def test_half_a_message_waits_within_the_timeout(server: ThreadedServer) -> None:
    whole = pack([0, 1, "graph.list", []])
    with Raw(server.tcp) as slow:
        slow.send(whole[:5])
        assert demo_is_served(server)
        slow.send(whole[5:])
        assert slow.response(1)[1][0]["name"] == "demo"


def test_disconnect_mid_message(server: ThreadedServer) -> None:
    with intact(server.tcp):
        raw = Raw(server.tcp)
        raw.send(pack([0, 1, "graph.list", []])[:7])
        raw.close()
        server.wait_sessions(0)


def test_disconnect_mid_request(server: ThreadedServer) -> None:
    add_graph(server, chain("deep", 20_000))
    with intact(server.tcp):
        for how in ("close", "reset"):
            raw = Raw(server.tcp)
            ids = list(range(0, 20_000, 3))
            raw.request("graph.analyze", "deep")
            raw.request("node.get", "deep", ids)
            raw.request("graph.render", "demo", {"format": "svg"})
            if how == "reset":
                raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()
        server.wait_sessions(0)
    with Client(server.tcp) as c:
        assert c.call("graph.info", "deep")["nodes"] == 20_002


def test_client_that_never_reads_is_disconnected(make_server: MakeServer,
                                                caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(max_queued_output=256 * 1024)
    with Client(server.tcp) as c:
        c.call("graph.create", "wide")
        c.call("graph.batch", "wide", [{"leaf": float(i), "label": f"leaf {i}"}
                                       for i in range(5000)])
    request = pack([0, 1, "node.get", ["wide", list(range(1000))]])  # replies of ~130 kB
    with intact(server.tcp):
        deaf = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.settimeout(TIMEOUT)
        deaf.connect(("127.0.0.1", server.port))
        try:
            with contextlib.suppress(OSError):  # fails once the server has dropped it
                for _ in range(400):  # ~50 MB of replies asked for, none read
                    deaf.sendall(request)
            server.wait_sessions(0)
        finally:
            deaf.close()
    assert "output unread (limit 262144); disconnecting" in caplog.text


def test_subscriber_that_never_reads_is_disconnected(make_server: MakeServer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(max_queued_output=256 * 1024)
    with Client(server.unix) as writer:
        writer.call("graph.create", "hot")
        # 2,000 saturated tanh nodes: every change brings ~300 kB of diagnostics.
        steps: list[dict[str, Any]] = [{"leaf": 1.0, "label": "x"}]
        for i in range(2000):
            k = len(steps)
            steps += [{"leaf": 10.0 + i}, {"op": "mul", "inputs": ["$0", f"${k}"]},
                      {"op": "tanh", "inputs": [f"${k + 1}"]}]
        x = writer.call("graph.batch", "hot", steps)["ids"][0]
        deaf = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.settimeout(TIMEOUT)
        deaf.connect(("127.0.0.1", server.port))
        try:
            deaf.sendall(pack([0, 1, "graph.subscribe", ["hot"]]))
            wait_until(lambda: writer.call("graph.info", "hot")["subscribers"] == 1,
                       what="the subscription")
            with intact(server.tcp):
                for i in range(200):  # each change notifies the deaf subscriber
                    writer.call("node.set", "hot", x, 1.0 + i % 2)
                    if server.session_count() == 1:
                        break
                server.wait_sessions(1)
            assert writer.call("graph.info", "hot")["subscribers"] == 0
        finally:
            deaf.close()
    assert "output unread (limit 262144); disconnecting" in caplog.text


def test_connection_limit(make_server: MakeServer) -> None:
    server = make_server(max_connections=2)
    with Raw(server.tcp) as a, Raw(server.unix) as b:
        assert a.ok("graph.list") and b.ok("graph.list")
        with Raw(server.tcp) as refused:
            assert refused.closed()
        assert a.ok("graph.info", "demo")["nodes"] == 10
    server.wait_sessions(0)
    with Raw(server.tcp) as again:
        assert again.ok("graph.list")


def test_request_timeout(make_server: MakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny request_timeout and an analysis that takes longer (held until it is answered)."""
    server = make_server(request_timeout=0.05)
    add_graph(server, chain("deep", 20_000))
    release = threading.Event()
    real = opgraph.analysis.analyze

    def slow(*args: Any, **kwargs: Any) -> Any:
        release.wait(TIMEOUT)
        return real(*args, **kwargs)

    monkeypatch.setattr(opgraph.analysis, "analyze", slow)
    monkeypatch.setattr(opgraph_server.methods.views, "analyze", slow, raising=False)
    try:
        with intact(server.tcp), Client(server.tcp) as c:
            with pytest.raises(LimitExceededError, match=r"took longer than 0\.05 s"):
                c.call("graph.analyze", "deep")
            # The connection, the server and the graph go on.
            assert c.call("graph.info", "deep")["nodes"] == 20_002
            assert c.call("node.get", "deep", 0)["nodes"][0]["label"] == "x"
            c.call("node.leaf", "deep", 1.0)  # writers are not locked out by the dropped work
    finally:
        release.set()


def test_graph_and_node_limits(make_server: MakeServer) -> None:
    server = make_server(max_graphs=2, max_nodes=12)
    with intact(server.tcp), Client(server.tcp) as c:
        document = c.call("graph.export", "demo")
        c.call("graph.import", "second", document)  # 10 nodes of its 12
        for call in (lambda: c.call("graph.create", "third"),
                     lambda: c.call("graph.import", "third", document)):
            with pytest.raises(LimitExceededError):
                call()
        assert len(c.call("graph.list")) == 2
        before = c.call("graph.info", "second")
        with pytest.raises(LimitExceededError):
            c.call("graph.batch", "second", [{"leaf": 1.0}] * 3)
        with pytest.raises((LimitExceededError, BadExpressionError), match="limit") as err:
            c.call("graph.eval", "second", "a + b + c", {"a": 1, "b": 2, "c": 3})
        assert err.value.name in ("limit_exceeded", "bad_expression")
        assert c.call("graph.info", "second") == before
        a = c.call("node.leaf", "second", 1.0)["id"]
        b = c.call("node.leaf", "second", 2.0)["id"]
        with pytest.raises(LimitExceededError):
            c.call("node.leaf", "second", 3.0)
        with pytest.raises(LimitExceededError):
            c.call("node.apply", "second", "add", [a, b])
        assert c.call("graph.info", "second")["nodes"] == 12
        # A document with too many nodes is refused before it is built.
        big = {**document, "nodes": document["nodes"] + document["nodes"][:3]}
        with pytest.raises(LimitExceededError):
            c.call("graph.import", "second", big, {"replace": True})
        assert c.call("graph.info", "second")["nodes"] == 12
        c.call("graph.drop", "second")
        c.call("graph.create", "third")  # room again


def test_gradcheck_and_render_limits(make_server: MakeServer) -> None:
    server = make_server(max_gradcheck_leaves=3, max_render_nodes=50)
    with intact(server.tcp), Client(server.tcp) as c:
        o = ids_by_label_client(c)["o"]
        with pytest.raises(LimitExceededError, match="at most 3"):
            c.call("graph.gradcheck", "demo", o)
        c.call("graph.create", "wide")
        c.call("graph.eval", "wide", " + ".join(f"tanh(x{i})" for i in range(100)),
               {f"x{i}": 0.1 for i in range(100)})
        picture = c.call("graph.render", "wide", {"format": "dot"})["data"]
        assert "summarised" in picture and picture.count("shape=record") == 0


def ids_by_label_client(client: Client) -> dict[str, int]:
    return {n["label"]: n["id"] for n in client.call("graph.nodes", "demo")["nodes"]
            if n["label"]}


# --- long work does not stall others -----------------------------------------------------


def test_long_analysis_does_not_stall_others(server: ThreadedServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """While one client's analysis of a 100k-node graph runs, another's requests are answered.

    The analysis is held at its start until the other client has had its answers, so the
    ordering is certain: had the analysis run on the server's event loop (or held it up), the
    other client would get nothing and this test would fail.
    """
    add_graph(server, chain("big", 100_000))
    started, release = threading.Event(), threading.Event()
    real = opgraph.analysis.analyze

    def gated(*args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(TIMEOUT)
        return real(*args, **kwargs)

    monkeypatch.setattr(opgraph.analysis, "analyze", gated)
    monkeypatch.setattr(opgraph_server.methods.views, "analyze", gated, raising=False)
    outcome: dict[str, Any] = {}

    def analyse() -> None:
        try:
            with Client(server.tcp, timeout=60) as c:
                outcome["report"] = c.call("graph.analyze", "big")
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=analyse)
    worker.start()
    try:
        assert started.wait(TIMEOUT)
        with Client(server.unix) as other:
            ids = ids_by_label_client(other)
            for i in range(20):
                got = other.call("node.get", "big", [i, 100_000 + (i % 2)])
                assert got["nodes"][0]["id"] == i
                other.call("node.set", "demo", ids["x1"], 2.0)  # writes to another graph too
                assert other.call("node.get", "demo", ids["o"])["nodes"][0]["label"] == "o"
        assert "report" not in outcome and worker.is_alive()  # the analysis is still going
    finally:
        release.set()
        worker.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["report"]["nodes"] == 100_002 and outcome["report"]["depth"] == 100_001


def demo_is_served(server: ThreadedServer) -> bool:
    with Raw(server.unix) as raw:
        return raw.ok("graph.info", "demo")["nodes"] == 10



def test_a_message_dripped_byte_by_byte_still_times_out(make_server: MakeServer) -> None:
    """The partial-message timeout bounds the whole message, not the gap between bytes (else a
    client sending a byte now and then holds its connection, and a slot, for ever)."""
    server = make_server(partial_message_timeout=0.3)
    message = pack([0, 1, "graph.create", ["x" * 150]])
    closed_early = False
    with intact(server.tcp), Raw(server.tcp) as drip:
        for i in range(len(message) - 1):  # all but the last byte, 20 per second
            try:
                drip.send(message[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_early = True
                break
            if drip.closed(0.05):
                closed_early = True
                break
    assert closed_early


def test_a_result_bigger_than_the_output_limit_is_an_error(make_server: MakeServer) -> None:
    """A client that reads is not disconnected for asking for a big result: it gets
    ``limit_exceeded`` and the connection stays good."""
    server = make_server(max_queued_output=64 * 1024)
    with intact(server.tcp), Client(server.tcp) as c:
        c.call("graph.create", "wide")
        c.call("graph.batch", "wide", [{"leaf": float(i), "label": f"leaf {i}"}
                                       for i in range(2000)])
        with pytest.raises(LimitExceededError, match="max_queued_output"):
            c.call("graph.export", "wide")
        assert c.call("graph.info", "wide")["nodes"] == 2000
        assert len(c.call("node.get", "wide", list(range(100)))["nodes"]) == 100


def test_node_get_of_too_many_ids_is_refused(server: ThreadedServer) -> None:
    """Records are built on the event loop: a huge id list is refused before the work."""
    with intact(server.tcp), Client(server.tcp) as c:
        with pytest.raises(LimitExceededError):
            c.call("node.get", "demo", [0] * 100_001)
        with pytest.raises(LimitExceededError):
            c.call("graph.grads", "demo", 0, [0] * 100_001)
        assert len(c.call("node.get", "demo", [0] * 1000)["nodes"]) == 1000
