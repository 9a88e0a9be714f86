"""What the web viewer's tests share: a real ``opgraph serve`` with a TCP and an HTTP listener
(in a subprocess, so a test can stop it and start it again on the same ports), and Debian's
Chromium driven headless by Playwright (Playwright's own browser download cannot work here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if os.path.exists("/usr/bin/chromium") else None)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT = 60.0  # seconds for a server to start listening (a hang guard)
WAIT_MS = 15_000  # how long a page may take to show what a test waits for (a hang guard)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, as the tests and the benchmark run it."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      chromium_sandbox=False, args=CHROMIUM_ARGS)


class ServedViewer:
    """``opgraph serve --listen tcp://... --listen http://...`` in a subprocess."""

    def __init__(self, *, token: str | None = None, demo: bool = True,
                 extra: tuple[str, ...] = ()) -> None:
        self.token = token
        self.demo = demo
        self.extra = extra
        self.tcp_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.tcp_port:  # (a port just freed can be handed out again)
            self.http_port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def tcp(self) -> str:
        return f"tcp://127.0.0.1:{self.tcp_port}"

    @property
    def http(self) -> str:
        """The page's address."""
        return f"http://127.0.0.1:{self.http_port}/"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/rpc"

    def start(self) -> ServedViewer:
        env = {k: v for k, v in os.environ.items() if k != "OPGRAPH_TOKEN"}
        if self.token is not None:
            env["OPGRAPH_TOKEN"] = self.token
        command = [sys.executable, "-m", "opgraph", "serve", "--listen", self.tcp,
                   "--listen", f"http://127.0.0.1:{self.http_port}", "--log-level", "warning",
                   *(() if self.demo else ("--no-demo",)), *self.extra]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError(f"the server exited before listening: {''.join(self.log)}")
            self.log.append(line)
            if "listening on" in line:
                break
        else:
            raise RuntimeError(f"the server did not listen within {START_TIMEOUT} s")
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        proc = self.proc
        if proc is None or proc.stderr is None:
            return
        for line in proc.stderr:
            self.log.append(line)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def client(self) -> Any:
        from opgraph_client import Client

        return Client(self.tcp, token=self.token)


def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot (in $OPGRAPH_SCREENSHOTS, else a temporary folder) for a person to
    look at; returns its path."""
    folder = Path(os.environ.get("OPGRAPH_SCREENSHOTS") or Path(
        os.environ.get("TMPDIR", "/tmp")) / "opgraph-web-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    with contextlib.suppress(Exception):
        page.screenshot(path=str(path))
    return path
