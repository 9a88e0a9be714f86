"""The ``http://`` listener without a browser: the page's files, the WebSocket carrying the same
MessagePack-RPC as TCP (one message per binary frame), and what it refuses (other hosts,
other origins, other methods, text frames, a frame that ends inside a message)."""

from __future__ import annotations

import http.client
import socket

import msgpack
import pytest
from opgraph_server.address import parse_url
from web_harness import ServedViewer
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


def get(srv: ServedViewer, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def call(ws, msgid: int, method: str, *params):
    ws.send(msgpack.packb([0, msgid, method, list(params)]))
    return msgpack.unpackb(ws.recv(timeout=10))


def test_the_page_and_its_files_are_served_read_only(served: ServedViewer) -> None:
    status, headers, body = get(served, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script type="module" src="app.js">' in body
    assert "frame-ancestors 'self' http://localhost:*" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, body = get(served, "/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    status, headers, _ = get(served, "/vendor/msgpack/LICENSE")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    status, _, body = get(served, "/../pyproject.toml")
    assert status == 404 and b"nothing at" in body
    for method in ("POST", "PUT", "DELETE", "HEAD"):
        status, headers, _ = get(served, "/", method)
        assert status == 405 and headers["allow"] == "GET", method


def test_another_host_name_is_refused(served: ServedViewer) -> None:
    """DNS rebinding: a page of evil.example, its name pointed at 127.0.0.1, sends
    Host: evil.example:PORT; the server answers no request of it."""
    status, _, body = get(served, "/", headers={"Host": f"evil.example:{served.http_port}"})
    assert status == 403 and b"names another host" in body
    status, _, body = get(served, "/", headers={"Host": "127.0.0.1:1"})
    assert status == 403 and b"port" in body
    for host in (f"localhost:{served.http_port}", f"127.0.0.1:{served.http_port}"):
        assert get(served, "/", headers={"Host": host})[0] == 200


def test_a_cross_origin_websocket_is_refused(served: ServedViewer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(served.ws, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    assert b"cross-origin WebSocket refused" in refused.value.response.body
    with pytest.raises(InvalidStatus):  # the same host on another port is another origin
        connect(served.ws, origin="http://127.0.0.1:1")
    with connect(served.ws, origin=f"http://127.0.0.1:{served.http_port}") as ws:
        assert call(ws, 0, "graph.list")[2] is None


def test_the_websocket_speaks_the_same_protocol(served: ServedViewer) -> None:
    with connect(served.ws) as ws:
        msg = call(ws, 7, "node.get", "demo", [9])
        assert msg[:3] == [1, 7, None]
        assert msg[3]["nodes"][0]["label"] == "o"
        assert msg[3]["nodes"][0]["grad"] == 1.0
        # The same errors, in the shape asked for at initialize.
        assert call(ws, 8, "initialize", {"errors": "structured"})[2] is None
        error = call(ws, 9, "node.get", "dmeo", [0])[2]
        assert error["name"] == "unknown_graph" and "did you mean 'demo'" in error["message"]
        # Two requests in one frame: two answers, each in a frame of its own.
        ws.send(msgpack.packb([0, 10, "graph.list", []]) + msgpack.packb([0, 11, "ops.list", []]))
        first, second = (msgpack.unpackb(ws.recv(timeout=10)) for _ in range(2))
        assert (first[1], second[1]) == (10, 11)


def test_notifications_reach_a_websocket_subscriber(served: ServedViewer) -> None:
    with connect(served.ws) as ws, served.client() as client:
        client.call("graph.create", "notified", {"replace": True})
        assert call(ws, 1, "graph.subscribe", "notified")[2] is None
        client.call("node.leaf", "notified", 2.0, {"label": "x"})
        note = msgpack.unpackb(ws.recv(timeout=10))
        assert note[0] == 2 and note[1] == "graph.changed"
        assert note[2][0]["graph"] == "notified" and note[2][0]["nodes"] == 1
        client.call("graph.drop", "notified")


def test_a_frame_that_ends_inside_a_message_closes_the_connection(served: ServedViewer) -> None:
    whole = msgpack.packb([0, 1, "graph.list", []])
    with connect(served.ws) as ws:
        ws.send(whole[:5])
        note = msgpack.unpackb(ws.recv(timeout=10))
        assert note[:2] == [2, "error"]
        assert "ended inside a MessagePack-RPC message" in note[2][0][1]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    with connect(served.ws) as ws:  # the server goes on
        assert call(ws, 1, "graph.list")[2] is None


def test_a_text_frame_is_refused(served: ServedViewer) -> None:
    with connect(served.ws) as ws:
        ws.send('[0, 1, "graph.list", []]')
        note = msgpack.unpackb(ws.recv(timeout=10))
        assert note[:2] == [2, "error"] and "binary frame" in note[2][0][1]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)


@pytest.mark.slow
def test_a_half_sent_request_head_is_dropped(served: ServedViewer) -> None:
    with socket.create_connection(("127.0.0.1", served.http_port), timeout=20) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        s.settimeout(20)
        assert s.recv(100) == b""  # closed after HEAD_TIMEOUT, unanswered


def test_the_token_is_asked_over_the_websocket_too() -> None:
    srv = ServedViewer(token="s3cret").start()
    try:
        with connect(srv.ws) as ws:
            assert call(ws, 1, "graph.list")[2][1].startswith("unauthorized")
            assert call(ws, 2, "initialize", {"token": "wrong"})[2][1].startswith("unauthorized")
            assert call(ws, 3, "initialize", {"token": "s3cret"})[2] is None
            assert call(ws, 4, "graph.list")[3][0]["name"] == "demo"
    finally:
        srv.stop()


def test_http_addresses_are_for_listening_only() -> None:
    assert str(parse_url("http://127.0.0.1:7451", listen=True)) == "http://127.0.0.1:7451"
    with pytest.raises(ValueError, match="web viewer's address, for a browser"):
        parse_url("http://127.0.0.1:7451")
    with pytest.raises(ValueError, match="without a path"):
        parse_url("http://127.0.0.1:7451/rpc", listen=True)
    with pytest.raises(ValueError, match="needs a host and a port"):
        parse_url("http://127.0.0.1", listen=True)


def test_the_python_client_does_not_take_the_viewers_address(served: ServedViewer) -> None:
    from opgraph_client import Client

    with pytest.raises(ValueError, match="a client connects to the server's tcp://"):
        Client(served.http.rstrip("/"))
