"""``opgraph lsp``: a language server (LSP 3.17, on pygls 2) that shows a graph server's values,
gradients and diagnostics beside the code that made them, in any editor.

It is a client of the graph server (`opgraph_lsp.link`). It finds the graphs whose nodes were
created in the open documents, subscribes to them, and keeps, for each document, what its lines
show (`opgraph_lsp.views.LineData`); requests are answered from that, so they cost nothing that
grows with the graphs. See docs/editors.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types as lsp
from opgraph_client import AsyncClient, ClientError, ServerError
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import RPCNotification, RPCRequest

from opgraph_lsp import __version__
from opgraph_lsp.fetch import DiagnosticGroup, Fetcher, TooBig
from opgraph_lsp.lines import LineTracker, to_index, unit_length
from opgraph_lsp.link import DEFAULT_URL, GraphLink, NotConnected, check_url
from opgraph_lsp.paths import FileKey, KeyCache, file_key, path_to_uri, uri_to_path
from opgraph_lsp.rpcio import error_message, send
from opgraph_lsp.views import FEW, LineData, count_text

log = logging.getLogger(__name__)

SOURCE = "opgraph"
POLL_INTERVAL = 2.0
"""Seconds between two looks at the graph server's list of graphs (for graphs that appear)."""
RECHECK_INTERVAL = 30.0
"""A graph that shows nothing in the open documents is looked at again at most this often."""
REFRESH_DELAY = 0.1
"""Changes within this many seconds make one ``workspace/inlayHint/refresh``."""
REFRESH_TIMEOUT = 5.0
"""A client that does not answer a refresh within this time is sent the next one anyway."""

GRADCHECK_SAMPLE = 100
"""A gradcheck from the editor checks a sample of this many leaves of a graph with more."""

COMMAND_GRADCHECK = "opgraph.gradcheck"
COMMAND_RENDER = "opgraph.render"
COMMAND_DIAGNOSTICS = "opgraph.diagnostics"
COMMANDS = (COMMAND_GRADCHECK, COMMAND_RENDER, COMMAND_DIAGNOSTICS)

_SEVERITY = {"error": lsp.DiagnosticSeverity.Error, "warning": lsp.DiagnosticSeverity.Warning,
             "info": lsp.DiagnosticSeverity.Information, "hint": lsp.DiagnosticSeverity.Hint}


# --- what a document shows ---------------------------------------------------------------------


@dataclass
class DocGraph:
    """One graph's data for one document, by baseline line (0-based)."""

    version: int
    nodes: int
    lines: dict[int, list[LineData]] = field(default_factory=dict)
    diagnostics: dict[int, list[DiagnosticGroup]] = field(default_factory=dict)


@dataclass
class Document:
    """An open document: its lines as edited, and what each graph shows on them."""

    uri: str
    path: str | None
    key: FileKey | None
    tracker: LineTracker
    version: int | None = None
    graphs: dict[str, DocGraph] = field(default_factory=dict)
    published: tuple | None = None  # the diagnostics last sent, to send only changes

    def remap(self, moved: dict[int, int]) -> None:
        """After a save: old baseline lines to new ones (lines changed before it are dropped)."""
        for dg in self.graphs.values():
            dg.lines = {moved[o]: v for o, v in dg.lines.items() if o in moved}
            dg.diagnostics = {moved[o]: v for o, v in dg.diagnostics.items() if o in moved}


@dataclass
class GraphEntry:
    """What the language server knows of one graph of the graph server."""

    name: str
    version: int = -1  # the newest version heard of
    shown: int = -1  # the version the documents show
    files: set[str] | None = None  # every source file it names (None: not looked at yet)
    checked_at: float = float("-inf")
    subscribed: bool = False
    matched: bool = False
    task: asyncio.Task | None = None
    again: bool = False  # changed again while being read
    want_diagnostics: bool = True  # ask for its diagnostics with the next read
    diag_task: asyncio.Task | None = None
    diag_pending: Any = None  # the latest pushed diagnostics not yet placed
    problem: str | None = None  # why it cannot be shown (told once)


# --- the protocol: the lifecycle as the spec says ---------------------------------------------


