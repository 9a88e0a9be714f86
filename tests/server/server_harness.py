"""Real servers for tests: in-process (a thread with its own event loop) or a subprocess.

Shared by ``tests/server`` and ``tests/client`` (whose conftest puts this directory on
``sys.path``). Every socket read here has a timeout, so a server bug fails a test instead of
hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
from opgraph_server.demo import neuron
from opgraph_server.limits import Limits
from opgraph_server.server import Server

TIMEOUT = 10.0
"""Seconds any single wait in a test may take before it counts as a hang."""

# The seed's neuron: o = tanh(x1*w1 + x2*w2 + b), and d o / d leaf.
SEED = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0, "b": 6.8813735870195432}
SEED_O = 0.7071067811865476
SEED_GRADS = {"x1": -1.5, "w1": 1.0, "x2": 0.5, "w2": 0.0, "b": 0.5}


def short_socket_dir() -> str:
    """A fresh directory with a short path (Unix socket paths are limited to ~107 bytes)."""
    return tempfile.mkdtemp(prefix="og-", dir="/tmp")


class ThreadedServer:
    """An `opgraph_server.server.Server` on a background thread's own event loop.

    Listens on a free loopback TCP port (``self.tcp``) and, with ``unix``, on a temporary
    Unix socket (``self.unix``). ``run(coro)`` runs a coroutine on the server's loop (to look at
    its state safely); ``stop()`` closes everything.
    """

    def __init__(self, limits: Limits | None = None, *, token: str | None = None,
                 demo: bool = True, unix: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="opgraph-test-server",
                                       daemon=True)
        self.thread.start()
        self._dir = short_socket_dir() if unix else None
        self.server = Server(limits or Limits(), token)
        self.tcp = ""
        self.unix = ""
        try:
            self.run(self._start(demo))
        except BaseException:
            self.stop()
            raise

    async def _start(self, demo: bool) -> None:
        if demo:
            self.server.add_graph(neuron())
        self.tcp = await self.server.listen("tcp://127.0.0.1:0")
        if self._dir is not None:
            self.unix = await self.server.listen(f"unix://{self._dir}/s.sock")

    @property
    def port(self) -> int:
        return int(self.tcp.rsplit(":", 1)[1])

    @property
    def unix_path(self) -> str:
        return self.unix[len("unix://"):]

    def run(self, coro: Any, timeout: float = TIMEOUT) -> Any:
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, func: Any, *args: Any) -> Any:
        """Call ``func(*args)`` on the server's loop (between two of its steps)."""

        async def call() -> Any:
            return func(*args)

        return self.run(call())

    def session_count(self) -> int:
        return self.sync(lambda: len(self.server.sessions))

    def wait_sessions(self, count: int, timeout: float = TIMEOUT) -> None:
        """Wait until the server holds exactly ``count`` sessions (it forgets closed ones)."""
        deadline = time.monotonic() + timeout
        while self.session_count() != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the server holds {self.session_count()} sessions, "
                                     f"expected {count}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.run(self._close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def _close(self) -> None:
        await self.server.close()
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        if rest:  # closed connections end by themselves; cancel only what hangs on
            _, pending = await asyncio.wait(rest, timeout=5)
            for task in pending:
                task.cancel()


def opgraph_command(*args: str) -> list[str]:
    """``opgraph ARGS`` run with this interpreter (the project is installed in it)."""
    return [sys.executable, "-m", "opgraph", *args]


