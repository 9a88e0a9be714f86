"""MessagePack-RPC with no I/O, in the manner of h11: bytes in, events out; events in, bytes out.

Use one `RpcProtocol` per connection::

    proto = RpcProtocol()
    proto.receive_data(chunk)          # b"" means the peer closed its side
    for event in proto.events():       # Request, Response, Notification, Rejected, ConnectionClosed
        ...
    writer.write(proto.send(Response(msgid, None, result)))

Wire shapes (msgpack-rpc): request ``[0, msgid, method, params]``, response
``[1, msgid, error, result]``, notification ``[2, method, params]``. ``msgid`` is an integer in
0 .. 2**32-1 (0 included), ``method`` a str or bin (bin is decoded as UTF-8; pynvim sends bin),
``params`` an array. Strings decode to `str`, bin to `bytes`; map keys must be str or bin
(``strict_map_key``: other keys are a parse error, which also rules out hash flooding with
crafted integer keys). Ext types arrive as `msgpack.ExtType` / `msgpack.Timestamp`.

Hardening. Bytes go first through a scanner (`msgpack.Unpacker.skip`, which builds nothing), and
a message is decoded only once it is complete, so a header that claims 2**31 items or a 4 GiB
string allocates nothing: it just waits for bytes that never come (the transport needs an idle
timeout; `RpcProtocol.pending_bytes` says whether a message is half-read). A message longer than
``max_message_size`` bytes, nesting deeper than msgpack's stack (1024), bytes that are not
MessagePack and messages of the wrong shape raise `RemoteProtocolError`; the object is then dead
(`receive_data` and `next_event` raise `LocalProtocolError`) but `send` still works, so the
transport can send `RemoteProtocolError.response` (when the msgid could be read) and close.
A well-formed request whose params nest deeper than ``max_depth`` is not fatal: it comes out as
a `Rejected` event to answer with ``limit_exceeded``, and the connection stays usable.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, cast

import msgpack

from opgraph_server.errors import RpcError, render_error

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_MSGID",
    "NEED_DATA",
    "PAUSE_BYTES",
    "ConnectionClosed",
    "Deferred",
    "Event",
    "LocalProtocolError",
    "Notification",
    "Packed",
    "Pause",
    "ProtocolError",
    "Rejected",
    "RemoteProtocolError",
    "Request",
    "Response",
    "RpcProtocol",
    "Sentinel",
    "pack_chunked",
    "split_params",
    "unpack_chunked",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024
"""Default limit on the size of one received message, in bytes (64 MiB)."""
DEFAULT_MAX_DEPTH: Final = 32
"""Default limit on the nesting of params, counting the params array itself as 1."""
MAX_MSGID: Final = 2**32 - 1
"""The largest msgid; ids are unsigned 32-bit integers and 0 is a valid id."""
PAUSE_BYTES: Final = 1 << 20
"""Messages longer than this are decoded inside the protocol's ``pause`` (see `RpcProtocol`)."""

Pause = Callable[[], AbstractContextManager[object]]
"""What `RpcProtocol` calls around the decoding of a big message: a context manager factory
(a server passes `opgraph.gcpolicy.gc_paused`, so the cyclic garbage collector does not scan
the millions of containers a big message makes; this module pauses nothing itself)."""


class Sentinel(enum.Enum):
    """Sentinel values returned by `RpcProtocol.next_event`."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = Sentinel.NEED_DATA
"""Returned by `RpcProtocol.next_event` when no complete message is buffered."""


# The three messages are immutable named tuples rather than frozen dataclasses: two of them
# are made per request, and a named tuple is made in half the time.


class Request(NamedTuple):
    """``[0, msgid, method, params]``: a call that expects a `Response` with the same msgid."""

    msgid: int
    method: str
    params: list[Any]


class Response(NamedTuple):
    """``[1, msgid, error, result]``: ``error`` is None on success, else ``result`` is None."""

    msgid: int
    error: Any = None
    result: Any = None


class Notification(NamedTuple):
    """``[2, method, params]``: a call that gets no response."""

    method: str
    params: list[Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A well-formed request (``msgid`` set) or notification (``msgid`` None) refused here.

    Today only for params nested deeper than ``max_depth`` (``limit_exceeded``). The
    connection stays usable: answer a request with `response`, drop a notification.
    """

    msgid: int | None
    method: str
    error: RpcError

    def response(self, structured: bool = False) -> Response | None:
        """The error response to send, or None for a notification."""
        if self.msgid is None:
            return None
        return Response(self.msgid, render_error(self.error, structured), None)


