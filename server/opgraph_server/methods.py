"""The RPC methods: argument checking, then the opgraph API, then plain-data results.

Each method is a function ``(call, *args, **options)`` registered with `method`, which records
its required arguments and the option names it accepts; it is ``async`` when it waits (for a
graph's lock or a worker thread), plain when it answers at once (``node.get``: the server then
makes no coroutine for it). `Server.check` splits ``params`` (arguments by position, then one
optional map of options) and checks them; the session runs the method. Long reads (analysis,
pictures, gradcheck, export; `Call.in_thread`) and big changes (`Call.change`) run in worker
threads, so one client's big work does not stall another's small queries.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import opgraph
from opgraph.core import Value, topological_order
from opgraph.errors import (
    ArityError,
    AttributeSpecError,
    ExpressionError,
    ForwardError,
    GradRuleError,
    GraphFileError,
    GraphLimitError,
    GraphMismatchError,
    InputTypeError,
    NodeNotFoundError,
    NotALeafError,
    OpgraphError,
    PluginError,
    RuleError,
    UnknownOpError,
)
from opgraph.gcpolicy import gc_paused
from opgraph.graph import Graph
from opgraph_server.errors import RpcError
from opgraph_server.protocol import Packed, pack_chunked, unpack_chunked
from opgraph_server.store import Entry

if TYPE_CHECKING:
    from opgraph_server.server import Server, Session

PROTOCOL_VERSION = 1
MAX_NAME_LENGTH = 200
MAX_IDS = 100_000
"""Node ids per node.get / graph.grads request (as graph.nodes pages at most 100,000)."""
THREADED_RECORDS = 2_000
"""A ``node.get`` or ``graph.nodes`` of more records than this builds and encodes them in a
worker thread, under the graph's read lock (`pack_chunked`), so that the event loop goes on
answering others; fewer are quicker on the loop."""
THREADED_CHANGE_NODES = 10_000
"""A change whose work grows past this many nodes (a big batch, a backward pass or a
recomputation over a big graph) runs in a worker thread, the graph's write lock held, so that
other clients keep being answered; smaller ones run on the event loop, where they are quicker."""

Handler = Callable[..., Any]
"""A method: ``(call, *args, **options)`` returning the result, or (async) an awaitable of it."""


@dataclass(frozen=True)
class MethodSpec:
    """A method's name, handler, required arguments and accepted options."""

    name: str
    handler: Handler
    required: tuple[str, ...]
    optional: tuple[str, ...]
    options: frozenset[str]
    before_initialize: bool = False
    any_option: bool = False
    awaits: bool = True
    """Whether ``handler`` is a coroutine function (its result must be awaited)."""
    exact: int = -1
    """The length of params that is exactly the required arguments (-1 when there are optional
    ones): such params need no splitting (see `split_params`)."""
    reserved: frozenset[str] = frozenset()
    """The handler's parameter names that are not options (``call``, the positional ones):
    an option by one of these names is refused, whatever ``any_option`` says."""

    @property
    def allowed_options(self) -> frozenset[str] | bool:
        """What `split_params` accepts: True for any option name, False for none."""
        return True if self.any_option else (self.options or False)


METHODS: dict[str, MethodSpec] = {}


def method(
    name: str,
    required: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
    *,
    before_initialize: bool = False,
    any_option: bool = False,
) -> Callable[[Handler], Handler]:
    """Register ``handler`` as RPC method ``name``."""

    def register(handler: Handler) -> Handler:
        parameters = inspect.signature(handler).parameters.values()
        reserved = frozenset(p.name for p in parameters
                             if p.kind is not p.VAR_KEYWORD and p.name not in options)
        METHODS[name] = MethodSpec(name, handler, required, optional, frozenset(options),
                                   before_initialize, any_option,
                                   inspect.iscoroutinefunction(handler),
                                   -1 if optional else len(required), reserved)
        return handler

    return register


