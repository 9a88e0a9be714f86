"""What the language server's tests share: scripts that build graphs line by line and publish
them (as a user's script does), and ``opgraph lsp`` run over stdio and driven by pytest-lsp's
client with a real editor's capabilities. (The fixtures are in this folder's conftest.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import runpy
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from opgraph_client import Client
from opgraph_lsp.paths import path_to_uri
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pytest_lsp.client import make_test_lsp_client

import opgraph

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))


TIMEOUT = 15.0
NEOVIM = "neovim@v0.10.0"
VSCODE = "visual-studio-code@v1.65.2"

# The seed's neuron, one node per line, as a user writes it (line numbers matter: the tests
# name them). Line 9 makes x1*w1, line 13 makes n, line 14 makes o.
NEURON = textwrap.dedent('''\
    from opgraph import Value

    x1 = Value(2.0, label="x1")
    x2 = Value(0.0, label="x2")
    w1 = Value(-3.0, label="w1")
    w2 = Value(1.0, label="w2")
    b = Value(6.8813735870195432, label="b")

    x1w1 = x1 * w1; x1w1.label = "x1*w1"
    x2w2 = x2 * w2; x2w2.label = "x2*w2"
    x1w1x2w2 = x1w1 + x2w2; x1w1x2w2.label = "x1*w1 + x2*w2"

    n = x1w1x2w2 + b; n.label = "n"
    o = n.tanh(); o.label = "o"
    o.backward()
''')
LINE = {"x1": 2, "x2": 3, "w1": 4, "w2": 5, "b": 6, "x1*w1": 8, "x2*w2": 9, "sum": 10,
        "n": 12, "o": 13}
"""The 0-based line of each node of `NEURON`."""

# A neuron driven into saturation: tanh(20) passes back almost no gradient. Line 4 makes o.
SATURATED = textwrap.dedent('''\
    from opgraph import Value

    x = Value(4.0, label="x"); w = Value(5.0, label="w")
    n = x * w; n.label = "n"
    o = n.tanh(); o.label = "o"
    o.backward()
''')

# Many nodes on one line (a sum over 500 products) and a few on others.
MANY = textwrap.dedent('''\
    from opgraph import Value

    xs = [Value(float(i) / 100) for i in range(500)]
    total = sum((x * x for x in xs), Value(0.0))
    out = total.tanh(); out.label = "out"
    out.backward()
''')


def run_script(path: Path, root: str = "o") -> opgraph.Value:
    """Run ``path`` with source tracking (each node remembers its line); its ``root``."""
    with opgraph.track_source():
        namespace = runpy.run_path(str(path), run_name="__opgraph_test__")
    return namespace[root]


def publish(url: str, name: str, path: Path, root: str = "o") -> dict[str, Any]:
    """Run the script ``path`` and publish its graph as ``name`` (as ``Client.publish`` does)."""
    value = run_script(path, root)
    with Client(url) as client:
        return client.publish(name, value)


def lsp_command(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "opgraph", "lsp", "--connect", url, "--log-level", "info",
            *extra]


class Editor:
    """A pytest-lsp client with what the tests look at: refreshes asked for, messages shown."""

    def __init__(self, client: LanguageClient) -> None:
        self.client = client
        self.refreshes = 0
        self.lens_refreshes = 0
        self.versions: dict[str, int] = {}

    @property
    def messages(self) -> list[lsp.ShowMessageParams]:
        return self.client.messages

    def open(self, path: Path, text: str | None = None) -> str:
        uri = path_to_uri(str(path))
        self.versions[uri] = 1
        self.client.text_document_did_open(lsp.DidOpenTextDocumentParams(
            lsp.TextDocumentItem(uri=uri, language_id="python", version=1,
                                 text=path.read_text() if text is None else text)))
        return uri

    def edit(self, uri: str, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        self.versions[uri] += 1
        self.client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
            [lsp.TextDocumentContentChangePartial(
                range=lsp.Range(lsp.Position(*start), lsp.Position(*end)), text=text)]))

    async def hints(self, uri: str, first: int = 0, last: int = 1000) -> list[lsp.InlayHint]:
        got = await asyncio.wait_for(self.client.text_document_inlay_hint_async(
            lsp.InlayHintParams(text_document=lsp.TextDocumentIdentifier(uri),
                                range=lsp.Range(lsp.Position(first, 0), lsp.Position(last, 0)))),
            TIMEOUT)
        return list(got or [])

    async def hover(self, uri: str, line: int) -> lsp.Hover | None:
        return await asyncio.wait_for(self.client.text_document_hover_async(lsp.HoverParams(
            lsp.TextDocumentIdentifier(uri), lsp.Position(line, 0))), TIMEOUT)

    async def command(self, name: str, *args: Any) -> Any:
        return await asyncio.wait_for(self.client.workspace_execute_command_async(
            lsp.ExecuteCommandParams(command=name, arguments=list(args))), 60)

    async def wait_for(self, probe: Callable[[], Any], what: str,
                       timeout: float = TIMEOUT) -> Any:
        """Await ``probe()`` (a coroutine function or plain) until it returns a true value."""
        deadline = time.monotonic() + timeout
        while True:
            got = probe()
            if asyncio.iscoroutine(got):
                got = await got
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def hints_by_line(self, uri: str) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for h in await self.hints(uri):
            label = h.label if isinstance(h.label, str) else "".join(p.value for p in h.label)
            out.setdefault(h.position.line, []).append(label)
        return out

    async def wait_hints(self, uri: str, predicate: Callable[[dict[int, list[str]]], bool],
                         what: str, timeout: float = TIMEOUT) -> dict[int, list[str]]:
        async def probe() -> Any:
            got = await self.hints_by_line(uri)
            return (got,) if predicate(got) else None  # (a tuple: true even when empty)

        return (await self.wait_for(probe, what, timeout))[0]


@contextlib.asynccontextmanager
async def editor(url: str, capabilities: str = NEOVIM, *, options: Any = None,
                 extra: tuple[str, ...] = ()) -> AsyncIterator[Editor]:
    """``opgraph lsp`` started over stdio, initialized with ``capabilities`` (a pytest-lsp
    client name) and ``options`` as initializationOptions; shut down and exited after."""
    holder: dict[str, Editor] = {}

    def factory() -> LanguageClient:
        client = make_test_lsp_client()

        @client.feature(lsp.WORKSPACE_INLAY_HINT_REFRESH)
        def refresh(ls: LanguageClient, params: None) -> None:
            holder["editor"].refreshes += 1

        @client.feature(lsp.WORKSPACE_CODE_LENS_REFRESH)
        def lens_refresh(ls: LanguageClient, params: None) -> None:
            holder["editor"].lens_refreshes += 1

        return client

    config = ClientServerConfig(server_command=lsp_command(url, *extra), client_factory=factory)
    client = await config.start()
    ed = holder["editor"] = Editor(client)
    try:
        await client.initialize_session(lsp.InitializeParams(
            capabilities=client_capabilities(capabilities), initialization_options=options,
            root_uri=None))
        yield ed
        await asyncio.wait_for(client.shutdown_session(), TIMEOUT)
        assert client._server.returncode == 0, "opgraph lsp did not exit with status 0"
    finally:
        await stop_server(client)


async def stop_server(client: LanguageClient) -> None:
    """End the language server process however the test went (pygls' stop only waits)."""
    process = client._server
    if process is not None and process.returncode is None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.shutdown_session(), 5)
        if process.returncode is None:
            process.kill()
    await client.stop()