class ProcessServer:
    """``opgraph serve --listen ...`` as a real subprocess; ``self.urls`` as it reported them."""

    def __init__(self, *args: str, listen: tuple[str, ...] = ("tcp://127.0.0.1:0",)) -> None:
        command = opgraph_command("serve", *(a for u in listen for a in ("--listen", u)), *args)
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=env_without_token())
        self.stderr_lines: list[str] = []
        self._ready = threading.Event()
        self.urls: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self._ready.wait(30):
            self.stop()
            raise AssertionError("the server did not say where it listens:\n"
                                 + "\n".join(self.stderr_lines))
        if not self.urls:
            self.stop()
            raise AssertionError("the server exited:\n" + "\n".join(self.stderr_lines))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stderr_lines.append(line)
            found = re.search(r"listening on (.*?)(?: with graph| \(Ctrl-C)", line)
            if found and not self._ready.is_set():
                self.urls = found.group(1).split(", ")
                self._ready.set()
        self._ready.set()

    @property
    def url(self) -> str:
        return self.urls[0]

    def stop(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL); returns what it printed on stdout."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)
        out = self.process.stdout.read() if self.process.stdout else b""
        self._reader.join(TIMEOUT)
        return out.decode(errors="replace")


# --- a raw MessagePack-RPC connection ------------------------------------------------------------


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def connect(url: str, timeout: float = TIMEOUT) -> socket.socket:
    """A plain socket connected to ``tcp://host:port`` or ``unix:///path``."""
    if url.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(url[len("unix://"):])
        return sock
    host, port = url[len("tcp://"):].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


class Raw:
    """A hand-driven connection: send any bytes, read whole messages, see when it closes."""

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.sock = connect(url, timeout)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.next_id = 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_obj(self, obj: Any) -> None:
        self.sock.sendall(pack(obj))

    def request(self, method: str | bytes, *params: Any, msgid: int | None = None) -> int:
        """Send a request; return its msgid."""
        if msgid is None:
            msgid = self.next_id
            self.next_id += 1
        self.send_obj([0, msgid, method, list(params)])
        return msgid

    def read(self, timeout: float = TIMEOUT) -> Any:
        """The next whole message; AssertionError if the peer closes or nothing comes."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.unpacker:
                return message
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no message within {timeout} s") from None
            if not data:
                raise AssertionError("the server closed the connection")
            self.unpacker.feed(data)

    def response(self, msgid: int, timeout: float = TIMEOUT) -> tuple[Any, Any]:
        """``(error, result)`` of the response to ``msgid`` (notifications are skipped)."""
        while True:
            message = self.read(timeout)
            if message[0] == 1 and message[1] == msgid:
                return message[2], message[3]

    def call(self, method: str | bytes, *params: Any) -> tuple[Any, Any]:
        return self.response(self.request(method, *params))

    def ok(self, method: str, *params: Any) -> Any:
        error, result = self.call(method, *params)
        assert error is None, error
        return result

    def closed(self, timeout: float = TIMEOUT) -> bool:
        """Read until the server closes the connection (True) or ``timeout`` passes (False).

        Whatever arrives meanwhile is kept in ``self.received``.
        """
        self.received: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True
            self.unpacker.feed(data)
            self.received.extend(self.unpacker)


def ids_by_label(raw: Raw, graph: str = "demo") -> dict[str, int]:
    """``{label: id}`` of a graph's labelled nodes (ids depend on how the graph was built)."""
    return {n["label"]: n["id"] for n in raw.ok("graph.nodes", graph)["nodes"] if n["label"]}


def demo_state(url: str) -> tuple[int, list[dict[str, Any]]]:
    """The demo graph as a fresh client sees it: ``(version, node records)``."""
    with Raw(url) as raw:
        result = raw.ok("node.get", "demo", list(range(10)))
    return result["version"], result["nodes"]


@contextlib.contextmanager
def intact(url: str) -> Iterator[None]:
    """Assert that, after the block, a fresh client is answered and sees the demo unchanged."""
    before = demo_state(url)
    yield
    assert demo_state(url) == before


def wait_until(predicate: Any, timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def env_without_token() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OPGRAPH_TOKEN", None)
    return env


__all__ = [
    "SEED",
    "SEED_GRADS",
    "SEED_O",
    "TIMEOUT",
    "ProcessServer",
    "Raw",
    "ThreadedServer",
    "connect",
    "demo_state",
    "env_without_token",
    "ids_by_label",
    "intact",
    "opgraph_command",
    "pack",
    "short_socket_dir",
    "wait_until",
]