class OpgraphProtocol(LanguageServerProtocol):
    """pygls' protocol, with the spec's answers to requests out of their time: before
    ``initialize`` -32002 (notifications dropped, except ``exit``), a second ``initialize``
    and anything after ``shutdown`` -32600."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initialize_seen = False
        self.closed = False  # set at exit: nothing more is written

    def _send_data(self, data: Any) -> None:
        if self.closed:
            return
        try:
            super()._send_data(data)
        except (BrokenPipeError, ValueError):  # the editor went away, or the output is closed
            self.closed = True

    def handle_message(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if isinstance(message, RPCRequest):
            problem = None
            if method == lsp.INITIALIZE:
                if self.initialize_seen:
                    problem = (lsp.ErrorCodes.InvalidRequest, "initialize was already sent")
                self.initialize_seen = True
            elif not self.initialize_seen:
                problem = (lsp.ErrorCodes.ServerNotInitialized,
                           f"{method}: the server is not initialized (send initialize first)")
            elif self._shutdown:
                problem = (lsp.ErrorCodes.InvalidRequest,
                           f"{method}: the server is shut down (only exit is accepted)")
            if problem is not None:
                send(self, error_message(message.id, problem[0], problem[1]))
                return
        elif isinstance(message, RPCNotification) and not self.initialize_seen \
                and method != lsp.EXIT:
            log.info("dropped %s: it came before initialize", method)
            return
        super().handle_message(message)


# --- the server --------------------------------------------------------------------------------


class OpgraphLanguageServer(LanguageServer):
    """The language server. ``url``: the graph server; ``spawn``: start one if none answers."""

    def __init__(self, url: str = DEFAULT_URL, *, token: str | None = None,
                 spawn: bool = False, poll_interval: float = POLL_INTERVAL,
                 render_dir: str | None = None) -> None:
        super().__init__("opgraph-lsp", __version__, protocol_cls=OpgraphProtocol,
                         text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.link = GraphLink(url, token=token, spawn=spawn, on_up=self._on_up,
                              on_down=self._on_down, on_notification=self._on_notification)
        self.poll_interval = poll_interval
        self.render_dir = render_dir
        self.few = FEW
        self.docs: dict[str, Document] = {}
        self.graphs: dict[str, GraphEntry] = {}
        self.keys = KeyCache()
        self.fetcher: Fetcher | None = None
        self.instance: Any = None
        self._doc_keys: dict[FileKey, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._told_down = False
        self._refresh_handle: asyncio.TimerHandle | None = None
        self._refresh_in_flight = False
        self._refresh_again = False
        self._scan_task: asyncio.Task | None = None
        self._started = False

    # --- capabilities of the client ---------------------------------------------------------------

    def _client_can(self, *path: str) -> bool:
        obj: Any = self.client_capabilities
        for name in path:
            obj = getattr(obj, name, None)
            if obj is None:
                return False
        return bool(obj)

    @property
    def encoding(self) -> str:
        return str(self.workspace.position_encoding or "utf-16")

    def _markdown(self, *path: str) -> bool:
        formats = self.client_capabilities
        for name in path:
            formats = getattr(formats, name, None)
            if formats is None:
                return True  # no word on it: Markdown, which every client cited here shows
        return lsp.MarkupKind.Markdown in formats

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Errors pygls meets outside a request go to the log (stderr), not to the editor's
        screen: a message each would flood it."""
        log.error("%s: %s", getattr(source, "__name__", source), error)

    # --- starting and stopping ----------------------------------------------------------------

    def configure(self, options: Any) -> None:
        """Apply settings (``initializationOptions`` or ``workspace/didChangeConfiguration``):
        ``url`` (or ``connect``), ``token``, ``few`` (nodes a line lists before it summarises)."""
        if not isinstance(options, dict):
            return
        if isinstance(options.get("opgraph"), dict):
            options = options["opgraph"]
        url = options.get("url", options.get("connect"))
        token = options.get("token")
        few = options.get("few")
        if isinstance(few, int) and not isinstance(few, bool) and 0 < few <= 50 \
                and few != self.few:
            self.few = few
            if self.fetcher is not None:
                self.fetcher.few = few
            for entry in self.graphs.values():
                self._schedule(entry)
        if (url is not None and not isinstance(url, str)) or url == "":
            self._show(lsp.MessageType.Error, f"opgraph: the setting 'url' must be an address "
                                              f"such as {DEFAULT_URL}, got {url!r}")
            url = None
        if url is not None or isinstance(token, str):
            try:
                if url is not None:
                    check_url(url)
            except ValueError as exc:
                self._show(lsp.MessageType.Error, f"opgraph: the setting 'url': {exc}")
                return
            if url is not None and url != self.link.url:
                self._forget_all()
            self.link.retarget(url, token if isinstance(token, str) else None)

    def start(self) -> None:
        """Start talking to the graph server (after ``initialized``)."""
        if self._started:
            return
        self._started = True
        self._spawn(self.link.run())
        self._spawn(self._poll())

    async def stop(self) -> None:
        """Close the graph server connection (and a spawned graph server)."""
        for task in list(self._tasks):
            task.cancel()
        await self.link.stop()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # --- the graph server coming and going ----------------------------------------------------

    async def _on_up(self, client: AsyncClient) -> None:
        info = self.link.info
        instance = info.get("instance")
        if instance is None or instance != self.instance:
            self._forget_all()  # a new server reuses names and versions: nothing carries over
        self.instance = instance
        self.fetcher = Fetcher(self.link.call, info.get("methods") or [], few=self.few)
        for entry in self.graphs.values():
            entry.subscribed = False
            entry.want_diagnostics = True
            entry.checked_at = float("-inf")
            entry.problem = None
        if self._told_down:
            self._told_down = False
            self._show(lsp.MessageType.Info, f"opgraph: connected to the graph server at "
                                             f"{self.link.url}")
        log.info("connected to %s (%s %s)", self.link.url, info.get("name"), info.get("version"))
        self._scan_soon()

    async def _on_down(self, reason: str, was_up: bool) -> None:
        self._forget_all()
        if self._told_down:
            return
        self._told_down = True
        if was_up:
            text = (f"opgraph: lost the graph server at {self.link.url} ({reason}); values and "
                    "diagnostics are cleared until it is back. Reconnecting in the background.")
        else:
            text = (f"opgraph: cannot reach the graph server at {self.link.url} ({reason}). "
                    "Start one with `opgraph serve` (or start the language server with "
                    "`opgraph lsp --spawn`); retrying in the background.")
        self._show(lsp.MessageType.Warning, text)

    def _show(self, kind: lsp.MessageType, text: str) -> None:
        with contextlib.suppress(Exception):
            self.window_show_message(lsp.ShowMessageParams(type=kind, message=text))

    def _forget_all(self) -> None:
        """Drop every graph's data (the server went away or is another one)."""
        for entry in self.graphs.values():
            for task in (entry.task, entry.diag_task):
                if task is not None:
                    task.cancel()
        self.graphs.clear()
        self.keys.forget()
        changed = False
        for doc in self.docs.values():
            if doc.graphs:
                doc.graphs.clear()
                changed = True
            self._publish(doc)
        if changed:
            self._data_changed()

    # --- finding the graphs of the open documents ---------------------------------------------

    def wanted(self, file: str) -> bool:
        """Whether source file ``file`` (as the graph server names it) is an open document."""
        return bool(self._doc_keys) and self.keys.key(file) in self._doc_keys

    def _scan_soon(self) -> None:
        if self._scan_task is None or self._scan_task.done():
            self._scan_task = self._spawn(self._scan())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if self.link.connected and self.docs:
                self._scan_soon()

    async def _scan(self) -> None:
        """Compare the graph server's graphs with what is known; read those that may show."""
        if not self.docs or not self.link.connected:
            return
        try:
            listed = await self.link.call("graph.list")
        except (NotConnected, ClientError, ServerError) as exc:
            log.info("graph.list: %s", exc)
            return
        now = time.monotonic()
        names = set()
        for row in listed:
            name = row.get("name")
            if not isinstance(name, str):
                continue
            names.add(name)
            entry = self.graphs.get(name)
            version = int(row.get("version") or 0)
            if entry is None:
                entry = self.graphs[name] = GraphEntry(name)
            if entry.matched:
                if version != entry.version and not entry.subscribed:
                    entry.version = version
                    self._schedule(entry)
                continue
            if entry.files is None or (now - entry.checked_at >= RECHECK_INTERVAL \
                    and version != entry.version):
                entry.version = version
                self._schedule(entry)
        for name in [n for n in self.graphs if n not in names]:
            self._drop_graph(name)

    def _schedule(self, entry: GraphEntry, diagnostics: bool = False) -> None:
        """Read ``entry``'s graph again soon (once, however many times this is called)."""
        if diagnostics:
            entry.want_diagnostics = True
        if entry.task is not None and not entry.task.done():
            entry.again = True
            return
        entry.task = self._spawn(self._read(entry))

    async def _read(self, entry: GraphEntry) -> None:
        while True:
            entry.again = False
            fetcher = self.fetcher
            if fetcher is None or not self.link.connected:
                return
            try:
                await self._read_once(entry, fetcher)
            except TooBig as exc:
                self._tell_problem(entry, str(exc))
            except (NotConnected, ClientError) as exc:
                log.info("reading graph %r: %s", entry.name, exc)
                return
            except ServerError as exc:
                if exc.name == "unknown_graph":
                    self._drop_graph(entry.name)
                    return
                self._tell_problem(entry, f"graph {entry.name!r}: {exc}")
            if not entry.again:
                return

    async def _read_once(self, entry: GraphEntry, fetcher: Fetcher) -> None:
        result = await fetcher.lines(entry.name, self.wanted)
        if self.graphs.get(entry.name) is not entry:
            return  # dropped or forgotten meanwhile
        entry.files = result.all_files
        entry.checked_at = time.monotonic()
        entry.version = max(entry.version, result.version)
        entry.shown = result.version
        entry.problem = None
        entry.matched = bool(result.files)
        if entry.matched and not entry.subscribed:
            await self.link.call("graph.subscribe", entry.name)
            entry.subscribed = True
            entry.want_diagnostics = True
        elif not entry.matched and entry.subscribed:
            with contextlib.suppress(ServerError):
                await self.link.call("graph.unsubscribe", entry.name)
            entry.subscribed = False
        changed = False
        for doc in self.docs.values():
            lines: dict[int, list[LineData]] = {}
            for file, by_line in result.files.items():
                if doc.key is not None and self.keys.key(file) == doc.key:
                    for line, data in by_line.items():
                        lines.setdefault(line - 1, []).append(data)
            old = doc.graphs.get(entry.name)
            if lines:
                dg = DocGraph(result.version, result.nodes, lines,
                              old.diagnostics if old is not None else {})
                doc.graphs[entry.name] = dg
                changed = True
            elif old is not None:
                del doc.graphs[entry.name]
                self._publish(doc)
                changed = True
        if changed:
            self._data_changed()
        if entry.matched and entry.want_diagnostics:
            entry.want_diagnostics = False
            report = await self.link.call("graph.diagnostics", entry.name)
            await self._place(entry, (report.get("groups") and report) or
                              report.get("diagnostics"), int(report.get("version") or 0))

    def _tell_problem(self, entry: GraphEntry, text: str) -> None:
        if entry.problem != text:
            entry.problem = text
            self._show(lsp.MessageType.Warning, f"opgraph: {text}")
        entry.files = entry.files or set()
        entry.checked_at = time.monotonic()

    def _drop_graph(self, name: str) -> None:
        entry = self.graphs.pop(name, None)
        if entry is not None:
            for task in (entry.task, entry.diag_task):
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
        changed = False
        for doc in self.docs.values():
            if doc.graphs.pop(name, None) is not None:
                changed = True
                self._publish(doc)
        if changed:
            self._data_changed()

    # --- notifications from the graph server ----------------------------------------------------

    def _on_notification(self, method: str, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("graph"), str):
            return
        name = payload["graph"]
        if method == "graph.dropped":
            self._drop_graph(name)
            return
        entry = self.graphs.get(name)
        if entry is None:
            return
        if method == "graph.changed":
            version = payload.get("version")
            if isinstance(version, int) and version != entry.shown:
                entry.version = max(entry.version, version)
                self._schedule(entry)
        elif method == "graph.diagnostics":
            entry.diag_pending = ((payload.get("groups") and payload)
                                  or payload.get("diagnostics"), payload.get("version"))
            if entry.diag_task is None or entry.diag_task.done():
                entry.diag_task = self._spawn(self._place_pending(entry))

    async def _place_pending(self, entry: GraphEntry) -> None:
        while entry.diag_pending is not None:
            diagnostics, version = entry.diag_pending
            entry.diag_pending = None
            try:
                await self._place(entry, diagnostics, version)
            except (NotConnected, ClientError) as exc:
                log.info("placing diagnostics of %r: %s", entry.name, exc)
                return
            except ServerError as exc:
                log.info("placing diagnostics of %r: %s", entry.name, exc)

    async def _place(self, entry: GraphEntry, diagnostics: Any, version: Any) -> None:
        fetcher = self.fetcher
        if fetcher is None:
            return
        groups = await fetcher.place(entry.name, diagnostics, self.wanted)
        for doc in self.docs.values():
            dg = doc.graphs.get(entry.name)
            mine: dict[int, list[DiagnosticGroup]] = {}
            for g in groups:
                if doc.key is not None and self.keys.key(g.file) == doc.key:
                    mine.setdefault(g.line - 1, []).append(g)
            if dg is None:
                if not mine:
                    continue
                dg = doc.graphs[entry.name] = DocGraph(int(version or entry.shown), 0)
            dg.diagnostics = mine
            self._publish(doc)

    # --- telling the editor ---------------------------------------------------------------------

    def _data_changed(self) -> None:
        """What the documents show changed: ask the editor to ask again (debounced)."""
        if self._refresh_handle is None:
            with contextlib.suppress(RuntimeError):
                self._refresh_handle = asyncio.get_running_loop().call_later(
                    REFRESH_DELAY, self._send_refresh)

    def _send_refresh(self) -> None:
        self._refresh_handle = None
        if self._refresh_in_flight:
            self._refresh_again = True
            return
        futures = []
        if self._client_can("workspace", "inlay_hint", "refresh_support"):
            futures.append(self.workspace_inlay_hint_refresh(None))
        if self._client_can("workspace", "code_lens", "refresh_support"):
            futures.append(self.workspace_code_lens_refresh(None))
        if not futures:
            return
        self._refresh_in_flight = True
        loop = asyncio.get_running_loop()

        def done(*_: Any) -> None:
            if not self._refresh_in_flight:
                return
            if all(f.done() for f in futures) or timeout.when() <= loop.time():
                self._refresh_in_flight = False
                timeout.cancel()
                if self._refresh_again:
                    self._refresh_again = False
                    self._data_changed()

        timeout = loop.call_later(REFRESH_TIMEOUT, done)
        for f in futures:
            f.add_done_callback(lambda _f: loop.call_soon_threadsafe(done))

    def _diagnostics_of(self, doc: Document) -> list[lsp.Diagnostic]:
        out = []
        for name, dg in sorted(doc.graphs.items()):
            for o, groups in dg.diagnostics.items():
                i = doc.tracker.buffer_line(o)
                if i is None:
                    continue
                end = unit_length(doc.tracker.lines[i], self.encoding)
                for g in groups:
                    text = g.message
                    if g.count > 1:
                        text += f" ({count_text(g.count)} on this line)"
                    out.append(lsp.Diagnostic(
                        range=lsp.Range(lsp.Position(i, 0), lsp.Position(i, end)),
                        message=text, severity=_SEVERITY.get(g.severity,
                                                             lsp.DiagnosticSeverity.Information),
                        code=g.code, source=SOURCE,
                        data={"graph": name, "version": dg.version, "count": g.count,
                              "occurrences": g.occurrences or g.count, "nodes": g.nodes,
                              "plugin": g.plugin}))
        out.sort(key=lambda d: (d.range.start.line, str(d.code)))
        return out

    def _publish(self, doc: Document) -> None:
        """Send ``doc``'s diagnostics if they differ from what was sent last."""
        diagnostics = self._diagnostics_of(doc)
        shape = tuple((d.range.start.line, d.range.end.character, d.code, d.message,
                       d.severity) for d in diagnostics)
        if shape == doc.published or (doc.published is None and not shape):
            return
        doc.published = shape
        with contextlib.suppress(Exception):
            self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
                uri=doc.uri, diagnostics=diagnostics, version=doc.version))

    # --- documents ------------------------------------------------------------------------------

    def open(self, uri: str, text: str, version: int | None) -> None:
        path = uri_to_path(uri)
        key = file_key(path) if path else None
        doc = Document(uri, path, key, LineTracker(text), version)
        old = self.docs.get(uri)
        if old is not None:
            self.close(uri)
        self.docs[uri] = doc
        if key is not None:
            self._doc_keys[key] = self._doc_keys.get(key, 0) + 1
        self.keys.forget()  # the file may have been replaced since its key was read
        for entry in self.graphs.values():
            if entry.files is None or any(self.keys.key(f) == key for f in entry.files):
                self._schedule(entry, diagnostics=True)
        self._scan_soon()

    def close(self, uri: str) -> None:
        doc = self.docs.pop(uri, None)
        if doc is None:
            return
        if doc.published:
            with contextlib.suppress(Exception):
                self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
                    uri=uri, diagnostics=[]))
        if doc.key is not None:
            left = self._doc_keys.get(doc.key, 0) - 1
            if left > 0:
                self._doc_keys[doc.key] = left
            else:
                self._doc_keys.pop(doc.key, None)
        for name in list(doc.graphs):
            if not any(name in d.graphs for d in self.docs.values()):
                entry = self.graphs.get(name)
                if entry is not None and entry.subscribed:
                    entry.matched = False
                    self._spawn(self._unsubscribe(entry))

    async def _unsubscribe(self, entry: GraphEntry) -> None:
        if entry.matched or not entry.subscribed:
            return
        entry.subscribed = False
        with contextlib.suppress(NotConnected, ClientError, ServerError):
            await self.link.call("graph.unsubscribe", entry.name)

    def change(self, params: lsp.DidChangeTextDocumentParams) -> None:
        doc = self.docs.get(params.text_document.uri)
        if doc is None:
            return
        doc.version = params.text_document.version
        encoding = self.encoding
        t = doc.tracker
        for change in params.content_changes:
            if isinstance(change, lsp.TextDocumentContentChangePartial):
                r = change.range
                start = (r.start.line, self._index(t, r.start, encoding))
                end = (r.end.line, self._index(t, r.end, encoding))
                t.apply(start, end, change.text)
            else:
                t.replace_all(change.text)
        if any(dg.diagnostics for dg in doc.graphs.values()):
            self._publish(doc)

    @staticmethod
    def _index(t: LineTracker, pos: lsp.Position, encoding: str) -> int:
        if pos.line >= len(t.lines):
            return 0 if pos.line > len(t.lines) else len(t.lines[-1])
        return to_index(t.lines[pos.line], pos.character, encoding)

    def save(self, uri: str, text: str | None) -> None:
        doc = self.docs.get(uri)
        if doc is None:
            return
        moved = doc.tracker.rebase(text)
        doc.remap(moved)
        self._publish(doc)

    # --- answers ----------------------------------------------------------------------------------

    def _line_data(self, doc: Document, line: int) -> list[LineData]:
        o = doc.tracker.source_line(line)
        if o is None:
            return []
        return [d for _, dg in sorted(doc.graphs.items()) for d in dg.lines.get(o, [])]

    def inlay_hints(self, params: lsp.InlayHintParams) -> list[lsp.InlayHint] | None:
        doc = self.docs.get(params.text_document.uri)
        if doc is None or not doc.graphs:
            return None
        several = sum(1 for dg in doc.graphs.values() if dg.lines) > 1
        encoding = self.encoding
        r = params.range
        hints = []
        lines = doc.tracker.lines
        for i, o in doc.tracker.clean_lines(r.start.line, r.end.line):
            found = [d for _, dg in sorted(doc.graphs.items()) for d in dg.lines.get(o, [])]
            if not found:
                continue
            position = lsp.Position(i, unit_length(lines[i], encoding))
            for d in found:
                tooltip = lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=d.tooltip())
                hints.append(lsp.InlayHint(position=position, label=d.label(several),
                                           padding_left=True, tooltip=tooltip))
        return hints

    def hover(self, params: lsp.HoverParams) -> lsp.Hover | None:
        doc = self.docs.get(params.text_document.uri)
        if doc is None or not doc.graphs:
            return None
        line = params.position.line
        found = self._line_data(doc, line)
        o = doc.tracker.source_line(line)
        diags = [g for _, dg in sorted(doc.graphs.items())
                 for g in dg.diagnostics.get(o, [])] if o is not None else []
        if not found and not diags:
            return None
        parts: list[str] = []
        for d in found:
            parts.append("\n".join(d.markdown()))
        if diags:
            parts.append("\n".join(
                f"- **{g.severity}** `{g.code}`: {g.message}"
                + (f" ({count_text(g.count)} on this line)" if g.count > 1 else "")
                for g in diags))
        value = "\n\n---\n\n".join(parts)
        end = unit_length(doc.tracker.lines[line], self.encoding)
        kind = lsp.MarkupKind.Markdown if self._markdown(
            "text_document", "hover", "content_format") else lsp.MarkupKind.PlainText
        return lsp.Hover(contents=lsp.MarkupContent(kind=kind, value=value),
                         range=lsp.Range(lsp.Position(line, 0), lsp.Position(line, end)))

    def code_lenses(self, params: lsp.CodeLensParams) -> list[lsp.CodeLens] | None:
        doc = self.docs.get(params.text_document.uri)
        if doc is None or not doc.graphs:
            return None
        lenses = []
        for name, dg in sorted(doc.graphs.items()):
            first = min((i for i, o in doc.tracker.clean_lines() if o in dg.lines), default=None)
            if first is None:
                first = 0
            at = lsp.Range(lsp.Position(first, 0), lsp.Position(first, 0))
            count = sum(g.count for gs in dg.diagnostics.values() for g in gs)
            title = f"opgraph {name} v{dg.version}" + (
                f" · {count_text(dg.nodes)} nodes" if dg.nodes else "")
            lenses += [
                _lens(at, title, COMMAND_DIAGNOSTICS, name),
                _lens(at, "gradcheck", COMMAND_GRADCHECK, name),
                _lens(at, "render", COMMAND_RENDER, name),
                _lens(at, f"diagnostics: {count_text(count)}" if count
                      else "no diagnostics here", COMMAND_DIAGNOSTICS, name),
            ]
        return lenses

    # --- commands ---------------------------------------------------------------------------------

    def _graph_argument(self, args: list[Any], command: str) -> str:
        if args and isinstance(args[0], str) and args[0]:
            return args[0]
        shown = sorted({n for d in self.docs.values() for n in d.graphs})
        if len(shown) == 1:
            return shown[0]
        raise CommandError(f"{command}: name the graph as the first argument"
                           + (f" (the open documents show {', '.join(shown)})" if shown
                              else " (no open document shows a graph)"))

    async def gradcheck(self, args: list[Any]) -> dict[str, Any]:
        graph = self._graph_argument(args, COMMAND_GRADCHECK)
        options = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        info = await self._call("graph.info", graph)
        outputs = info.get("outputs") or []
        if not outputs:
            raise CommandError(f"{COMMAND_GRADCHECK}: graph {graph!r} has no root (no nodes)")
        root = max(outputs)
        all_leaves = len(info.get("leaves") or [])
        if "sample" not in options and "leaves" not in options and all_leaves > GRADCHECK_SAMPLE:
            options["sample"] = GRADCHECK_SAMPLE  # (each leaf costs two forward passes)
        result = await self._call("graph.gradcheck", graph, root, **options)
        leaves = result.get("leaves") or []
        failed = [leaf for leaf in leaves if not leaf.get("ok")]
        bad_ops = result.get("bad_ops") or []
        total = int(result.get("total_leaves") or all_leaves or len(leaves))
        summary = {"graph": graph, "version": result.get("version"), "root": root,
                   "ok": bool(result.get("ok")), "leaves": len(leaves), "total_leaves": total,
                   "failed": failed[:20], "bad_ops": bad_ops[:20]}
        which = (f"{count_text(len(leaves))} leaves" if len(leaves) >= total else
                 f"{count_text(len(leaves))} leaves (a sample of the {count_text(total)})")
        if summary["ok"]:
            text = (f"opgraph: gradcheck of {graph!r} (root #{root}): ok, the gradients of "
                    f"{which} agree with finite differences")
        else:
            names = ", ".join(str(leaf.get("label") or f"#{leaf.get('id')}")
                              for leaf in failed[:5])
            ops = ", ".join(sorted({str(b.get("op")) for b in bad_ops}))
            text = (f"opgraph: gradcheck of {graph!r} (root #{root}) failed: "
                    f"{count_text(len(failed))} of {which} disagree"
                    + (f" ({names})" if names else "") + (f"; suspect ops: {ops}" if ops else ""))
        self._show(lsp.MessageType.Info if summary["ok"] else lsp.MessageType.Warning, text)
        return summary

    async def render(self, args: list[Any]) -> dict[str, Any]:
        graph = self._graph_argument(args, COMMAND_RENDER)
        options: dict[str, Any] = {"format": "svg"}
        where = ""
        if len(args) >= 3 and isinstance(args[1], str) and isinstance(args[2], int):
            doc = self.docs.get(args[1])
            data = [d for d in (self._line_data(doc, args[2]) if doc else [])
                    if d.graph == graph]
            if not data:
                raise CommandError(f"{COMMAND_RENDER}: line {args[2] + 1} of {args[1]} shows "
                                   f"no node of graph {graph!r}")
            d = data[0]
            around = d.nodes[-1].id if d.nodes else (d.stats or {}).get("first")
            if around is None:
                raise CommandError(f"{COMMAND_RENDER}: no node to draw around on that line")
            options["around"] = int(around)
            options["depth"] = int(args[3]) if len(args) > 3 and isinstance(args[3], int) else 2
            where = f"-around{around}"
        result = await self._call("graph.render", graph, **options)
        directory = self.render_dir or os.path.join(tempfile.gettempdir(),
                                                    f"opgraph-lsp-{os.getuid()}")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", graph)[:80] or "graph"
        path = os.path.join(directory, f"{safe}-v{result.get('version')}{where}.svg")
        data = result.get("data") or ""
        with open(path, "w", encoding="utf-8") as f:
            f.write(data if isinstance(data, str) else data.decode())
        uri = path_to_uri(path)
        return {"graph": graph, "version": result.get("version"), "uri": uri,
                "drawn": result.get("drawn"), "nodes": result.get("nodes"),
                "total": result.get("total"), "reason": result.get("reason")}

    async def diagnostics(self, args: list[Any]) -> dict[str, Any]:
        graph = self._graph_argument(args, COMMAND_DIAGNOSTICS)
        try:
            report = await self._call("graph.diagnostics", graph, group=True)
        except CommandError as exc:  # a graph server from before grouped diagnostics
            if "invalid_params" not in str(exc):
                raise
            report = await self._call("graph.diagnostics", graph)
        raw = (report.get("groups") and report) or report.get("diagnostics") or []
        fetcher = self.fetcher
        assert fetcher is not None
        groups = await fetcher.place(graph, raw, lambda _f: True)
        placed = sum(g.count for g in groups)
        total = (report.get("counts") or {}).get("diagnostics")
        if total is None:
            total = len(raw) if isinstance(raw, list) else placed
        return {"graph": graph, "version": report.get("version"), "total": total,
                "groups": [g.to_dict() for g in groups], "unplaced": max(0, total - placed)}

    async def _call(self, method: str, *args: Any, **options: Any) -> Any:
        try:
            return await self.link.call(method, *args, **options)
        except NotConnected as exc:
            raise CommandError(str(exc)) from None
        except ServerError as exc:
            raise CommandError(f"{method}: {exc}") from None


