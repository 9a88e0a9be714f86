"""The language server's lifecycle: a graph server that is down, goes away and comes back, or is
started by ``--spawn``; malformed messages and requests out of their time answered with the
JSON-RPC errors the spec names; the exit status."""

from __future__ import annotations

import asyncio
import json
import queue
import socket
import subprocess
import threading
import time
from typing import Any

import pytest
from lsp_harness import LINE, NEURON, TIMEOUT, editor, lsp_command, publish
from lsprotocol import types as lsp
from server_harness import ProcessServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def warnings_of(ed: Any) -> list[str]:
    return [m.message for m in ed.messages if m.type == lsp.MessageType.Warning]


@pytest.mark.asyncio
async def test_a_graph_server_that_goes_away_and_comes_back(tmp_path):
    path = tmp_path / "neuron.py"
    path.write_text(NEURON)
    url = f"tcp://127.0.0.1:{free_port()}"
    server = ProcessServer("--no-demo", listen=(url,))
    try:
        publish(url, "neuron", path)
        async with editor(url) as ed:
            uri = ed.open(path)
            await ed.wait_hints(uri, lambda h: LINE["o"] in h, "hints")
            server.stop()
            await ed.wait_for(lambda: warnings_of(ed), "the lost-server message")
            (message,) = warnings_of(ed)
            assert f"lost the graph server at {url}" in message
            await ed.wait_hints(uri, lambda h: not h, "the hints cleared")
            await asyncio.sleep(3)  # a few reconnection attempts: still one message
            assert len(warnings_of(ed)) == 1
            assert await ed.hover(uri, LINE["o"]) is None  # and it answers meanwhile
            server = ProcessServer("--no-demo", listen=(url,))
            publish(url, "neuron", path)
            await ed.wait_hints(uri, lambda h: LINE["o"] in h, "hints from the new server",
                                timeout=45)
            assert any(m.type == lsp.MessageType.Info and "connected" in m.message
                       for m in ed.messages)
            assert len(warnings_of(ed)) == 1
    finally:
        server.stop()


@pytest.mark.asyncio
async def test_a_graph_server_down_at_start_is_one_message_and_no_crash(graph_server, tmp_path):
    path = tmp_path / "neuron.py"
    path.write_text(NEURON)
    dead = f"tcp://127.0.0.1:{free_port()}"
    async with editor(dead) as ed:
        uri = ed.open(path)
        await ed.wait_for(lambda: warnings_of(ed), "the cannot-reach message")
        (message,) = warnings_of(ed)
        assert f"cannot reach the graph server at {dead}" in message
        assert "opgraph serve" in message and "--spawn" in message
        assert await ed.hints(uri) == []
        assert await ed.hover(uri, 0) is None
        await asyncio.sleep(2)
        assert len(warnings_of(ed)) == 1
        # pointed at a live server by a setting: it connects and shows the graph
        publish(graph_server.tcp, "neuron", path)
        ed.client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
            settings={"url": graph_server.tcp}))
        await ed.wait_hints(uri, lambda h: LINE["o"] in h, "hints after the setting")


@pytest.mark.asyncio
async def test_spawn_starts_a_graph_server_and_stops_it_at_exit(tmp_path):
    path = tmp_path / "neuron.py"
    path.write_text(NEURON)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    async with editor(url, extra=("--spawn",)) as ed:
        uri = ed.open(path)

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                    # (Linux may connect a socket to itself when nothing listens there)
                    return probe.getsockname() != probe.getpeername()
            except OSError:
                return False

        await ed.wait_for(listening, "the spawned graph server", timeout=30)
        publish(url, "neuron", path)
        await ed.wait_hints(uri, lambda h: LINE["o"] in h, "hints from the spawned server")
        assert not warnings_of(ed)
    deadline = time.monotonic() + TIMEOUT
    while listening() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not listening()  # stopped with the language server


# --- malformed messages -------------------------------------------------------------------------