class Call:
    """What a method handler gets: the server, the calling session, and the method's name."""

    __slots__ = ("method", "server", "session")

    def __init__(self, server: Server, session: Session, method: str) -> None:
        self.server = server
        self.session = session
        self.method = method

    def invalid(self, message: str) -> RpcError:
        """An invalid_params error that names this method."""
        return RpcError("invalid_params", f"{self.method}: {message}")

    def entry(self, name: Any) -> Entry:
        """The named graph, or an unknown_graph error listing close names."""
        if type(name) is str and len(name) <= MAX_NAME_LENGTH:  # the common case, in one test
            entry = self.server.graphs.get(name)
            if entry is not None:
                return entry
        name = self.text(name, "graph")
        entry = self.server.graphs.get(name)
        if entry is None:
            import difflib

            close = difflib.get_close_matches(name, list(self.server.graphs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RpcError("unknown_graph", f"no graph named {name!r}{hint}")
        return entry

    def text(self, value: Any, what: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
        """A string argument."""
        if not isinstance(value, str):
            raise self.invalid(f"{what} must be a string, got {_kind(value)}")
        if len(value) > max_length:
            raise self.invalid(f"{what} is longer than {max_length} characters")
        return value

    def integer(self, value: Any, what: str) -> int:
        """An integer argument."""
        if type(value) is not int:
            raise self.invalid(f"{what} must be an integer, got {_kind(value)}")
        return value

    def number(self, value: Any, what: str) -> float:
        """A real-number argument (int or float)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.invalid(f"{what} must be a number, got {_kind(value)}")
        return value

    def data(self, value: Any, what: str) -> float:
        """A number that becomes a node's data: always an IEEE double (an int is converted,
        as PyTorch and JAX do with float64 tensors), so that no arithmetic on it is exact
        integer arithmetic, whose cost grows with the numbers (squaring doubles the digits)."""
        if type(value) is float:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.invalid(f"{what} must be a number, got {_kind(value)}")
        try:
            return float(value)
        except OverflowError:
            raise self.invalid(f"{what} is an integer too big for a double "
                               f"({value.bit_length()} bits)") from None

    def ids(self, value: Any, what: str = "ids") -> list[int]:
        """One node id or a list of them (at most MAX_IDS)."""
        if type(value) is int:
            return [value]
        if isinstance(value, list):
            for i in value:  # (a plain loop: most requests ask for one id or a few)
                if type(i) is not int:
                    break
            else:
                if len(value) > MAX_IDS:
                    raise RpcError("limit_exceeded", f"{self.method}: {len(value)} {what}; "
                                   f"at most {MAX_IDS} per request",
                                   {"limit": "ids", "max": MAX_IDS})
                return value
        raise self.invalid(f"{what} must be a node id or a list of node ids, got "
                           f"{_kind(value)}")

    async def in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking read (an analysis, a picture) in a worker thread, so the event loop
        keeps answering others.

        This is where the request time limit applies (big changes run to their end instead: see
        `change`). A thread that runs over is answered with ``limit_exceeded`` and left to
        finish in the background (its result is dropped).
        """
        limit = self.server.limits.request_timeout
        server = self.server
        try:
            async with asyncio.timeout(limit):
                return await server.submit(server.read_pool(), _without_gc, func, *args)
        except TimeoutError:
            raise RpcError("limit_exceeded", f"{self.method} took longer than {limit:g} s") \
                from None


    async def layout(self, picture: Any, deadline: float) -> tuple[bytes, Any]:
        """``(bytes, picture)``: the `opgraph.render.Picture` laid out by ``dot`` by the
        loop time ``deadline``, or, when a whole graph does not get done in half the time
        left, its summary in the rest (``picture`` is then the summary). ``dot`` runs in a
        subprocess, killed on time out or cancellation; at most `Server.layouts` at once."""
        from opgraph.render import LayoutTimeout, layout_async

        loop = asyncio.get_running_loop()
        limit = self.server.limits.request_timeout
        try:
            async with asyncio.timeout_at(deadline), self.server.layouts:
                if picture.fallback is None:
                    return await layout_async(picture), picture
                start = loop.time()
                try:
                    return await layout_async(picture, (deadline - start) / 2), picture
                except LayoutTimeout:
                    summary = picture.timed_out(loop.time() - start)
                return await layout_async(summary), summary
        except (TimeoutError, LayoutTimeout):
            raise RpcError("limit_exceeded", f"{self.method} took longer than {limit:g} s "
                           "(dot was stopped)", {"limit": "request_timeout", "max": limit}) \
                from None

    async def change(self, entry: Entry, size: int, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)``, a change to ``entry``'s graph, whose write lock the caller holds:
        run on the event loop when ``size`` (the nodes the work grows with) is small, else in
        a worker thread of the server's own pool for changes (not queued behind analyses), to
        its end. There is no time limit here: stopping half-way would leave the graph half
        changed, so the lock is held until the thread is done, even if this task is cancelled
        (as it is when the server stops). Meanwhile `graph.list` and the like report the
        graph as it was before the change (`Entry.settled`)."""
        if size < THREADED_CHANGE_NODES:
            return func(*args)
        graph = entry.graph
        cancelled = False
        try:
            entry.settled = (len(graph.nodes), graph.version)
            server = self.server
            future = server.submit(server.change_pool(), _without_gc, func, *args)
            while True:
                try:
                    result = await asyncio.shield(future)
                    break
                except asyncio.CancelledError:
                    if not future.done():
                        if server.stopping:
                            raise  # no waiting for it: the process goes, graph and all
                        cancelled = True  # wait on: the thread is still changing the graph
                        continue
                    if not future.cancelled():
                        future.exception()  # (retrieved: asyncio would log it as lost)
                    raise
        except BaseException as exc:
            if cancelled and not isinstance(exc, asyncio.CancelledError):
                raise asyncio.CancelledError from exc  # the change failed; the task still ends
            raise
        finally:
            entry.settled = None
        if cancelled:
            raise asyncio.CancelledError
        return result


def _without_gc(func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` with the cyclic garbage collector paused, then what survived frozen.

    An analysis of a big graph allocates millions of objects (the cached networkx graph among
    them) and makes no cycles. Collections during it, or one over everything it allocated
    right after it, would hold the GIL for a second or more and stall every client; frozen
    objects are skipped by later collections (and still freed by reference counting).
    """
    with gc_paused():
        try:
            return func(*args)
        finally:
            gc.freeze()


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _settle(nodes: list[Value], where: str) -> None:
    """Check, before a change is committed, that every value of ``nodes`` can be sent:
    data and grad doubles (ints converted: the engine gives ops' results as doubles, and the
    methods give leaves doubles, but a document's grads are stored as given), text encodable
    as UTF-8, attributes within MessagePack's integers. Raises `RpcError` naming the node;
    the caller rolls back."""
    for node in nodes:
        for field in ("data", "grad"):
            value = getattr(node, field)
            if type(value) is not float:
                try:
                    setattr(node, field, float(value))
                except (OverflowError, TypeError, ValueError):
                    raise RpcError("invalid_params", f"{where}: node {node.id} {field} "
                                   f"{_kind(value)} is not a double") from None
        label = node.label
        if label and not label.isascii():
            _check_text(label, f"{where}: node {node.id} label")
        attrs = node.attrs
        if attrs:
            for key, value in attrs.items():
                if type(value) is int and not _INT64_MIN <= value <= _UINT64_MAX:
                    raise RpcError("invalid_params", f"{where}: node {node.id} attribute "
                                   f"{key!r} is an integer of {value.bit_length()} bits, "
                                   "more than MessagePack's 64")
                if type(value) is str and not value.isascii():
                    _check_text(value, f"{where}: node {node.id} attribute {key!r}")
        loc = node.source
        if loc is not None and not loc[0].isascii():
            _check_text(loc[0], f"{where}: node {node.id} source file")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RpcError("invalid_params", f"{where} is not valid Unicode ({exc.reason} at "
                       f"character {exc.start})") from None


def _document_to_doubles(doc: Any) -> Any:
    """A graph document whose numbers are doubles: ``data`` and ``grad`` ints converted on
    entry (as over the wire), refused with ``bad_file`` naming the node when too big. The rest
    of the document is checked by the file loader. Changes ``doc`` in place (it is the
    request's own decoded data) and returns it."""
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list):
        return doc
    for i, raw in enumerate(nodes):
        if type(raw) is not dict:
            continue
        for field in ("data", "grad"):
            value = raw.get(field)
            if type(value) is int:
                try:
                    raw[field] = float(value)
                except OverflowError:
                    raise RpcError("bad_file", f"node {i}: {field!r} is an integer too big for "
                                   f"a double ({value.bit_length()} bits)",
                                   {"node": i, "field": field}) from None
        attrs = raw.get("attrs")
        if type(attrs) is dict:
            for key, value in attrs.items():
                if type(value) is int and not _INT64_MIN <= value <= _UINT64_MAX:
                    raise RpcError("bad_file", f"node {i}: attribute {key!r} is an integer of "
                                   f"{value.bit_length()} bits, more than MessagePack's 64",
                                   {"node": i, "field": "attrs"})
    return doc


def node_record(value: Value) -> dict[str, Any]:
    """A node as plain data: what ``node.get`` returns for each id."""
    op = value.opdef
    loc = value.source
    source = None if loc is None else [loc[0], loc[1]]
    if op is None:  # a leaf (about half the nodes of most graphs): nothing to look up
        return {"id": value.id, "op": None, "symbol": "", "inputs": [], "attrs": {},
                "data": value.data, "grad": value.grad, "label": value.label, "source": source}
    attrs = value.attrs
    return {
        "id": value.id,
        "op": op.name,
        "symbol": op.format_symbol(attrs),
        "inputs": [i.id for i in value.inputs],
        "attrs": attrs,
        "data": value.data,
        "grad": value.grad,
        "label": value.label,
        "source": source,
    }


def translate(exc: BaseException) -> RpcError:
    """The RPC error for an exception from opgraph (anything else: internal_error)."""
    if isinstance(exc, RpcError):
        return exc
    table: list[tuple[Any, str]] = [
        (UnknownOpError, "unknown_op"),
        (NodeNotFoundError, "unknown_node"),
        (NotALeafError, "not_a_leaf"),
        (GraphLimitError, "limit_exceeded"),
        (ForwardError, "op_failed"),
        (GradRuleError, "op_failed"),
        (RuleError, "op_failed"),  # an op failing inside graph.eval, too
        (GraphFileError, "bad_file"),
        (ExpressionError, "bad_expression"),
        (ArityError, "invalid_params"),
        (AttributeSpecError, "invalid_params"),
        (InputTypeError, "invalid_params"),
        (GraphMismatchError, "invalid_params"),
        (PluginError, "internal_error"),  # the server's own installation is broken
        (OpgraphError, "invalid_params"),
    ]
    for kind, name in table:
        if isinstance(exc, kind):
            return RpcError(name, str(exc))
    return RpcError("internal_error", f"{type(exc).__name__}: {exc}")


# --- lifecycle ------------------------------------------------------------------------------


@method("initialize", options=("token", "client", "errors", "neovim"), before_initialize=True)
async def initialize(call: Call, token: Any = None, client: Any = None, errors: Any = None,
                     neovim: Any = False) -> dict[str, Any]:
    """Handshake: check the token, note the client, return versions, methods, ops and limits."""
    server, session = call.server, call.session
    if server.token is not None and not server.check_token(token):
        raise RpcError("unauthorized", "initialize: missing or wrong token")
    if errors not in (None, "default", "structured"):
        raise call.invalid(f"errors must be 'default' or 'structured', got {_kind(errors)}")
    if client is not None and not isinstance(client, str | dict):
        raise call.invalid(f"client must be a name or a map, got {_kind(client)}")
    session.initialized = True
    session.structured_errors = errors == "structured"
    session.client = client
    name = client.get("name") if isinstance(client, dict) else client
    session.neovim = bool(neovim) or name in ("nvim", "neovim")
    return {
        "name": "opgraph",
        "version": opgraph.__version__,
        "protocol": PROTOCOL_VERSION,
        "methods": sorted(METHODS),
        "notifications": ["graph.changed", "graph.diagnostics", "graph.dropped"],
        "ops": _op_catalogue(),
        "limits": server.limits.to_dict(),
    }


@method("shutdown")
def shutdown(call: Call) -> None:
    """End the session: the reply is sent, then the connection is closed."""
    call.session.closing = True


def _op_catalogue() -> list[dict[str, Any]]:
    return [
        {"name": op.name, "arity": op.arity, "symbol": op.symbol, "doc": op.doc,
         "plugin": op.plugin, "attrs": list(op.attrs)}
        for op in opgraph.default_registry()
    ]


@method("ops.list")
def ops_list(call: Call) -> list[dict[str, Any]]:
    """The op catalogue."""
    return _op_catalogue()


# --- graphs ---------------------------------------------------------------------------------


def _graph_summary(entry: Entry) -> dict[str, Any]:
    return {"name": entry.name, "nodes": entry.size, "version": entry.version,
            "subscribers": len(entry.subscribers)}


@method("graph.create", ("name",), options=("replace",))
async def graph_create(call: Call, name: Any, replace: Any = False) -> dict[str, Any]:
    """A new, empty named graph."""
    name = call.text(name, "name")
    if not name:
        raise call.invalid("name must not be empty")
    if not isinstance(replace, bool):
        raise call.invalid(f"replace must be true or false, got {_kind(replace)}")
    old = call.server.graphs.get(name)
    if old is not None and not replace:
        raise RpcError("graph_exists", f"a graph named {name!r} exists (pass replace: true)")
    graph = Graph(name, max_nodes=call.server.limits.max_nodes)
    if old is not None:
        async with old.lock.write():
            graph.version = old.graph.version + 1
            old.graph = graph
            gc.unfreeze()  # the replaced graph's objects: back to the collector
            call.server.changed(old)
        return _graph_summary(old)
    entry = call.server.add_graph(graph)
    return _graph_summary(entry)


@method("graph.list")
def graph_list(call: Call) -> list[dict[str, Any]]:
    """Every graph: name, node count, version, subscriber count."""
    return [_graph_summary(e) for e in sorted(call.server.graphs.values(), key=lambda e: e.name)]


@method("graph.info", ("graph",))
async def graph_info(call: Call, graph: Any) -> dict[str, Any]:
    """A graph's size, version, leaves and outputs."""
    entry = call.entry(graph)
    async with entry.lock.read():
        g = entry.graph
        return {**_graph_summary(entry), "leaves": [v.id for v in g.leaves],
                "outputs": [v.id for v in g.outputs]}


@method("graph.drop", ("graph",))
async def graph_drop(call: Call, graph: Any) -> dict[str, Any]:
    """Delete a graph; its subscribers get ``graph.dropped``."""
    entry = call.entry(graph)
    async with entry.lock.write():
        call.server.drop_graph(entry)
    return {"graph": entry.name, "dropped": True}


@method("graph.export", ("graph",), options=("format",))
async def graph_export(call: Call, graph: Any, format: Any = "document") -> Any:
    """The graph in the file format: a map (default), or ``msgpack`` bytes, or ``json`` text."""
    from opgraph import fileformat

    entry = call.entry(graph)
    if format not in ("document", "msgpack", "json"):
        raise call.invalid(f"format must be 'document', 'msgpack' or 'json', got {_kind(format)}")
    async with entry.lock.read():
        if format == "document":
            return await call.in_thread(lambda: pack_chunked(fileformat.to_document(
                entry.graph)))
        if format == "json":
            return await call.in_thread(fileformat.to_json, entry.graph)
        # The file's bytes as fileformat.dumps writes them, encoded node by node (see
        # pack_chunked: msgpack holds the interpreter lock for all of one call).
        return await call.in_thread(lambda: bytes(pack_chunked(
            fileformat.to_document(entry.graph), _file_packer())))


def _file_packer() -> Any:
    import msgpack

    return msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass")


@method("graph.import", ("graph", "data"), options=("replace",))
async def graph_import(call: Call, graph: Any, data: Any, replace: Any = False) -> dict[str, Any]:
    """Create (or with ``replace``, replace) a graph from the file format: a map or bytes."""
    if not isinstance(replace, bool):
        raise call.invalid(f"replace must be true or false, got {_kind(replace)}")
    return await _import(call, graph, data, replace)


@method("graph.publish", ("graph", "data"))
async def graph_publish(call: Call, graph: Any, data: Any) -> dict[str, Any]:
    """Create or replace a graph from a document (a client's local graph, with its sources).

    Subscribers see a new version, as for any other change.
    """
    return await _import(call, graph, data, True)


def _parse_file(data: bytes) -> Any:
    """The document in graph-file bytes. A big msgpack file is decoded node by node
    (`unpack_chunked`: the decoder would hold the interpreter lock for all of one call);
    anything it cannot read goes to the file loader, which says what is wrong."""
    from opgraph import fileformat

    if len(data) > 1 << 20 and data.lstrip()[:1] not in (b"{", b"[", b"\xef"):
        try:
            return unpack_chunked(data, level=1)
        except Exception:  # (fileformat.parse names the problem)
            pass
    return fileformat.parse(data)


def _load_document(doc: Any) -> Graph:
    """A graph from a decoded document: its numbers made doubles first, then every value
    checked to be sendable (so that a graph on the server can always be sent)."""
    from opgraph import fileformat

    graph = fileformat.from_document(_document_to_doubles(doc))
    _settle(graph.nodes, "graph.import")
    return graph


async def _import(call: Call, name: Any, data: Any, replace: bool) -> dict[str, Any]:

    name = call.text(name, "graph")
    if not name:
        raise call.invalid("graph name must not be empty")
    old = call.server.graphs.get(name)
    if old is not None and not replace:
        raise RpcError("graph_exists", f"a graph named {name!r} exists (pass replace: true)")
    if isinstance(data, bytes):
        def loader(data: bytes) -> Graph:
            return _load_document(_parse_file(data))
    elif isinstance(data, dict):
        loader = _load_document
    else:
        raise call.invalid(f"data must be a graph document (map) or msgpack bytes, got "
                           f"{_kind(data)}")
    nodes = data.get("nodes") if isinstance(data, dict) else None
    limit = call.server.limits.max_nodes
    if isinstance(nodes, list) and len(nodes) > limit:
        raise RpcError("limit_exceeded", f"the graph has {len(nodes)} nodes; the limit is {limit}")
    graph = await call.in_thread(loader, data)
    if len(graph.nodes) > limit:
        raise RpcError("limit_exceeded",
                       f"the graph has {len(graph.nodes)} nodes; the limit is {limit}")
    graph.name = name
    graph.max_nodes = limit
    if old is not None:
        async with old.lock.write():
            graph.version = max(graph.version, old.graph.version + 1)
            old.graph = graph
            gc.unfreeze()  # the replaced graph's objects: back to the collector
            call.server.changed(old)
        return _graph_summary(old)
    return _graph_summary(call.server.add_graph(graph))


# --- nodes ----------------------------------------------------------------------------------


def _source_option(call: Call, source: Any) -> tuple[str, int] | None:
    if source is None:
        return None
    if (not isinstance(source, list | tuple) or len(source) != 2
            or not isinstance(source[0], str) or type(source[1]) is not int):
        raise call.invalid(f"source must be [file, line], got {_kind(source)}")
    return (source[0], source[1])


@method("node.leaf", ("graph", "data"), options=("label", "source"))
async def node_leaf(call: Call, graph: Any, data: Any, label: Any = "",
                    source: Any = None) -> dict[str, Any]:
    """A new leaf; returns its id and the graph's version."""
    entry = call.entry(graph)
    data = call.data(data, "data")
    label = call.text(label, "label", max_length=10_000)
    where = _source_option(call, source)
    async with entry.lock.write():
        node = entry.graph.leaf(data, label, source=where)
        call.server.changed(entry)
        return {"id": node.id, "data": node.data, "version": entry.graph.version}


@method("node.apply", ("graph", "op", "inputs"), options=("label", "source"), any_option=True)
async def node_apply(call: Call, graph: Any, op: Any, inputs: Any, label: Any = "",
                     source: Any = None, **attrs: Any) -> dict[str, Any]:
    """A new node from an op over node ids; other options are the op's attributes."""
    entry = call.entry(graph)
    op = call.text(op, "op")
    ids = call.ids(inputs, "inputs")
    label = call.text(label, "label", max_length=10_000)
    where = _source_option(call, source)
    async with entry.lock.write():
        node = entry.graph.apply(op, ids, attrs, label=label, source=where)
        call.server.changed(entry)
        return {"id": node.id, "data": node.data, "version": entry.graph.version}


@method("node.set", ("graph", "id", "data"))
async def node_set(call: Call, graph: Any, id: Any, data: Any) -> dict[str, Any]:
    """Change a leaf's data; what depends on it is recomputed."""
    entry = call.entry(graph)
    node_id = call.integer(id, "id")
    data = call.data(data, "data")
    async with entry.lock.write():
        changed = await call.change(entry, len(entry.graph.nodes), entry.graph.set,
                                    node_id, data)
        call.server.changed(entry)
        return {"id": node_id, "changed": changed, "version": entry.graph.version}


@method("node.get", ("graph", "ids"))
def node_get(call: Call, graph: Any, ids: Any) -> dict[str, Any]:
    """Id, op, inputs, data, grad, label and source of each node."""
    entry = call.entry(graph)
    wanted = call.ids(ids)
    # No lock: this read runs start to end on the event loop, and so does every change except
    # the big ones in worker threads (`Call.change`); while one of those runs, wait for it.
    if entry.lock.writing or len(wanted) > THREADED_RECORDS:
        return _node_get_waiting(call, entry, wanted)
    return _node_records(entry.graph, wanted)


async def _node_get_waiting(call: Call, entry: Entry, wanted: list[int]) -> Any:
    async with entry.lock.read():
        if len(wanted) > THREADED_RECORDS:
            return await call.in_thread(lambda: pack_chunked(_node_records(entry.graph,
                                                                           wanted)))
        return _node_records(entry.graph, wanted)


def _node_records(g: Graph, wanted: list[int]) -> dict[str, Any]:
    nodes, count = g.nodes, len(g.nodes)
    # g.node(i) checks and names a bad id; the common good one is indexed directly.
    return {"version": g.version,
            "nodes": [node_record(nodes[i] if 0 <= i < count else g.node(i)) for i in wanted]}


@method("graph.nodes", ("graph",), options=("start", "count"))
async def graph_nodes(call: Call, graph: Any, start: Any = 0, count: Any = 1000) -> dict[str, Any]:
    """A page of node records in id order (``start``, ``count``), for clients that show a graph."""
    entry = call.entry(graph)
    start = call.integer(start, "start")
    count = call.integer(count, "count")
    if start < 0 or not 0 <= count <= 100_000:
        raise call.invalid("start must be >= 0 and count within 0..100000")
    async with entry.lock.read():
        g = entry.graph

        def page() -> dict[str, Any]:
            return {"version": g.version, "total": len(g.nodes),
                    "nodes": [node_record(v) for v in g.nodes[start:start + count]]}

        if min(count, len(g.nodes) - start) > THREADED_RECORDS:
            return await call.in_thread(lambda: pack_chunked(page()))
        return page()


@method("graph.batch", ("graph", "steps"))
async def graph_batch(call: Call, graph: Any, steps: Any) -> dict[str, Any]:
    """Many leaf/apply steps in one request, all or nothing.

    A step is ``{"leaf": data, "label"?, "source"?}`` or ``{"op": name, "inputs": [...],
    "label"?, "source"?, "attrs"?}``; an input is a node id, or ``"$k"`` for the node made by
    step ``k`` of this batch. Returns the new ids in step order.
    """
    entry = call.entry(graph)
    if not isinstance(steps, list):
        raise call.invalid(f"steps must be a list, got {_kind(steps)}")
    limit = call.server.limits.max_nodes
    if entry.size + len(steps) > limit:
        raise RpcError("limit_exceeded", f"{len(steps)} steps would take graph "
                                         f"{entry.name!r} over its limit of {limit} nodes")
    async with entry.lock.write():
        g = entry.graph
        mark = g.checkpoint()
        try:
            ids = await call.change(entry, len(steps), _run_steps_frozen, call, g, steps)
        except BaseException:
            if not call.server.stopping:  # (then a worker thread may still be changing it)
                g.rollback(mark)
            raise
        call.server.changed(entry)
        return {"ids": ids, "version": g.version}


def _run_steps_frozen(call: Call, g: Graph, steps: list[Any]) -> list[int]:
    with gc_paused():
        try:
            return _run_steps(call, g, steps)
        finally:
            gc.freeze()  # the new nodes are long-lived: keep them out of collections


def _run_steps(call: Call, g: Graph, steps: list[Any]) -> list[int]:
    made: list[int] = []
    for k, step in enumerate(steps):
        # Messages are built only on failure: this loop runs once per node of a big batch.
        if type(step) is not dict:
            raise call.invalid(f"step {k} must be a map, got {_kind(step)}")
        if not _STEP_KEYS.issuperset(step) or ("op" in step) == ("leaf" in step):
            _refuse_step_keys(call, k, step)
        label = step.get("label", "")
        if type(label) is not str:
            label = call.text(label, f"step {k} label")
        source = step.get("source")
        if source is not None:
            source = _source_option(call, source)
        try:
            if "op" in step:
                raw = step.get("inputs")
                if type(raw) is not list:
                    raise call.invalid(f"step {k} inputs must be a list, got {_kind(raw)}")
                inputs = [r if type(r) is int else _step_ref(call, r, made, k, n)
                          for n, r in enumerate(raw)]
                attrs = step.get("attrs")
                if attrs is not None and type(attrs) is not dict:
                    raise call.invalid(f"step {k} attrs must be a map")
                op = step["op"]
                if type(op) is not str:
                    op = call.text(op, f"step {k} op")
                node = g.apply(op, inputs, attrs, label=label, source=source)
            elif "leaf" in step:
                data = step["leaf"]
                if type(data) is not float:
                    data = call.data(data, f"step {k} leaf")
                node = g.leaf(data, label, source=source)
            else:
                raise call.invalid(f"step {k} needs a 'leaf' or an 'op' key")
        except RpcError:
            raise
        except OpgraphError as exc:
            error = translate(exc)
            raise RpcError(error.name, f"graph.batch step {k}: {error.message}") from exc
        made.append(node.id)  # type: ignore[arg-type]
    return made


_STEP_KEYS = frozenset(("leaf", "op", "inputs", "attrs", "label", "source"))


def _refuse_step_keys(call: Call, k: int, step: dict[Any, Any]) -> None:
    import difflib

    for key in step:
        if key not in _STEP_KEYS:
            close = difflib.get_close_matches(str(key), list(_STEP_KEYS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise call.invalid(f"step {k}: unknown key {key!r}{hint}")
    raise call.invalid(f"step {k} needs exactly one of 'leaf' and 'op'")


def _step_ref(call: Call, ref: Any, made: list[int], step: int, index: int) -> int:
    """A step's input: a node id, or ``"$k"`` for the node made by step ``k`` of the batch."""
    if type(ref) is str and ref[:1] == "$" and ref[1:].isdigit():
        k = int(ref[1:])
        if k < len(made):
            return made[k]
        raise call.invalid(f"step {step} input {index}: {ref!r} refers to a step that is "
                           "not before it")
    raise call.invalid(f"step {step} input {index} must be a node id or '$k', got {_kind(ref)}")


@method("graph.eval", ("graph", "expression"), ("bindings",), options=("label", "keep"))
async def graph_eval(call: Call, graph: Any, expression: Any, bindings: Any = None,
                     label: Any = "", keep: Any = True) -> dict[str, Any]:
    """Parse an expression into nodes (registered ops only; never Python's eval).

    The new nodes join the shared graph (a new version, seen by every client); with
    ``keep`` false the expression is evaluated on copies and the graph is left as it was.
    """
    from opgraph import expr

    entry = call.entry(graph)
    expression = call.text(expression, "expression", max_length=expr.MAX_LENGTH)
    bindings = {} if bindings in (None, []) else bindings  # Neovim sends {} as []
    if not isinstance(bindings, dict) or not all(isinstance(k, str) for k in bindings):
        raise call.invalid(f"bindings must be a map of names, got {_kind(bindings)}")
    label = call.text(label, "label", max_length=10_000)
    if not isinstance(keep, bool):
        raise call.invalid(f"keep must be true or false, got {_kind(keep)}")
    if not keep and label:
        raise call.invalid("a label names a new node of the graph; with keep false "
                           "nothing is added to it")
    # Parsing a long expression, and looking names up among the labels of a big graph, take
    # a while: then in a worker thread.
    size = max(len(entry.graph.nodes), 20 * len(expression))
    if not keep:
        async with entry.lock.read():
            g = entry.graph

            def evaluate() -> float:
                resolved = _bindings(call, g, expression, bindings)
                copies = {name: Value(v.data, v.label)
                          if isinstance(v, Value) else v
                          for name, v in resolved.items()}
                return float(expr.build(expression, copies)[0].data)

            data = evaluate() if size < THREADED_CHANGE_NODES else await call.in_thread(evaluate)
            return {"root": None, "data": data, "leaves": {}, "version": g.version}
    async with entry.lock.write():
        g = entry.graph
        mark = g.checkpoint()

        def build() -> tuple[Value, dict[str, Value]]:
            resolved = _bindings(call, g, expression, bindings)
            root, leaves = expr.build(expression, resolved, graph=g)
            _settle(g.nodes[mark[0]:], "graph.eval")
            if label:
                if root.id is not None and root.id < mark[0]:
                    raise call.invalid(
                        f"the expression {expression!r} is the existing node {root.id}; "
                        "a label names a new node only")
                root.label = label
            return root, leaves

        try:
            root, leaves = await call.change(entry, size, build)
        except BaseException:
            if not call.server.stopping:  # (then a worker thread may still be building)
                g.rollback(mark)
            raise
        call.server.changed(entry)
        return {"root": root.id, "data": root.data,
                "leaves": {k: v.id for k, v in leaves.items()}, "version": g.version}


def _bindings(call: Call, g: Graph, expression: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers become new leaves; ``{"id": n}`` is an existing node; unbound names are looked
    up by label in the graph."""
    from opgraph import expr

    resolved: dict[str, Any] = {}
    for name, value in given.items():
        if isinstance(value, dict) and set(value) == {"id"}:
            resolved[name] = g.node(call.integer(value["id"], f"binding {name!r} id"))
        else:
            resolved[name] = call.data(value, f"binding {name!r}")
    for name in expr.parse(expression).names:
        if name not in resolved:
            found = g.find(name)
            if len(found) == 1:
                resolved[name] = found[0]
            elif found:
                ids = ", ".join(str(v.id) for v in found[:10])
                raise call.invalid(f"{name!r} labels {len(found)} nodes (ids {ids}); bind it "
                                   f"to one of them with {{{name!r}: {{\"id\": n}}}}")
    return resolved


# --- gradients ------------------------------------------------------------------------------


@method("graph.backward", ("graph", "root"))
async def graph_backward(call: Call, graph: Any, root: Any) -> dict[str, Any]:
    """Zero the graph's gradients, then backpropagate from ``root``."""
    entry = call.entry(graph)
    root = call.integer(root, "root")
    async with entry.lock.write():
        reached = await call.change(entry, len(entry.graph.nodes), entry.graph.backward,
                                    root)
        call.server.changed(entry)
        return {"root": root, "reached": len(reached), "version": entry.graph.version}


@method("graph.grads", ("graph", "root", "ids"))
async def graph_grads(call: Call, graph: Any, root: Any, ids: Any) -> dict[str, Any]:
    """Backpropagate from ``root`` and return the gradient of each of ``ids``."""
    entry = call.entry(graph)
    root = call.integer(root, "root")
    wanted = call.ids(ids)
    async with entry.lock.write():
        g = entry.graph
        for i in wanted:
            g.node(i)
        await call.change(entry, len(g.nodes), g.backward, root)
        call.server.changed(entry)
        return {"root": root, "grads": {str(i): g.nodes[i].grad for i in wanted},
                "version": g.version}


@method("graph.gradcheck", ("graph", "root"), options=("eps",))
async def graph_gradcheck(call: Call, graph: Any, root: Any, eps: Any = 1e-6) -> dict[str, Any]:
    """Analytic gradients of ``root`` against central finite differences, per leaf."""
    entry = call.entry(graph)
    root = call.integer(root, "root")
    eps = call.number(eps, "eps")
    if not 0 < eps < 1:
        raise call.invalid("eps must be within (0, 1)")
    limit = call.server.limits.max_gradcheck_leaves
    async with entry.lock.read():
        node = entry.graph.node(root)
        version = entry.graph.version
        # gradcheck zeroes, sets and restores grads as it goes: on the shared graph other
        # readers would see that half-done state, and two gradchecks at once could restore
        # each other's (leaving wrong grads). So it checks a private copy, taken under the lock.
        copy = await call.in_thread(_copy_for_gradcheck, entry.graph, node, limit)
    report = await call.in_thread(lambda: opgraph.gradcheck(copy.nodes[root], eps=eps))
    return {"ok": report.ok, "root": root, "version": version,
            "leaves": [_finite(leaf.__dict__) for leaf in report.leaves],
            "bad_ops": [_finite(b.__dict__) for b in report.bad_ops]}


def _copy_for_gradcheck(graph: Graph, node: Value, limit: int) -> Graph:
    """A copy of ``graph`` (same ids) to run gradcheck on, after checking the leaf limit."""
    from opgraph import fileformat

    leaves = sum(1 for v in topological_order(node) if v.is_leaf)
    if leaves > limit:
        raise RpcError("limit_exceeded", f"root {node.id} depends on {leaves} leaves; "
                                         f"gradcheck checks at most {limit}")
    return fileformat.from_document(fileformat.to_document(graph))


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in record.items()}


# --- analysis and pictures ------------------------------------------------------------------


@method("graph.analyze", ("graph",), options=("root", "node", "leaf", "diagnostics"))
async def graph_analyze(call: Call, graph: Any, root: Any = None, node: Any = None,
                        leaf: Any = None, diagnostics: Any = True) -> dict[str, Any]:
    """networkx analyses: size, depth, widths, critical path, dominators, influence, ops."""
    from opgraph.analysis import analyze

    entry = call.entry(graph)
    for value, what in ((root, "root"), (node, "node"), (leaf, "leaf")):
        if value is not None:
            call.integer(value, what)
    async with entry.lock.read():
        version = entry.graph.version
        return await call.in_thread(lambda: pack_chunked({**analyze(
            entry.graph, root=root, node=node, leaf=leaf,
            diagnostics=bool(diagnostics)).to_dict(), "version": version}))


@method("graph.diagnostics", ("graph",))
async def graph_diagnostics(call: Call, graph: Any) -> dict[str, Any]:
    """Diagnostics from the plugins: code, severity, node, message."""
    from opgraph.diagnostics import run_diagnostics

    entry = call.entry(graph)
    async with entry.lock.read():
        version = entry.graph.version

        def report() -> Packed:
            result = run_diagnostics(entry.graph)
            return pack_chunked({"version": version,
                                 "diagnostics": [d.to_dict() for d in result.diagnostics],
                                 "problems": [str(p) for p in result.problems]})

        return await call.in_thread(report)


@method("graph.render", ("graph",), options=("format", "around", "depth", "rankdir",
                                             "max_nodes", "diagnostics"))
async def graph_render(call: Call, graph: Any, format: Any = "svg", around: Any = None,
                       depth: Any = 2, rankdir: Any = "LR", max_nodes: Any = None,
                       diagnostics: Any = True) -> dict[str, Any]:
    """The graph drawn by graphviz: SVG or DOT text, or PNG bytes; whole or around a node.

    What the picture needs is read under the graph's read lock (in a worker thread); ``dot``
    lays it out after the lock is released, in a subprocess killed when the time limit passes
    or the request is cancelled (the client gone, the server stopping).
    """
    from opgraph.render import plan

    entry = call.entry(graph)
    if format not in ("svg", "dot", "png"):
        raise call.invalid(f"format must be 'svg', 'dot' or 'png', got {_kind(format)}")
    if around is not None:
        call.integer(around, "around")
    depth = call.integer(depth, "depth")
    if not 0 <= depth <= 50:
        raise call.invalid("depth must be within 0..50")
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise call.invalid(f"rankdir must be LR, RL, TB or BT, got {_kind(rankdir)}")
    limits = call.server.limits
    cap = limits.max_render_nodes
    limit = cap if max_nodes is None else min(call.integer(max_nodes, "max_nodes"), cap)
    if limit < 1:
        raise call.invalid(f"max_nodes must be at least 1, got {max_nodes!r}")
    deadline = asyncio.get_running_loop().time() + limits.request_timeout
    async with entry.lock.read():
        try:
            picture = await call.in_thread(lambda: plan(
                entry.graph, format=format, around=around, depth=depth, rankdir=rankdir,
                max_nodes=limit, max_layout=limits.max_render_layout,
                diagnostics=bool(diagnostics), fallback=True))
        except ValueError as exc:  # a neighbourhood too big to draw
            raise call.invalid(str(exc)) from None
        version = entry.graph.version
    image, picture = await call.layout(picture, deadline)
    data: Any = image if format == "png" else image.decode()
    return {"format": format, "data": data, "version": version, **picture.describe()}


# --- subscriptions --------------------------------------------------------------------------


@method("graph.subscribe", ("graph",))
async def graph_subscribe(call: Call, graph: Any) -> dict[str, Any]:
    """Get ``graph.changed`` and ``graph.diagnostics`` notifications for this graph."""
    entry = call.entry(graph)
    entry.subscribers.add(call.session)
    call.session.subscriptions.add(entry.name)
    return {"graph": entry.name, "version": entry.version}


@method("graph.unsubscribe", ("graph",))
async def graph_unsubscribe(call: Call, graph: Any) -> dict[str, Any]:
    """Stop this graph's notifications."""
    entry = call.entry(graph)
    entry.subscribers.discard(call.session)
    call.session.subscriptions.discard(entry.name)
    return {"graph": entry.name, "version": entry.version}

