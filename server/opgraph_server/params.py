"""Checks of the values that come in and go out: what an argument is, in words for an error
message, and whether a node's values can be sent (doubles, UTF-8 text, 64-bit integers).

Every graph on the server can always be sent: a change is checked with `settle` before it is
committed, a document with `document_to_doubles` before it is loaded. Arrays of values travel
as little-endian doubles (`doubles`, `doubles_bytes`).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from operator import attrgetter
from typing import Any

from opgraph_server.errors import RpcError

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1
"""The integers MessagePack carries."""


def kind(value: Any) -> str:
    """``value``'s type and a short repr, for error messages (``bool True``)."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def settle(nodes: Iterable[Any], where: str) -> None:
    """Check, before a change is committed, that every value of ``nodes`` can be sent:
    data and grad doubles (ints converted: the engine gives ops' results as doubles, and the
    methods give leaves doubles, but a document's grads are stored as given), text encodable
    as UTF-8, attributes within MessagePack's integers. Raises `RpcError` naming the node;
    the caller rolls back."""
    nodes = list(nodes)
    if _plainly_sendable(nodes):
        return
    for node in nodes:
        for field in ("data", "grad"):
            value = getattr(node, field)
            if type(value) is not float:
                try:
                    setattr(node, field, float(value))
                except (OverflowError, TypeError, ValueError):
                    raise RpcError("invalid_params", f"{where}: node {node.id} {field} "
                                   f"{kind(value)} is not a double") from None
        label = node.label
        if label and not label.isascii():
            check_text(label, f"{where}: node {node.id} label")
        if node.opdef is not None:
            for key, value in node.attrs.items():
                if type(value) is int and not INT64_MIN <= value <= UINT64_MAX:
                    raise RpcError("invalid_params", f"{where}: node {node.id} attribute "
                                   f"{key!r} is an integer of {value.bit_length()} bits, "
                                   "more than MessagePack's 64")
                if type(value) is str and not value.isascii():
                    check_text(value, f"{where}: node {node.id} attribute {key!r}")
        loc = node.source
        if loc is not None and not loc[0].isascii():
            check_text(loc[0], f"{where}: node {node.id} source file")


_DATA, _GRAD, _LABEL = attrgetter("data"), attrgetter("grad"), attrgetter("label")
_OPDEF, _SOURCE = attrgetter("opdef"), attrgetter("source")


def _plainly_sendable(nodes: list[Any]) -> bool:
    """True when `settle` has nothing to do for ``nodes``, found in C (the common case: double
    values, ASCII labels and files, no op with attributes); False means: look node by node.
    A chunk at a time: a loop in C holds the interpreter lock (other threads wait) to its end."""
    step = 1 << 16
    return all(_plain_chunk(nodes[start:start + step]) for start in range(0, len(nodes), step))


def _plain_chunk(nodes: list[Any]) -> bool:
    if set(map(type, map(_DATA, nodes))) - {float} or set(map(type, map(_GRAD, nodes))) - {float}:
        return False
    if not all(map(str.isascii, map(_LABEL, nodes))):
        return False
    if any(op is not None and op.attrs for op in set(map(_OPDEF, nodes))):
        return False
    files = {loc[0] for loc in map(_SOURCE, nodes) if loc is not None}
    return all(type(f) is str and f.isascii() for f in files)


def check_text(text: str, where: str) -> None:
    """Refuse ``text`` that UTF-8 cannot encode (lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RpcError("invalid_params", f"{where} is not valid Unicode ({exc.reason} at "
                       f"character {exc.start})") from None


def document_to_doubles(doc: Any) -> Any:
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
                if type(value) is int and not INT64_MIN <= value <= UINT64_MAX:
                    raise RpcError("bad_file", f"node {i}: attribute {key!r} is an integer of "
                                   f"{value.bit_length()} bits, more than MessagePack's 64",
                                   {"node": i, "field": "attrs"})
    return doc


def source_option(value: Any, method: str) -> tuple[str, int] | None:
    """A ``source`` option: ``[file, line]`` (or nil)."""
    if value is None:
        return None
    if (not isinstance(value, list | tuple) or len(value) != 2
            or not isinstance(value[0], str) or type(value[1]) is not int):
        raise RpcError("invalid_params", f"{method}: source must be [file, line], got "
                       f"{kind(value)}")
    return (value[0], value[1])


def doubles(blob: bytes) -> array[float]:
    """The doubles in ``blob``, little-endian, 8 bytes each (the wire's and the store's byte
    order, whatever the machine's); ``len(blob)`` must be a multiple of 8."""
    values = array("d")
    values.frombytes(blob)
    if sys.byteorder != "little":
        values.byteswap()
    return values


def doubles_bytes(values: array[float]) -> bytes:
    """``values`` as little-endian doubles (what `doubles` reads)."""
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array("d", values)
    swapped.byteswap()
    return swapped.tobytes()
