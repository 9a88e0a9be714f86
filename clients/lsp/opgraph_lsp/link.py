"""The language server's connection to the graph server: connect, reconnect with backoff, and
(with ``--spawn``) start a graph server when none answers.

`GraphLink.run` loops for the life of the language server. Each time a connection is made it
calls ``on_up(client)``; when it ends, ``on_down(reason)``; between attempts it waits, doubling
the wait from `FIRST_WAIT` up to `LONGEST_WAIT`, so a graph server that is down costs one
attempt every half minute, not a flood. Notifications from the graph server go to
``on_notification(method, payload)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from opgraph_client import AsyncClient, ClientError

log = logging.getLogger(__name__)

DEFAULT_URL = "tcp://127.0.0.1:7450"
FIRST_WAIT = 0.5
LONGEST_WAIT = 30.0
SPAWN_READY_TIMEOUT = 20.0


def check_url(url: str) -> str:
    """``url`` if it is a graph server address (``tcp://host:port``, ``unix:///path``);
    ValueError naming what is wrong otherwise."""
    from opgraph_server.address import parse_url

    parse_url(url)
    return url


class NotConnected(Exception):
    """There is no connection to the graph server at the moment."""


class GraphLink:
    """A connection to the graph server at ``url`` that comes back by itself."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        spawn: bool = False,
        on_up: Callable[[AsyncClient], Awaitable[None]] | None = None,
        on_down: Callable[[str, bool], Awaitable[None]] | None = None,
        on_notification: Callable[[str, Any], None] | None = None,
        first_wait: float = FIRST_WAIT,
        longest_wait: float = LONGEST_WAIT,
    ) -> None:
        self.url = check_url(url)
        self.token = token
        self.spawn = spawn
        self.on_up = on_up
        self.on_down = on_down
        self.on_notification = on_notification
        self.first_wait = first_wait
        self.longest_wait = longest_wait
        self.client: AsyncClient | None = None
        self.info: dict[str, Any] = {}
        self.child: subprocess.Popen[bytes] | None = None
        self.attempts = 0  # connection attempts since the last success
        self._wake = asyncio.Event()
        self._stopped = False

    @property
    def connected(self) -> bool:
        return self.client is not None

    async def call(self, method: str, *args: Any, **options: Any) -> Any:
        """Call ``method`` on the graph server; `NotConnected` when there is none now."""
        client = self.client
        if client is None:
            raise NotConnected(f"not connected to the graph server at {self.url}")
        return await client.call(method, *args, **options)

    def retarget(self, url: str | None = None, token: str | None = None) -> None:
        """Use another address (or token) from now on: the connection is made again at once."""
        changed = False
        if url is not None and url != self.url:
            self.url, changed = check_url(url), True
        if token is not None and token != self.token:
            self.token, changed = token, True
        if changed:
            self.attempts = 0
            client = self.client
            if client is not None:
                asyncio.get_running_loop().create_task(client.close())
            self._wake.set()

    async def stop(self) -> None:
        """Close the connection and stop a graph server this link started."""
        self._stopped = True
        self._wake.set()
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        self._stop_child()

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect, until `stop`."""
        while not self._stopped:
            self._wake.clear()
            try:
                client = await self._connect()
            except (TimeoutError, ClientError, OSError) as exc:
                reason = str(exc)
                self.attempts += 1
                log.info("graph server at %s: %s (attempt %d)", self.url, reason, self.attempts)
                if self.on_down is not None:
                    await self.on_down(reason, False)
                await self._pause()
                continue
            self.attempts = 0
            self.client = client
            reason = f"{self.url} closed the connection"
            try:
                if self.on_up is not None:
                    await self.on_up(client)
                async for method, params in client.notifications():
                    if self.on_notification is not None:
                        payload = params[0] if isinstance(params, list) and params else params
                        try:
                            self.on_notification(method, payload)
                        except Exception:
                            log.exception("handling %s failed", method)
            except ClientError as exc:
                reason = str(exc)
            finally:
                self.client = None
                with contextlib.suppress(Exception):
                    await client.close()
            if self._stopped:
                break
            log.info("lost the graph server at %s: %s", self.url, reason)
            if self.on_down is not None:
                await self.on_down(reason, True)
            self.attempts += 1
            await self._pause()

    async def _pause(self) -> None:
        wait = min(self.longest_wait, self.first_wait * 2 ** max(0, self.attempts - 1))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    async def _connect(self) -> AsyncClient:
        try:
            return await self._open()
        except (ClientError, OSError):
            if not self.spawn:
                raise
        await self._start_child()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SPAWN_READY_TIMEOUT
        while True:
            try:
                return await self._open()
            except (ClientError, OSError):
                child = self.child
                if child is None or child.poll() is not None or loop.time() > deadline:
                    code = None if child is None else child.poll()
                    raise ClientError(f"the graph server started with --spawn did not answer "
                                      f"at {self.url}" + (f" (it exited with status {code})"
                                                          if code is not None else "")) from None
                await asyncio.sleep(0.1)

    async def _open(self) -> AsyncClient:
        client = await asyncio.wait_for(  # (reconnect=False: `run` is this link's reconnecting)
            AsyncClient.connect(self.url, initialize=False, reconnect=False), 10)
        options: dict[str, Any] = {"client": {"name": "opgraph-lsp"}, "errors": "structured"}
        token = self.token or os.environ.get("OPGRAPH_TOKEN") or None
        if token:
            options["token"] = token
        try:
            self.info = await asyncio.wait_for(client.call("initialize", options), 10)
        except BaseException:
            await client.close()
            raise
        return client

    async def _start_child(self) -> None:
        child = self.child
        if child is not None and child.poll() is None:
            return  # still starting (or running but not answering yet)
        command = [sys.executable, "-m", "opgraph", "serve", "--listen", self.url]
        log.info("starting a graph server: %s", " ".join(command))
        # Its stdout must not reach the editor: stdout carries the language server's messages.
        self.child = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=sys.stderr)

    def _stop_child(self) -> None:
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