@dataclass(frozen=True, slots=True)
class Deferred:
    """A complete message too big to decode in passing (more than ``defer_size`` bytes):
    call `decode` (in a worker thread: it takes a while, and gives way to other threads as it
    goes) for the event it is, or a `RemoteProtocolError`."""

    raw: bytes
    protocol: RpcProtocol

    def decode(self) -> Event:
        """The event, decoded piece by piece (see `unpack_chunked`)."""
        return self.protocol._decode(self.raw, chunked=True)

    def head(self) -> tuple[int, str] | None:
        """``(msgid, method)`` if the message looks like a request (read from its first
        bytes, at once), else None."""
        unpacker = msgpack.Unpacker(None, raw=False, max_buffer_size=len(self.raw))
        unpacker.feed(self.raw[:1024])
        try:
            if unpacker.read_array_header() != 4 or unpacker.unpack() != 0:
                return None
            msgid, method = unpacker.unpack(), unpacker.unpack()
        except Exception:  # not a request, or one that decode will refuse
            return None
        if type(msgid) is int and 0 <= msgid <= MAX_MSGID and type(method) is str:
            return msgid, method
        return None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side (``receive_data(b"")``) between two messages."""


Event = Request | Response | Notification | Rejected | ConnectionClosed
"""Every event a message decodes to (and `ConnectionClosed`)."""


class ProtocolError(Exception):
    """Base of the two protocol errors."""


class LocalProtocolError(ProtocolError):
    """Our side misused the protocol: sent an invalid event, fed a dead or closed connection."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not MessagePack-RPC; the connection must be closed.

    ``error`` says why (``parse_error``, ``invalid_request`` or ``limit_exceeded``); ``msgid``
    is the id of the offending request when it could be read, else None.
    """

    def __init__(self, error: RpcError, msgid: int | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.msgid = msgid

    def response(self, structured: bool = False) -> Response | None:
        """A best-effort error response to send before closing, or None when no msgid is known.

        (Answering with a made-up id could be taken as the answer to another request.)
        """
        if self.msgid is None:
            return None
        return Response(self.msgid, render_error(self.error, structured), None)


class RpcProtocol:
    """The state of one MessagePack-RPC connection, either side, with no I/O.

    ``max_message_size`` bounds one received message in bytes. ``max_depth`` bounds the nesting
    of received params (None: only msgpack's own limit of 1024 applies). ``pause`` is entered
    around the decoding of every message longer than `PAUSE_BYTES` (and every `Deferred` one):
    see `Pause`; the default pauses nothing. Feed bytes with
    `receive_data`, then call `next_event` (or iterate `events`) until `NEED_DATA`; turn events
    into bytes with `send`. Bytes are buffered until `next_event` drains them, so drain after
    every `receive_data`. Decoded memory is a few times the message size for ordinary data; a
    message made only of empty arrays can cost ~60 bytes per byte, so lower
    ``max_message_size`` when serving untrusted peers.
    """

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 max_depth: int | None = DEFAULT_MAX_DEPTH,
                 defer_size: int | None = None, pause: Pause = nullcontext) -> None:
        if max_message_size < 1:
            raise ValueError("max_message_size must be at least 1")
        if max_depth is not None and max_depth < 1:
            raise ValueError("max_depth must be at least 1 or None")
        self.max_message_size = max_message_size
        self.max_depth = max_depth
        self.defer_size = defer_size
        """Messages longer than this come out as `Deferred`, to decode elsewhere (None: never).
        """
        self.pause = pause
        # The scanner only finds where messages end (skip() builds no objects); a message is
        # decoded from _buf once complete. It is fed lazily from _buf so that it never holds
        # more than max_message_size bytes of an unfinished message. None once the peer has
        # sent bytes that are not MessagePack-RPC: the object is then dead for receiving.
        self._scanner: msgpack.Unpacker | None = msgpack.Unpacker(
            max_buffer_size=max_message_size)
        self._buf = bytearray()
        self._start = 0  # index in _buf of the first byte not yet returned as an event
        self._fed = 0  # index in _buf of the first byte not yet fed to the scanner
        self._base = 0  # stream offset of _buf[0] (the scanner's tell() counts from 0)
        self._eof = False
        self._packer = msgpack.Packer(use_bin_type=True)

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet returned as events; > 0 after draining means mid-message."""
        return len(self._buf) - self._start

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the peer; ``b""`` means the peer closed its side (EOF)."""
        if self._scanner is None:
            raise LocalProtocolError(
                "receive_data after a RemoteProtocolError: close the connection")
        if self._eof:
            raise LocalProtocolError("receive_data after EOF")
        if not data:
            self._eof = True
            return
        if self._start:
            del self._buf[:self._start]
            self._fed -= self._start
            self._base += self._start
            self._start = 0
        self._buf += data

    def next_event(self) -> Event | Deferred | Literal[Sentinel.NEED_DATA]:
        """The next received event, or `NEED_DATA`; `ConnectionClosed` (again and again) after EOF.

        Raises `RemoteProtocolError` on bad input, after which this object is dead for receiving.
        """
        scanner = self._scanner
        if scanner is None:
            raise LocalProtocolError(
                "next_event after a RemoteProtocolError: close the connection")
        try:
            while True:
                try:
                    scanner.skip()
                except msgpack.OutOfData:
                    if self._feed_scanner():
                        continue
                    break
                except (ValueError, msgpack.UnpackException) as exc:  # FormatError, StackError
                    raise RemoteProtocolError(
                        RpcError("parse_error", _msgpack_problem(exc))) from exc
                end = scanner.tell() - self._base
                raw = self._buf[self._start:end]
                self._start = end
                if self.defer_size is not None and len(raw) > self.defer_size:
                    return Deferred(bytes(raw), self)
                return self._decode(raw)
            if not self._eof:
                return NEED_DATA
            if self.pending_bytes:
                raise RemoteProtocolError(RpcError(
                    "parse_error", f"connection closed in the middle of a message "
                    f"({self.pending_bytes} bytes of it received)"))
            return ConnectionClosed()
        except RemoteProtocolError:
            self._scanner = None
            self._buf = bytearray()
            self._start = self._fed = 0
            raise

    def events(self) -> Iterator[Event | Deferred]:
        """`next_event` until `NEED_DATA` (not yielded) or `ConnectionClosed` (yielded, last)."""
        while True:
            event = self.next_event()
            if event is NEED_DATA:
                return
            yield event
            if type(event) is ConnectionClosed:
                return

    def send(self, event: Request | Response | Notification) -> bytes:
        """The bytes for ``event``; raises `LocalProtocolError` if it is invalid or not encodable.

        Works also after a `RemoteProtocolError`, to send the best-effort error response.
        """
        kind = type(event)
        if type(event) is Request:
            _check_out_msgid(event.msgid)
            _check_out_call(event.method, event.params)
            obj: list[Any] = [0, event.msgid, event.method, event.params]
        elif type(event) is Response:
            _check_out_msgid(event.msgid)
            if event.error is not None and event.result is not None:
                raise LocalProtocolError("a response has an error or a result, not both")
            if isinstance(event.error, BaseException):
                raise LocalProtocolError("render the error first (render_error) before sending")
            obj = [1, event.msgid, event.error, event.result]
        elif type(event) is Notification:
            _check_out_call(event.method, event.params)
            obj = [2, event.method, event.params]
        else:
            raise LocalProtocolError(f"cannot send a {kind.__name__}")
        try:
            return self._packer.pack(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            raise LocalProtocolError(f"cannot encode {kind.__name__}: {exc}") from exc

    def send_result(self, msgid: int, result: Any) -> bytes:
        """The bytes of a successful response: ``send(Response(msgid, None, result))`` without
        making the event (the path every answered request takes). A `Packed` result is
        already MessagePack and goes in as it is."""
        if type(msgid) is not int or not 0 <= msgid <= MAX_MSGID:
            _check_out_msgid(msgid)
        if type(result) is Packed:
            return b"".join((b"\x94\x01", self._packer.pack(msgid), b"\xc0", result))
        try:
            return self._packer.pack([1, msgid, None, result])
        except (TypeError, ValueError, OverflowError) as exc:
            raise LocalProtocolError(f"cannot encode Response: {exc}") from exc

    # -- receiving ----------------------------------------------------------------------------

    def _feed_scanner(self) -> bool:
        """Feed the scanner what it may take of _buf; False when there is nothing to feed."""
        unfed = len(self._buf) - self._fed
        if not unfed:
            return False
        room = self.max_message_size - (self._fed - self._start)
        if room <= 0:
            raise RemoteProtocolError(RpcError(
                "limit_exceeded", f"message longer than {self.max_message_size} bytes",
                {"limit": "max_message_size", "max": self.max_message_size}))
        n = min(unfed, room)
        assert self._scanner is not None
        self._scanner.feed(self._buf[self._fed:self._fed + n])
        self._fed += n
        return True

    def _decode(self, raw: bytearray | bytes, chunked: bool = False) -> Event:
        # A big message decodes into many containers and no reference cycles; pausing the
        # cyclic garbage collector meanwhile saves it from scanning them over and over.
        try:
            if chunked:
                with self.pause():
                    msg = unpack_chunked(raw)
            elif len(raw) > PAUSE_BYTES:
                with self.pause():
                    msg = msgpack.unpackb(raw, raw=False, strict_map_key=True)
            else:
                msg = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except (ValueError, msgpack.UnpackException) as exc:  # UnicodeDecodeError, map keys
            raise RemoteProtocolError(RpcError("parse_error", _msgpack_problem(exc))) from exc
        event = _parse_message(msg)
        # Nesting deeper than max_depth needs more than max_depth container headers, each one
        # byte of the message: counting those bytes (C speed) rules most messages out at once.
        if (self.max_depth is not None and len(raw) > self.max_depth
                and len(raw) - len(raw.translate(None, _CONTAINER_BYTES)) > self.max_depth
                and type(event) is not Response):
            call = cast("Request | Notification", event)
            if _deeper_than(call.params, self.max_depth):
                msgid = call.msgid if type(call) is Request else None
                return Rejected(msgid, call.method, RpcError(
                    "limit_exceeded", f"{call.method}: params nested deeper than "
                    f"{self.max_depth} levels", {"limit": "max_depth", "max": self.max_depth}))
        return event


def unpack_chunked(raw: bytes | bytearray, level: int = 0) -> Any:
    """One MessagePack object decoded as ``msgpack.unpackb(raw, raw=False,
    strict_map_key=True)`` would, but its outer levels (the message, its params, their maps)
    and any array or map of more than 512 items item by item: msgpack's decoder holds the
    interpreter lock for all of one call, so a worker thread decoding a 15 MiB document in one
    go would stall every other thread (the event loop among them) for as long. ``level``
    says how deep ``raw`` sits in a message (1 for a graph document, which is a parameter)."""
    size = len(raw)
    unpacker = msgpack.Unpacker(None, raw=False, strict_map_key=True, max_buffer_size=size)
    unpacker.feed(raw)
    view = memoryview(raw)
    obj = _walk(unpacker, view, level)
    if unpacker.tell() != size:
        raise ValueError(f"{size - unpacker.tell()} bytes after the object")
    return obj


def _header(view: memoryview, pos: int) -> tuple[bool, int] | None:
    """``(is_array, items)`` for an array or map header at ``pos``, else None."""
    first = view[pos]
    if 0x90 <= first <= 0x9F:
        return True, first & 0x0F
    if 0x80 <= first <= 0x8F:
        return False, first & 0x0F
    if first in (0xDC, 0xDE):
        return first == 0xDC, int.from_bytes(view[pos + 1:pos + 3], "big")
    if first in (0xDD, 0xDF):
        return first == 0xDD, int.from_bytes(view[pos + 1:pos + 5], "big")
    return None


def _walk(unpacker: msgpack.Unpacker, view: memoryview, level: int) -> Any:
    found = _header(view, unpacker.tell())
    if found is not None:
        is_array, items = found
        if is_array and (items > _CHUNK_ITEMS or level <= 1):
            unpacker.read_array_header()
            return [_walk(unpacker, view, level + 1) for _ in range(items)]
        if not is_array and (items > _CHUNK_ITEMS or level <= 2):
            unpacker.read_map_header()
            out = {}
            for _ in range(items):
                key = unpacker.unpack()
                if type(key) is not str and type(key) is not bytes:
                    raise ValueError(f"{type(key).__name__} is not allowed for map key")
                out[key] = _walk(unpacker, view, level + 1)
            return out
    return unpacker.unpack()


def _msgpack_problem(exc: Exception) -> str:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, msgpack.StackError):
        detail = "nested deeper than 1024 levels"
    return f"not valid MessagePack ({detail})"


def _describe(obj: Any) -> str:
    """A short, safe description of received data for error messages."""
    if isinstance(obj, list):
        return f"an array of {len(obj)}"
    if isinstance(obj, dict):
        return f"a map of {len(obj)}"
    text = repr(obj)
    return text if len(text) <= 40 else text[:37] + "..."


def _invalid(message: str, msgid: int | None = None) -> RemoteProtocolError:
    return RemoteProtocolError(RpcError("invalid_request", message), msgid)


def _msgid(obj: Any) -> int | None:
    return obj if type(obj) is int and 0 <= obj <= MAX_MSGID else None


_new_tuple = tuple.__new__


def _parse_message(msg: Any) -> Request | Response | Notification:
    """Check the shape of a decoded message and build its event."""
    if (type(msg) is list and len(msg) == 4 and type(msg[0]) is int and msg[0] == 0
            and type(msg[1]) is int and 0 <= msg[1] <= MAX_MSGID and type(msg[2]) is str
            and type(msg[3]) is list):
        # The common case, checked in one go; made as tuple.__new__ does inside Request(...),
        # without the Python-level __new__ a named tuple adds.
        return _new_tuple(Request, (msg[1], msg[2], msg[3]))
    if type(msg) is not list or not msg:
        raise _invalid(f"a message must be a non-empty array, got {_describe(msg)}")
    tag = msg[0]
    if type(tag) is not int or tag not in (0, 1, 2):
        raise _invalid(f"unknown message type {_describe(tag)}; expected 0 (request), "
                       "1 (response) or 2 (notification)")
    if tag == 2:
        if len(msg) != 3:
            raise _invalid(f"a notification must be [2, method, params], got {len(msg)} items")
        return Notification(_method(msg[1], None), _params(msg[2], None))
    msgid = _msgid(msg[1]) if len(msg) > 1 else None
    if tag == 0 and len(msg) != 4:
        raise _invalid(f"a request must be [0, msgid, method, params], got {len(msg)} items",
                       msgid)
    if tag == 1 and len(msg) != 4:
        raise _invalid(f"a response must be [1, msgid, error, result], got {len(msg)} items")
    if msgid is None:
        raise _invalid(f"msgid must be an integer in 0..{MAX_MSGID}, got {_describe(msg[1])}")
    if tag == 1:
        return Response(msgid, msg[2], msg[3])
    return Request(msgid, _method(msg[2], msgid), _params(msg[3], msgid))


def _method(obj: Any, msgid: int | None) -> str:
    if type(obj) is str:
        return obj
    if type(obj) is bytes:
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid(f"method name is not UTF-8: {_describe(obj)}", msgid) from None
    raise _invalid(f"method must be a string, got {_describe(obj)}", msgid)


def _params(obj: Any, msgid: int | None) -> list[Any]:
    if type(obj) is not list:
        raise _invalid(f"params must be an array, got {_describe(obj)}", msgid)
    return obj


_CONTAINERS: Final = frozenset((list, dict))
_CONTAINER_BYTES: Final = bytes(range(0x80, 0xA0)) + b"\xdc\xdd\xde\xdf"
"""The first bytes of MessagePack arrays and maps (fixmap, fixarray, array 16/32, map 16/32)."""


def _deeper_than(root: list[Any], limit: int) -> bool:
    """Whether arrays and maps nest more than ``limit`` levels, ``root`` being level 1."""
    level: list[Any] = [root]
    for _ in range(limit):
        below: list[Any] = []
        for container in level:
            items = container.values() if type(container) is dict else container
            if not _CONTAINERS.isdisjoint(map(type, items)):  # C-speed test for the common case
                below += [item for item in items if type(item) in _CONTAINERS]
        if not below:
            return False
        level = below
    return True


# -- sending ------------------------------------------------------------------------------------

def _check_out_msgid(msgid: Any) -> None:
    if _msgid(msgid) is None:
        raise LocalProtocolError(f"msgid must be an int in 0..{MAX_MSGID}, got {msgid!r}")


def _check_out_call(method: Any, params: Any) -> None:
    if type(method) is not str:
        raise LocalProtocolError(f"method must be a str, got {type(method).__name__}")
    if not isinstance(params, list | tuple):
        raise LocalProtocolError(f"params must be a list, got {type(params).__name__}")


# -- big results, encoded piece by piece -----------------------------------------------------

class Packed(bytes):
    """A result already encoded as MessagePack (by `pack_chunked`), sent as it is."""


_CHUNK_ITEMS: Final = 512
"""Containers with more items than this are encoded item by item (see `pack_chunked`)."""


def pack_chunked(obj: Any, packer: msgpack.Packer | None = None) -> Packed:
    """``obj`` encoded as MessagePack, the same bytes as ``Packer(use_bin_type=True).pack``,
    but big arrays and maps item by item: msgpack's encoder holds the interpreter lock for all
    of one call, so encoding a 100,000-record result in one go would stall every other thread
    (the event loop among them) for as long; this way a worker thread gives way between items.
    """
    packer = packer or msgpack.Packer(use_bin_type=True)
    parts: list[bytes] = []
    _pack_into(obj, packer, parts)
    return Packed(b"".join(parts))


def _pack_into(obj: Any, packer: msgpack.Packer, parts: list[bytes]) -> None:
    kind = type(obj)
    if kind is list or kind is tuple:
        if len(obj) > _CHUNK_ITEMS or (obj and type(obj[0]) in _CONTAINERS_OR_TUPLE):
            parts.append(packer.pack_array_header(len(obj)))
            for item in obj:
                _pack_into(item, packer, parts)
            return
    elif kind is dict and (len(obj) > _CHUNK_ITEMS or any(
            type(v) in _CONTAINERS_OR_TUPLE and len(v) > _CHUNK_ITEMS for v in obj.values())):
        parts.append(packer.pack_map_header(len(obj)))
        for key, value in obj.items():
            parts.append(packer.pack(key))
            _pack_into(value, packer, parts)
        return
    parts.append(packer.pack(obj))


_CONTAINERS_OR_TUPLE: Final = frozenset((list, dict, tuple))


# -- params convention ----------------------------------------------------------------------------

def split_params(method: str, params: Sequence[Any], required: Sequence[str],
                 optional: Sequence[str] = (), *,
                 options: Collection[str] | bool = True,
                 reserved: Collection[str] = ()) -> tuple[list[Any], dict[str, Any]]:
    """Split ``params`` into positional arguments and the trailing options map.

    The convention: the ``required`` arguments by position, then the ``optional`` ones (None
    when absent), then at most one map of options, recognised only past every positional slot.
    ``options``: True accepts any option names, False no options map, a collection only those
    names. An option named like a positional argument (or like a name in ``reserved``) is
    refused whatever ``options`` says: it would stand for that argument a second time.
    Returns ``(args, opts)``: ``args`` has ``len(required) + len(optional)`` items and
    ``opts`` is ``{}`` when absent; nil or an empty array in the options place also mean no
    options (Neovim sends an empty Lua table ``{}`` as an empty array). Bin option names are
    decoded as UTF-8. Raises `RpcError` ``invalid_params`` naming the method and the argument.
    """
    least, most = len(required), len(required) + len(optional)
    if len(params) == most == least:  # the common case, checked first: all required, no options
        return list(params), {}
    names = [*required, *(f"[{name}]" for name in optional)]
    if options is not False:
        names.append("[options]")
    signature = f"{method}({', '.join(names)})"
    if len(params) < least:
        missing = required[len(params)]
        raise RpcError("invalid_params", f"{method}: missing argument '{missing}'; "
                       f"expected {signature}", {"method": method, "argument": missing})
    if options is False and len(params) == most + 1 and params[most] in (None, []):
        params = params[:most]  # Neovim sends an empty table for "no options"
    if len(params) > most + (options is not False):
        raise RpcError("invalid_params", f"{method}: too many arguments ({len(params)}); "
                       f"expected {signature}", {"method": method})
    args = list(params[:most])
    args += [None] * (most - len(args))
    if len(params) <= most:
        return args, {}
    raw = params[most]
    if raw is None or raw == []:
        return args, {}
    if not isinstance(raw, dict):
        raise RpcError("invalid_params", f"{method}: options must be a map, got "
                       f"{_describe(raw)}", {"method": method, "argument": "options"})
    known: Collection[str] = () if isinstance(options, bool) else options
    opts: dict[str, Any] = {}
    for key, value in raw.items():
        name = key
        if isinstance(key, bytes):
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                name = None
        if not isinstance(name, str):
            raise RpcError("invalid_params", f"{method}: option names must be strings, got "
                           f"{_describe(key)}", {"method": method, "argument": "options"})
        if name in required or name in optional or name in reserved:
            raise RpcError("invalid_params", f"{method}: option '{name}' has the name of an "
                           f"argument, which is given by position, not as an option; "
                           f"expected {signature}", {"method": method, "argument": name})
        if options is not True and name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else (
                f"; known: {', '.join(sorted(known))}" if known else "")
            raise RpcError("invalid_params", f"{method}: unknown option '{name}'{hint}",
                           {"method": method, "argument": name})
        opts[name] = value
    return args, opts
