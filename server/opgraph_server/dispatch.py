"""Dispatching a request to its method: the method table, the checks before a handler runs,
what a handler gets (`Call`), and how an exception becomes a wire error (`translate`).

A method is a function ``(call, *args, **options)`` registered with `method`, which records its
required arguments and the option names it accepts; it is ``async`` when it waits (for a
graph's lock or a worker thread), plain when it answers at once (``node.get``: the session then
makes no coroutine for it). `check` authorises the call and splits ``params`` (arguments by
position, then one optional map of options). Handlers live in the `opgraph_server.methods`
package, one module per family; they reach the server only through `Host` and the session
only through `Peer`, so a handler can be run against any object with those few members.

Long reads (analyses, pictures, gradcheck, export; `Call.in_thread`) and big changes
(`Call.change`) run in worker threads, so one client's big work does not stall another's small
queries.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

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
from opgraph_server.errors import RpcError
from opgraph_server.params import kind
from opgraph_server.protocol import split_params

if TYPE_CHECKING:
    from opgraph.graph import Graph
    from opgraph_server.durable import Durable
    from opgraph_server.limits import Limits
    from opgraph_server.store import Entry

MAX_NAME_LENGTH = 200
MAX_IDS = 100_000
"""Node ids per node.get / graph.grads request (as graph.nodes pages at most 100,000)."""
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
"""Every method by name (filled as the `opgraph_server.methods` modules are imported)."""


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
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        parameters = inspect.signature(handler).parameters.values()
        reserved = frozenset(p.name for p in parameters
                             if p.kind is not p.VAR_KEYWORD and p.name not in options)
        METHODS[name] = MethodSpec(name, handler, required, optional, frozenset(options),
                                   before_initialize, any_option,
                                   inspect.iscoroutinefunction(handler),
                                   -1 if optional else len(required), reserved)
        return handler

    return register


class Host(Protocol):
    """What handlers need of the server (`opgraph_server.server.Server` is the one host)."""

    limits: Limits
    instance: str
    """This server's id, unique to its life (``initialize`` reports it)."""
    token: str | None
    """The token clients must give in ``initialize`` (None: no token needed)."""
    stopping: bool
    """Whether the server is stopping (requests in flight are being cancelled)."""
    layouts: asyncio.Semaphore
    """Taken while ``dot`` runs (at most so many at once)."""
    durable: Durable | None
    """The store changes are committed to before they are answered (None: memory only). A
    handler needs nothing of it: the changes it reports (`changed`, `add_graph`, ...) are
    recorded, and its answer is held until they are committed."""

    @property
    def graphs(self) -> Mapping[str, Entry]:
        """The graphs by name (read only: add, drop and replace go through the methods
        below)."""
        ...

    def check_token(self, token: Any) -> bool:
        """Whether ``token`` is the server's token (False when it has none)."""
        ...

    def run_read(self, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``func(*args)`` in a worker thread for reads, the collector paused."""
        ...

    def run_change(self, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``func(*args)`` in a worker thread for changes, the collector paused."""
        ...

    def frozen(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` here, the collector paused and what it made kept out of its reach
        after (for work that makes many long-lived objects)."""
        ...

    def changed(self, entry: Entry) -> None:
        """Note a change of ``entry``'s graph (its subscribers will be told)."""
        ...

    def add_graph(self, graph: Graph) -> Entry:
        """Share ``graph`` under its name."""
        ...

    def drop_graph(self, entry: Entry) -> None:
        """Remove a graph and tell its subscribers."""
        ...

    async def replace_graph(self, entry: Entry, graph: Graph) -> None:
        """Put ``graph`` in the place of ``entry``'s, as a new version."""
        ...

    def subscribe(self, peer: Peer, name: str) -> Entry | None:
        """Subscribe ``peer`` to graph ``name`` (None: the graph does not exist yet)."""
        ...

    def unsubscribe(self, peer: Peer, name: str) -> bool:
        """End ``peer``'s subscription to graph ``name``; False when it had none."""
        ...


class Peer(Protocol):
    """What handlers read and set of the calling session (`opgraph_server.server.Session`)."""

    initialized: bool
    structured_errors: bool
    neovim: bool
    client: Any
    subscriptions: set[str]
    closing: bool
    """Set to close the connection once the answer is sent."""


_NO_OPTIONS: dict[str, Any] = {}  # passed as **options only, so never changed


def check(host: Host, peer: Peer, name: str,
          params: list[Any]) -> tuple[MethodSpec, list[Any], dict[str, Any]]:
    """Check one method call of ``peer``: its method, authorisation, arguments and options.

    Raises `RpcError` for an unknown method, missing authorisation or bad parameters.
    """
    spec = METHODS.get(name)
    # With a token, every request before a successful initialize fails, unknown methods
    # included (so an unauthorised peer learns nothing, not even the method names).
    if not peer.initialized and (spec is None or not spec.before_initialize):
        if host.token is not None:
            raise RpcError("unauthorized", f"{name}: call initialize with the server's "
                                           "token first")
        if spec is not None:
            peer.initialized = True  # without a token, initialize is optional
    if spec is None:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RpcError("method_not_found", f"no method named {name!r}{hint}")
    if len(params) == spec.exact:  # every argument given, no options: nothing to split
        return spec, params, _NO_OPTIONS
    args, options = split_params(name, params, spec.required, spec.optional,
                                 options=spec.allowed_options, reserved=spec.reserved)
    return spec, args, options


def translate(exc: BaseException) -> RpcError:
    """The RPC error for an exception from opgraph (anything else: internal_error)."""
    if isinstance(exc, RpcError):
        return exc
    for kind_, name in _TRANSLATIONS:
        if isinstance(exc, kind_):
            return RpcError(name, str(exc))
    return RpcError("internal_error", f"{type(exc).__name__}: {exc}")


_TRANSLATIONS: tuple[tuple[type[BaseException], str], ...] = (
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
)
"""Exception classes of opgraph and the error name each stands for, the first match wins."""


class Call:
    """What a method handler gets: the host, the calling session, and the method's name."""

    __slots__ = ("host", "method", "session")

    def __init__(self, host: Host, session: Peer, method: str) -> None:
        self.host = host
        self.session = session
        self.method = method

    def invalid(self, message: str) -> RpcError:
        """An invalid_params error that names this method."""
        return RpcError("invalid_params", f"{self.method}: {message}")

    def entry(self, name: Any) -> Entry:
        """The named graph, or an unknown_graph error listing close names."""
        if type(name) is str and len(name) <= MAX_NAME_LENGTH:  # the common case, in one test
            entry = self.host.graphs.get(name)
            if entry is not None:
                return entry
        name = self.text(name, "graph")
        entry = self.host.graphs.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, list(self.host.graphs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RpcError("unknown_graph", f"no graph named {name!r}{hint}")
        return entry

    def text(self, value: Any, what: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
        """A string argument."""
        if not isinstance(value, str):
            raise self.invalid(f"{what} must be a string, got {kind(value)}")
        if len(value) > max_length:
            raise self.invalid(f"{what} is longer than {max_length} characters")
        return value

    def integer(self, value: Any, what: str) -> int:
        """An integer argument."""
        if type(value) is not int:
            raise self.invalid(f"{what} must be an integer, got {kind(value)}")
        return value

    def number(self, value: Any, what: str) -> float:
        """A real-number argument (int or float)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.invalid(f"{what} must be a number, got {kind(value)}")
        return value

    def flag(self, value: Any, what: str) -> bool:
        """A true-or-false argument."""
        if not isinstance(value, bool):
            raise self.invalid(f"{what} must be true or false, got {kind(value)}")
        return value

    def data(self, value: Any, what: str) -> float:
        """A number that becomes a node's data: always an IEEE double (an int is converted,
        as PyTorch and JAX do with float64 tensors), so that no arithmetic on it is exact
        integer arithmetic, whose cost grows with the numbers (squaring doubles the digits)."""
        if type(value) is float:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.invalid(f"{what} must be a number, got {kind(value)}")
        try:
            return float(value)
        except OverflowError:  # (only an int is too big for a double)
            raise self.invalid(f"{what} is an integer too big for a double "
                               f"({int(value).bit_length()} bits)") from None

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
                           f"{kind(value)}")

    def small(self, size: int) -> bool:
        """Whether work that grows with ``size`` nodes is quick enough for the event loop."""
        return size < THREADED_CHANGE_NODES

    async def in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking read (an analysis, a picture) in a worker thread, so the event loop
        keeps answering others.

        This is where the request time limit applies (big changes run to their end instead: see
        `change`). A thread that runs over is answered with ``limit_exceeded`` and left to
        finish in the background (its result is dropped).
        """
        limit = self.host.limits.request_timeout
        try:
            async with asyncio.timeout(limit):
                return await self.host.run_read(func, *args)
        except TimeoutError:
            raise RpcError("limit_exceeded", f"{self.method} took longer than {limit:g} s") \
                from None

    async def layout(self, picture: Any, deadline: float) -> tuple[bytes, Any]:
        """``(bytes, picture)``: the `opgraph.render.Picture` laid out by ``dot`` by the
        loop time ``deadline``, or, when a whole graph does not get done in half the time
        left, its summary in the rest (``picture`` is then the summary). ``dot`` runs in a
        subprocess, killed on time out or cancellation; at most `Host.layouts` at once."""
        from opgraph.render import LayoutTimeout, layout_async

        loop = asyncio.get_running_loop()
        limit = self.host.limits.request_timeout
        try:
            async with asyncio.timeout_at(deadline), self.host.layouts:
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
        host = self.host
        try:
            entry.settled = (len(graph.nodes), graph.version)
            future = host.run_change(func, *args)
            while True:
                try:
                    result = await asyncio.shield(future)
                    break
                except asyncio.CancelledError:
                    if not future.done():
                        if host.stopping:
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