def _lens(at: lsp.Range, title: str, command: str, *args: Any) -> lsp.CodeLens:
    return lsp.CodeLens(range=at, command=lsp.Command(title=title, command=command,
                                                      arguments=list(args)))


class CommandError(Exception):
    """A command that cannot be done as asked (answered as a request failure)."""


# --- the features -----------------------------------------------------------------------------


def _initialize(ls: OpgraphLanguageServer, params: lsp.InitializeParams) -> None:
    ls.configure(params.initialization_options)


def _initialized(ls: OpgraphLanguageServer, params: lsp.InitializedParams) -> None:
    ls.start()


async def _shutdown(ls: OpgraphLanguageServer, params: None) -> None:
    await ls.stop()


def _exit(ls: OpgraphLanguageServer, params: None) -> None:
    ls.protocol.closed = True
    ls.link._stop_child()


async def _did_change_configuration(ls: OpgraphLanguageServer,
                                    params: lsp.DidChangeConfigurationParams) -> None:
    settings = params.settings
    if not settings and ls._client_can("workspace", "configuration"):
        try:
            got = await ls.workspace_configuration_async(lsp.ConfigurationParams(
                items=[lsp.ConfigurationItem(section="opgraph")]))
        except Exception as exc:  # the client could not answer: keep the settings
            log.info("workspace/configuration: %s", exc)
            return
        settings = got[0] if got else None
    ls.configure(settings)