class RawLsp:
    """``opgraph lsp`` on pipes, spoken to byte by byte."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(lsp_command(url), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.messages: queue.Queue[Any] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        out = self.process.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    self.messages.put(None)
                    return
                if line.strip() == b"":
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            assert length is not None
            self.messages.put(json.loads(out.read(length)))

    def send_bytes(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send_body(self, body: bytes) -> None:
        self.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def send(self, message: Any) -> None:
        self.send_body(json.dumps(message).encode())

    def request(self, msgid: Any, method: str, params: Any = None) -> None:
        message = {"jsonrpc": "2.0", "id": msgid, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def next(self, want: Any = "any") -> dict[str, Any]:
        """The next message with id ``want`` (skipping notifications and others)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            assert message is not None, "the language server closed its output"
            if want == "any" or ("method" not in message and message.get("id") == want):
                return message

    def error(self, want: Any) -> tuple[int, str]:
        message = self.next(want)
        assert "error" in message, message
        return message["error"]["code"], message["error"]["message"]

    def initialize(self) -> None:
        self.request(1, "initialize", {"processId": None, "rootUri": None,
                                       "capabilities": {}})
        assert "capabilities" in self.next(1)["result"]
        self.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})

    def close(self) -> int:
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            return self.process.wait(TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def raw() -> Any:
    r = RawLsp(f"tcp://127.0.0.1:{free_port()}")
    yield r
    r.close()


def test_requests_before_initialize_get_server_not_initialized(raw):
    raw.request(7, "textDocument/hover", {"textDocument": {"uri": "file:///x.py"},
                                          "position": {"line": 0, "character": 0}})
    code, message = raw.error(7)
    assert code == -32002 and "initialize" in message
    raw.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {}})  # dropped
    raw.initialize()
    raw.request(2, "initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    assert raw.error(2)[0] == -32600  # a second initialize


def test_malformed_messages_get_the_spec_error_and_the_server_goes_on(raw):
    raw.initialize()
    raw.send_body(b"{not json")
    code, message = raw.error(None)
    assert code == -32700 and "parse error" in message
    raw.send_body(b"\xff\xfe")
    assert raw.error(None)[0] == -32700
    raw.send_bytes(b"Content-Type: application/json\r\n\r\n")  # no Content-Length
    assert raw.error(None) == (-32700, "malformed message header: no Content-Length")
    raw.send([{"jsonrpc": "2.0", "id": 3, "method": "shutdown"}])  # a batch
    assert raw.error(None)[0] == -32600
    raw.send({"jsonrpc": "1.0", "id": 4, "method": "shutdown"})
    assert raw.error(4)[0] == -32600
    raw.send({"jsonrpc": "2.0", "id": 5, "method": 12})
    assert raw.error(5)[0] == -32600
    raw.send({"jsonrpc": "2.0", "id": {"a": 1}, "method": "shutdown"})
    assert raw.error(None)[0] == -32600
    raw.request(6, "textDocument/hover", {"textDocument": {"uri": 3}})  # wrong params
    code, message = raw.error(6)
    assert code == -32602 and "textDocument/hover" in message
    raw.request(8, "no/such/method", {})
    assert raw.error(8)[0] == -32601
    raw.request(9, "workspace/executeCommand", {"command": "opgraph.nope", "arguments": []})
    assert raw.error(9)[0] == -32602
    raw.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"x": 1}})
    # still serving: a real request after all that
    raw.request(10, "textDocument/hover", {"textDocument": {"uri": "file:///x.py"},
                                           "position": {"line": 0, "character": 0}})
    assert raw.next(10) == {"jsonrpc": "2.0", "id": 10, "result": None}
    raw.request(11, "shutdown")
    assert raw.next(11)["result"] is None
    raw.request(12, "textDocument/hover", {"textDocument": {"uri": "file:///x.py"},
                                           "position": {"line": 0, "character": 0}})
    code, message = raw.error(12)
    assert code == -32600 and "shut down" in message
    raw.send({"jsonrpc": "2.0", "method": "exit"})
    assert raw.process.wait(TIMEOUT) == 0


def test_exit_without_shutdown_is_status_1_and_end_of_input_too(raw):
    raw.initialize()
    raw.send({"jsonrpc": "2.0", "method": "exit"})
    assert raw.process.wait(TIMEOUT) == 1
    other = RawLsp(f"tcp://127.0.0.1:{free_port()}")
    other.initialize()
    assert other.close() == 1  # stdin closed without shutdown


def test_over_tcp_one_editor_is_served_like_over_stdio():
    import re

    process = subprocess.Popen(
        lsp_command(f"tcp://127.0.0.1:{free_port()}", "--tcp", "--port", "0"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        line = process.stderr.readline().decode()
        found = re.search(r"opgraph lsp listening on 127\.0\.0\.1:(\d+) \(one editor\)", line)
        assert found, line
        with socket.create_connection(("127.0.0.1", int(found.group(1))), timeout=TIMEOUT) as s:
            stream = s.makefile("rwb")

            def send(message: dict) -> None:
                body = json.dumps(message).encode()
                stream.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
                stream.flush()

            def receive(want: int) -> dict:
                while True:
                    length = 0
                    while (header := stream.readline().strip()):
                        if header.lower().startswith(b"content-length:"):
                            length = int(header.split(b":")[1])
                    message = json.loads(stream.read(length))
                    if message.get("id") == want and "method" not in message:
                        return message

            send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"processId": None, "rootUri": None, "capabilities": {}}})
            caps = receive(1)["result"]["capabilities"]
            assert caps["inlayHintProvider"] and caps["hoverProvider"]
            assert set(caps["executeCommandProvider"]["commands"]) == {
                "opgraph.gradcheck", "opgraph.render", "opgraph.diagnostics"}
            send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
            send({"jsonrpc": "2.0", "id": 2, "method": "shutdown"})
            assert receive(2)["result"] is None
            send({"jsonrpc": "2.0", "method": "exit"})
            assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
