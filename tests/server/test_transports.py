"""Transports and set-up: Unix socket permissions, the token, stdio, a real ``opgraph serve``
subprocess, and ``opgraph call``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from opgraph_client import AsyncClient, Client, UnauthorizedError, UnknownGraphError
from opgraph_server.address import parse_url
from opgraph_server.methods import METHODS
from server_harness import (
    SEED_O,
    TIMEOUT,
    ProcessServer,
    Raw,
    ThreadedServer,
    env_without_token,
    intact,
    opgraph_command,
    pack,
    short_socket_dir,
    wait_until,
)
from typer.testing import CliRunner

import opgraph.fileformat
from opgraph.cli import app

TOKEN = "s3cret-token"


# --- Unix socket ---------------------------------------------------------------------------


def test_unix_socket_is_0600(server: ThreadedServer) -> None:
    mode = os.stat(server.unix_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_unix_socket_path_handling() -> None:
    directory = short_socket_dir()
    path = f"{directory}/s.sock"
    # A stale socket file (nobody listening) is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    srv = ThreadedServer(unix=False)
    try:
        url = srv.run(srv.server.listen(f"unix://{path}"))
        assert url == f"unix://{path}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with Raw(url) as raw:
            assert raw.ok("graph.info", "demo")["nodes"] == 10
        # A live one is not taken over, and a file that is not a socket is not clobbered.
        other = ThreadedServer(unix=False, demo=False)
        try:
            with pytest.raises(ValueError, match="another server is listening"):
                other.run(other.server.listen(f"unix://{path}"))
            regular = f"{directory}/file"
            with open(regular, "w") as f:
                f.write("keep me")
            with pytest.raises(ValueError, match="not a socket"):
                other.run(other.server.listen(f"unix://{regular}"))
            with open(regular) as f:
                assert f.read() == "keep me"
        finally:
            other.stop()
    finally:
        srv.stop()
    assert not os.path.exists(path)  # removed on close


def test_parse_url() -> None:
    assert str(parse_url("tcp://127.0.0.1:7450")) == "tcp://127.0.0.1:7450"
    assert str(parse_url("tcp://[::1]:80")) == "tcp://[::1]:80"
    assert str(parse_url("unix:///tmp/x.sock")) == "unix:///tmp/x.sock"
    for bad in ("tcp://127.0.0.1", "tcp://:80", "http://x:1", "unix://", "tcp://h:99999", 5):
        with pytest.raises(ValueError):
            parse_url(bad)  # type: ignore[arg-type]


def test_listening_beyond_loopback_warns(caplog: pytest.LogCaptureFixture) -> None:
    srv = ThreadedServer(unix=False, demo=False)
    try:
        with caplog.at_level(logging.WARNING, logger="opgraph.server"):
            url = srv.run(srv.server.listen("tcp://0.0.0.0:0"))
        assert url.startswith("tcp://0.0.0.0:")
        assert "reachable from other machines" in caplog.text
    finally:
        srv.stop()


# --- the token -------------------------------------------------------------------------------


@pytest.fixture
def guarded() -> Iterator[ThreadedServer]:
    srv = ThreadedServer(token=TOKEN)
    yield srv
    srv.stop()


def test_token_required_before_anything(guarded: ThreadedServer) -> None:
    with Raw(guarded.tcp) as raw:
        for name in [*sorted(set(METHODS) - {"initialize"}), "no.such.method", ""]:
            error, result = raw.call(name)
            assert result is None
            assert error[1].startswith("unauthorized: "), (name, error)
        for options in ({}, {"token": "wrong"}, {"token": TOKEN.upper()}, {"token": 12345},
                        {"token": TOKEN.encode()}, {"token": None}, {"token": TOKEN + "x"}):
            error, _ = raw.call("initialize", options)
            assert error[1].startswith("unauthorized: "), options
            error, _ = raw.call("graph.list")
            assert error[1].startswith("unauthorized: ")
        info = raw.ok("initialize", {"token": TOKEN})
        assert info["name"] == "opgraph"
        assert raw.ok("graph.info", "demo")["nodes"] == 10
    # A new connection starts unauthorised again.
    with Raw(guarded.unix) as raw:
        assert raw.call("graph.list")[0][1].startswith("unauthorized: ")


def test_token_structured_error(guarded: ThreadedServer) -> None:
    with Raw(guarded.tcp) as raw:
        error, _ = raw.call("initialize", {"token": "nope", "errors": "structured"})
        assert error[1].startswith("unauthorized: ")  # refused: the session keeps its shape
        raw.ok("initialize", {"token": TOKEN, "errors": "structured"})
        error, _ = raw.call("graph.info", "nope")
        assert error["name"] == "unknown_graph" and error["code"] == -32010


def test_clients_with_and_without_the_token(guarded: ThreadedServer) -> None:
    with pytest.raises(UnauthorizedError):
        Client(guarded.tcp)
    with pytest.raises(UnauthorizedError):
        Client(guarded.unix, token="wrong")
    with Client(guarded.unix, token=TOKEN) as c:
        assert c.call("graph.info", "demo")["nodes"] == 10

    async def scenario() -> int:
        with pytest.raises(UnauthorizedError):
            await AsyncClient.connect(guarded.tcp, token="wrong")
        async with await AsyncClient.connect(guarded.tcp, token=TOKEN) as c:
            return (await c.call("graph.info", "demo"))["nodes"]

    assert asyncio.run(asyncio.wait_for(scenario(), TIMEOUT)) == 10


# --- stdio ------------------------------------------------------------------------------------

STDIO = opgraph_command("serve", "--stdio", "--log-level", "debug")


def test_stdio_client_spawn() -> None:
    with Client.spawn(STDIO, timeout=TIMEOUT) as c:
        assert c.server_info["name"] == "opgraph"
        nodes = c.call("graph.nodes", "demo")["nodes"]
        o = next(n for n in nodes if n["label"] == "o")
        assert o["data"] == pytest.approx(SEED_O)
        c.call("graph.subscribe", "demo")
        made = c.call("node.leaf", "demo", 1.0)
        got: list[tuple[str, list[Any]]] = []
        wait_until(lambda: got.extend(c.poll(0.05)) or any(m == "graph.diagnostics"
                                                           for m, _ in got))
        assert got[0] == ("graph.changed", [{"graph": "demo", "version": made["version"],
                                             "nodes": 11}])
        with pytest.raises(UnknownGraphError) as err:
            c.call("graph.info", "nope")
        assert err.value.name == "unknown_graph"


def test_stdio_async_client_spawn() -> None:
    async def scenario() -> tuple[Any, Any]:
        async with await AsyncClient.spawn(STDIO) as c:
            both = await asyncio.gather(c.call("graph.info", "demo"), c.call("graph.list"))
            return both

    info, listed = asyncio.run(asyncio.wait_for(scenario(), TIMEOUT * 2))
    assert info["nodes"] == 10 and [g["name"] for g in listed] == ["demo"]


def test_stdio_stdout_carries_only_protocol_bytes() -> None:
    requests = [
        [0, 1, "initialize", [{"client": {"name": "test"}}]],
        [2, "nvim_set_client_info", ["x", {}, "remote", {}, {}]],
        [0, 2, "graph.info", ["nope"]],           # an error: logged
        [0, 3, "node.leaf", ["demo", 1.0]],
        [0, 4, "graph.render", ["demo", {"format": "dot"}]],
        [0, 5, "graph.analyze", ["demo"]],
        [0, 6, "shutdown", []],
    ]
    done = subprocess.run(STDIO, input=b"".join(pack(r) for r in requests),
                          capture_output=True, timeout=60, env=env_without_token())
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(done.stdout)
    messages = list(unpacker)
    assert [m[:2] for m in messages] == [[1, i] for i in range(1, 7)], done.stdout[:200]
    assert unpacker.tell() == len(done.stdout)  # nothing but these messages
    assert messages[1][2][1].startswith("unknown_graph: ")
    assert "listening on stdio" in done.stderr.decode()
    assert done.returncode == 0


def test_stdio_garbage_ends_the_server() -> None:
    done = subprocess.run(STDIO, input=b"\xc1 not msgpack", capture_output=True, timeout=60,
                          env=env_without_token())
    assert done.returncode == 0
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(done.stdout)
    for message in unpacker:
        assert message[0] == 2 and message[1] == "error"
    assert unpacker.tell() == len(done.stdout)


# --- a real `opgraph serve` subprocess --------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[ProcessServer]:
    directory = short_socket_dir()
    proc = ProcessServer("--max-nodes", "100", "--max-message-mb", "1",
                         listen=("tcp://127.0.0.1:0", f"unix://{directory}/p.sock"))
    yield proc
    proc.stop()


def test_subprocess_server(served: ProcessServer) -> None:
    tcp, unix = served.urls
    assert tcp.startswith("tcp://127.0.0.1:") and unix.startswith("unix://")
    assert stat.S_IMODE(os.stat(unix[len("unix://"):]).st_mode) == 0o600
    with Client(tcp) as c:
        assert c.server_info["limits"]["max_nodes"] == 100
        assert c.server_info["limits"]["max_message_bytes"] == 1024 * 1024
        assert c.call("graph.info", "demo")["nodes"] == 10
    with intact(tcp), Raw(unix) as raw:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it may close early
            raw.send(pack([0, 1, "graph.create", ["x" * (2 * 1024 * 1024)]]))
        assert raw.closed()


def test_subprocess_pynvim(served: ProcessServer) -> None:
    from pynvim.msgpack_rpc import tcp_session
    from test_method_errors import in_thread

    port = int(served.urls[0].rsplit(":", 1)[1])

    def talk() -> tuple[Any, str]:
        session = tcp_session("127.0.0.1", port)
        try:
            listed = session.request("graph.list")
            try:
                session.request("node.apply", "demo", "sofplus", [0])
            except Exception as exc:
                return listed, str(exc)
            return listed, ""
        finally:
            session.close()

    listed, error = in_thread(talk)
    assert [g["name"] for g in listed] == ["demo"]
    assert error.startswith("unknown_op: no op named 'sofplus'")


def test_subprocess_ctrl_c_is_clean() -> None:
    directory = short_socket_dir()
    path = f"{directory}/c.sock"
    proc = ProcessServer("--no-demo", listen=(f"unix://{path}",))
    try:
        with Raw(proc.url) as raw:
            assert raw.ok("graph.list") == []
            proc.process.send_signal(signal.SIGINT)
            assert raw.closed()
        assert proc.process.wait(TIMEOUT) == 0
    finally:
        proc.stop()
    assert not os.path.exists(path)
    assert "Traceback" not in "\n".join(proc.stderr_lines)


# --- opgraph call -------------------------------------------------------------------------------


def test_cli_call(server: ThreadedServer) -> None:
    runner = CliRunner(env={"OPGRAPH_TOKEN": None})
    result = runner.invoke(app, ["call", server.tcp, "graph.info", "demo"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["nodes"] == 10
    result = runner.invoke(app, ["call", server.unix, "node.leaf", "demo", "2.5",
                                 '{"label": "from cli"}'])
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    result = runner.invoke(app, ["call", server.tcp, "node.get", "demo", f"[{made['id']}]"])
    assert json.loads(result.stdout)["nodes"][0]["label"] == "from cli"
    # Errors: one line on stderr, exit 1, nothing on stdout.
    result = runner.invoke(app, ["call", server.tcp, "graph.info", "nope"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: unknown_graph: no graph named 'nope'")
    result = runner.invoke(app, ["call", server.tcp, "no.such"])
    assert result.exit_code == 1 and "method_not_found" in result.stderr
    # A bad JSON argument is bad usage: exit 2, before connecting.
    result = runner.invoke(app, ["call", server.tcp, "node.get", "demo", "[1, 2"])
    assert result.exit_code == 2 and "not valid JSON" in result.stderr
    # No server there: exit 1.
    result = runner.invoke(app, ["call", "tcp://127.0.0.1:1", "graph.list"])
    assert result.exit_code == 1 and "cannot connect" in result.stderr
    # Binary results come out as base64, whole: here the bytes of a .opg file.
    result = runner.invoke(app, ["call", server.tcp, "graph.export", "demo",
                                 '{"format": "msgpack"}'])
    assert result.exit_code == 0
    data = base64.b64decode(json.loads(result.stdout)["base64"])
    assert opgraph.fileformat.loads(data).find("o")[0].data == pytest.approx(0.7071067811865476)


def test_cli_call_subprocess(served: ProcessServer) -> None:
    env = env_without_token()
    ok = subprocess.run(opgraph_command("call", served.url, "graph.list"), capture_output=True,
                        timeout=60, env=env)
    assert ok.returncode == 0, ok.stderr
    assert [g["name"] for g in json.loads(ok.stdout)] == ["demo"]
    bad = subprocess.run(opgraph_command("call", served.url, "graph.info", "nope"),
                         capture_output=True, timeout=60, env=env)
    assert bad.returncode == 1 and bad.stdout == b""
    assert bad.stderr.decode().startswith("error: unknown_graph: ")
    usage = subprocess.run(opgraph_command("call", served.url, "node.get", "demo", "{oops"),
                           capture_output=True, timeout=60, env=env)
    assert usage.returncode == 2 and b"not valid JSON" in usage.stderr


def test_cli_serve_refuses_bad_arguments() -> None:
    runner = CliRunner(env={"OPGRAPH_TOKEN": None})
    for args in (["--listen", "ftp://x:1"], ["--stdio", "--listen", "tcp://127.0.0.1:0"],
                 ["--log-level", "loud"], ["--max-nodes", "0"]):
        result = runner.invoke(app, ["serve", *args])
        assert result.exit_code == 2, (args, result.output)


def test_server_close_ends_sessions() -> None:
    srv = ThreadedServer()
    raw = Raw(srv.tcp)
    assert raw.ok("graph.list")
    srv.stop()
    assert raw.closed()
    raw.close()
    assert srv.server.sessions == set()