def _did_open(ls: OpgraphLanguageServer, params: lsp.DidOpenTextDocumentParams) -> None:
    d = params.text_document
    ls.open(d.uri, d.text, d.version)


def _did_change(ls: OpgraphLanguageServer, params: lsp.DidChangeTextDocumentParams) -> None:
    ls.change(params)


def _did_save(ls: OpgraphLanguageServer, params: lsp.DidSaveTextDocumentParams) -> None:
    ls.save(params.text_document.uri, params.text)


def _did_close(ls: OpgraphLanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
    ls.close(params.text_document.uri)


def _inlay_hint(ls: OpgraphLanguageServer,
                params: lsp.InlayHintParams) -> list[lsp.InlayHint] | None:
    return ls.inlay_hints(params)


def _hover(ls: OpgraphLanguageServer, params: lsp.HoverParams) -> lsp.Hover | None:
    return ls.hover(params)


def _code_lens(ls: OpgraphLanguageServer,
               params: lsp.CodeLensParams) -> list[lsp.CodeLens] | None:
    return ls.code_lenses(params)


FEATURES: list[tuple[str, Any, Any]] = [
    (lsp.INITIALIZE, None, _initialize),
    (lsp.INITIALIZED, None, _initialized),
    (lsp.SHUTDOWN, None, _shutdown),
    (lsp.EXIT, None, _exit),
    (lsp.WORKSPACE_DID_CHANGE_CONFIGURATION, None, _did_change_configuration),
    (lsp.TEXT_DOCUMENT_DID_OPEN, None, _did_open),
    (lsp.TEXT_DOCUMENT_DID_CHANGE, None, _did_change),
    (lsp.TEXT_DOCUMENT_DID_SAVE, lsp.SaveOptions(include_text=True), _did_save),
    (lsp.TEXT_DOCUMENT_DID_CLOSE, None, _did_close),
    (lsp.TEXT_DOCUMENT_INLAY_HINT, lsp.InlayHintOptions(resolve_provider=False), _inlay_hint),
    (lsp.TEXT_DOCUMENT_HOVER, None, _hover),
    (lsp.TEXT_DOCUMENT_CODE_LENS, lsp.CodeLensOptions(resolve_provider=False), _code_lens),
]
"""The LSP methods the server handles: (method, its options, the handler)."""


def _command(ls: OpgraphLanguageServer, name: str, run: Any) -> None:
    from pygls.exceptions import JsonRpcException

    async def handler(ls: OpgraphLanguageServer, *args: Any) -> Any:
        try:
            return await run(list(args))
        except CommandError as exc:
            raise JsonRpcException(message=str(exc),
                                   code=lsp.LSPErrorCodes.RequestFailed) from None

    ls.command(name)(handler)


def create_server(url: str = DEFAULT_URL, *, token: str | None = None, spawn: bool = False,
                  poll_interval: float = POLL_INTERVAL,
                  render_dir: str | None = None) -> OpgraphLanguageServer:
    """A language server with every feature registered (not yet started)."""
    ls = OpgraphLanguageServer(url, token=token, spawn=spawn, poll_interval=poll_interval,
                               render_dir=render_dir)
    for method, options, handler in FEATURES:
        ls.feature(method, options)(handler)
    _command(ls, COMMAND_GRADCHECK, ls.gradcheck)
    _command(ls, COMMAND_RENDER, ls.render)
    _command(ls, COMMAND_DIAGNOSTICS, ls.diagnostics)
    return ls
