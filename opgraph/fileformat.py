"""Graph files: a versioned msgpack format (``.opg``) and a JSON export of the same document.

A graph file holds one *document*, a map that describes itself::

    {"format": "opgraph-graph",        # marker: this is an opgraph graph
     "version": 1,                     # format version; a reader refuses newer ones
     "name": "neuron",                 # the graph's name
     "producer": "opgraph 0.1.0",      # optional: what wrote the file (informative only)
     "nodes": [                        # in id order, inputs before the nodes that use them
        {"id": 0, "op": None, "inputs": [], "attrs": {}, "label": "x1",
         "data": 2.0, "grad": -1.5, "source": ["neuron.py", 3]},
        ...
        {"id": 7, "op": "pow_const", "inputs": [6], "attrs": {"exponent": 2},
         "label": "", "data": 0.5, "grad": 1.0, "source": None},
     ]}

Node fields: ``id`` (required, equal to the node's position in ``nodes``); ``op`` (the name of
an installed op, None for a leaf); ``inputs`` (ids of earlier nodes, in the op's argument order);
``attrs`` (the op's constant attributes: str keys, int/float/str values); ``label`` (str);
``data`` (a number; required for leaves, optional for computed nodes); ``grad`` (a number);
``source`` (``[file, line]`` where the node was created, or None). The writer writes every
field; a reader fills a missing optional one with ``[]``, ``{}``, ``""``, ``0.0`` or None, which
keeps hand-written documents short. Unknown fields are refused (a misspelt field is an error,
not a silent default).

Numbers: ``data`` and ``grad`` are IEEE doubles. The writer writes them as floats; a reader
takes an int there (``"data": 3``) and converts it to the float it stands for on entry, as the
engine does (``Value(3).data == 3.0``), so no op ever computes with exact Python integers that
grow with every step. An int too big for a double (only JSON can hold one) is refused, naming
the node and the field. Attribute values keep their type (``{"exponent": 2}`` stays an int,
drawn as ``**2``); an int attribute beyond 64 bits is written, and read, as a float.

The msgpack form is that map packed with ``use_bin_type=True``. The JSON form is the same map;
because JSON has no NaN or infinity, non-finite floats are written as ``{"$float": "nan"}``,
``{"$float": "inf"}`` or ``{"$float": "-inf"}`` (and the bare ``NaN``/``Infinity`` tokens that
Python writes are accepted too).

Loading rebuilds the graph through the real engine (`Graph.leaf` and `Graph.apply`), so every op
is looked up among the installed plugins, its arity and attributes checked, and each computed
node's data **recomputed by the op's forward rule**. The recomputed data is what the loaded
graph holds: by default a stored value that disagrees is replaced silently (a graph saved after
``p.data += ...`` without a forward pass has stale computed data, and loading it gives the
consistent graph); with ``strict=True`` a disagreement beyond ``rel_tol=1e-9, abs_tol=1e-12`` is
refused instead. Leaves keep their stored data; gradients, labels and source locations are
restored as stored (gradients are not recomputed: they are what the last ``backward`` left).
A gradient graph (``backward(create_graph=True)``, ``opgraph.grad(..., create_graph=True)``
over a `Graph`) is made of ordinary nodes of the graph, labelled ``d o/d x``, and is saved and
loaded as they are; a ``grad`` that is such a node is written as the number it holds.

Everything wrong with a file or document raises `GraphFileError` (a `ValueError`) naming the
problem and, where there is one, the node and field: a newer format version, truncated or corrupt
bytes, something that is not a graph, an op no installed plugin provides (with a suggestion), a
cycle or forward reference, an input id that does not exist, a wrong type in any field, a wrong
arity, bad attributes, data that is not a number, an op that fails on the stored inputs. Bytes are
decoded with msgpack's size limits and ``strict_map_key``; nothing is unpickled or evaluated.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgpack

from opgraph import core
from opgraph.core import Value
from opgraph.errors import GraphFileError, GraphLimitError, OpgraphError, UnknownOpError
from opgraph.graph import Graph

__all__ = [
    "FORMAT",
    "JSON_SUFFIX",
    "SUFFIX",
    "VERSION",
    "dumps",
    "from_document",
    "from_json",
    "load",
    "loads",
    "parse",
    "save",
    "to_document",
    "to_json",
]

FORMAT = "opgraph-graph"
"""The value of the ``format`` marker of every graph document."""

VERSION = 1
"""The format version this opgraph writes, and the newest one it reads."""

SUFFIX = ".opg"
"""The suggested extension of a msgpack graph file."""

JSON_SUFFIX = ".json"
"""The extension that makes `save` write JSON."""

FileFormat = Literal["opg", "msgpack", "json"]

_TOP_KEYS = frozenset({"format", "version", "name", "producer", "nodes"})
_NODE_KEYS = frozenset({"id", "op", "inputs", "attrs", "label", "data", "grad", "source"})
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_REL_TOL, _ABS_TOL = 1e-9, 1e-12
_JSON_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_FLOAT_TAG = "$float"


# --- writing -------------------------------------------------------------------------------------


def _producer() -> str:
    try:
        from opgraph import __version__
    except ImportError:  # pragma: no cover - only while the package is half imported
        return "opgraph"
    return f"opgraph {__version__}"


def _nodes_of(graph_or_value: Graph | Value) -> tuple[str, list[Value]]:
    if isinstance(graph_or_value, Graph):
        return graph_or_value.name, list(graph_or_value.nodes)
    if isinstance(graph_or_value, Value):
        # Walk the values directly: saving a free Value must not make it join a Graph.
        owner = graph_or_value.graph
        return (owner.name if owner is not None else ""), core.topological_order(graph_or_value)
    raise TypeError(
        f"expected a Graph or a Value to save, got {type(graph_or_value).__name__}"
    )


def _number_out(value: object, node: int, field: str) -> int | float:
    """A node's number as the document stores it (Python int or float, ints within 64 bits)."""
    kind = type(value)
    if kind is float or (kind is int and _INT64_MIN <= value <= _UINT64_MAX):  # type: ignore[operator]
        return value  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GraphFileError(
            f"node {node}: {field} must be a real number to be saved, got "
            f"{type(value).__name__} {value!r}",
            node=node, field=field,
        )
    if isinstance(value, numbers.Integral):
        value = int(value)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return float(value)


def _float_out(value: object, node: int, field: str) -> float:
    """A node's data or grad as the document stores it: a float (an int set by hand on a
    value is converted; one beyond a double's range is written as an infinity). A grad that
    is a node (after ``backward(create_graph=True)``) is stored as the number it holds."""
    if type(value) is float:
        return value
    if isinstance(value, Value):
        value = value.data
    number = _number_out(value, node, field)
    return number if type(number) is float else float(number)


def to_document(graph_or_value: Graph | Value, *, name: str | None = None) -> dict[str, Any]:
    """The document (a plain dict of str, int, float, list, dict, None) describing a graph.

    ``graph_or_value`` is a `Graph` (every node, in id order) or a root `Value` (the root and
    every value it depends on, inputs first; the values are not changed and join no graph).
    ``name`` overrides the graph's name (a free Value's graph is named ``""`` by default).
    """
    graph_name, values = _nodes_of(graph_or_value)
    if name is not None:
        graph_name = name
    if not isinstance(graph_name, str):
        raise GraphFileError(f"graph name must be a string, got {type(graph_name).__name__}",
                             field="name")
    index = {id(v): i for i, v in enumerate(values)}
    nodes: list[dict[str, Any]] = []
    add = nodes.append
    for i, v in enumerate(values):
        label = v.label
        if type(label) is not str:
            raise GraphFileError(
                f"node {i}: label must be a string to be saved, got {type(label).__name__} "
                f"{label!r}", node=i, field="label",
            )
        inputs = [index.get(id(inp), i) for inp in v.inputs]
        op = v.opdef
        attrs: dict[str, Any] = {}
        if op is not None:
            for n, j in enumerate(inputs):
                if j >= i:
                    raise GraphFileError(f"node {i}: input {core.describe(v.inputs[n])} is not "
                                         "an earlier node of the graph", node=i, field="inputs")
            if op.attrs:
                for key, val in v.attrs.items():
                    attrs[str(key)] = (val if isinstance(val, str)
                                       else _number_out(val, i, f"attrs.{key}"))
        data, grad, loc = v.data, v.grad, v.source
        add({
            "id": i,
            "op": None if op is None else op.name,
            "inputs": inputs,
            "attrs": attrs,
            "label": label,
            "data": data if type(data) is float else _float_out(data, i, "data"),
            "grad": grad if type(grad) is float else _float_out(grad, i, "grad"),
            "source": None if loc is None else (
                [loc[0], loc[1]] if type(loc[0]) is str and type(loc[1]) is int
                else [str(loc[0]), int(loc[1])]),
        })
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": graph_name,
        "producer": _producer(),
        "nodes": nodes,
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT_TAG: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    return value


def _json_node(node: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(node)
    out["data"] = _json_safe(out["data"])
    out["grad"] = _json_safe(out["grad"])
    out["attrs"] = {k: _json_safe(v) for k, v in out["attrs"].items()}
    return out


def _document_to_json(doc: Mapping[str, Any]) -> str:
    head = ", ".join(
        f"{json.dumps(k)}: {json.dumps(v, allow_nan=False)}"
        for k, v in doc.items() if k != "nodes"
    )
    nodes = ",\n  ".join(
        json.dumps(_json_node(n), allow_nan=False, separators=(", ", ": ")) for n in doc["nodes"]
    )
    body = f"[\n  {nodes}\n ]" if nodes else "[]"
    return f'{{{head},\n "nodes": {body}}}\n'


def to_json(graph_or_value: Graph | Value, *, name: str | None = None) -> str:
    """The graph's document as strict JSON text (one node per line; see the module doc)."""
    return _document_to_json(to_document(graph_or_value, name=name))


def _packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass")


def dumps(graph_or_value: Graph | Value, *, fmt: FileFormat = "opg",
          name: str | None = None) -> bytes:
    """The graph file's bytes: msgpack (``fmt="opg"`` or ``"msgpack"``) or UTF-8 JSON."""
    if fmt == "json":
        return to_json(graph_or_value, name=name).encode("utf-8", "surrogatepass")
    if fmt not in ("opg", "msgpack"):
        raise ValueError(f"unknown graph file format {fmt!r}; use 'opg' (msgpack) or 'json'")
    doc = to_document(graph_or_value, name=name)
    try:
        return _packer().pack(doc)
    except (TypeError, ValueError, OverflowError) as exc:  # pragma: no cover - document is plain
        raise GraphFileError(f"cannot write the graph as msgpack: {exc}") from exc


def _format_for(path: Path, fmt: str | None) -> FileFormat:
    if fmt is None:
        return "json" if path.suffix.lower() == JSON_SUFFIX else "opg"
    if fmt not in ("opg", "msgpack", "json"):
        raise ValueError(f"unknown graph file format {fmt!r}; use 'opg' (msgpack) or 'json'")
    return fmt  # type: ignore[return-value]


def save(graph_or_value: Graph | Value, path: str | os.PathLike[str], *,
         format: FileFormat | None = None, name: str | None = None) -> Path:
    """Write a `Graph` (or a root `Value` and what it depends on) to ``path``; returns the path.

    The format comes from ``format`` (``"opg"``/``"msgpack"`` or ``"json"``) or else from the
    suffix: ``.json`` writes JSON, anything else (``.opg`` by convention) msgpack. The file is
    written to a temporary file beside it and renamed into place, so a failed save leaves any
    earlier file whole.
    """
    target = Path(path)
    data = dumps(graph_or_value, fmt=_format_for(target, format), name=name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:  # name the file asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved graph is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- reading -------------------------------------------------------------------------------------


def _kind(value: object) -> str:
    if value is None:
        return "nil"
    return {bool: "a boolean", int: "an int", float: "a float", str: "a string",
            bytes: "bytes", list: "a list", dict: "a map"}.get(type(value),
                                                                   type(value).__name__)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _where(node: int, label: str | None = None) -> str:
    return f"node {node}" + (f" ({_show(label)})" if label else "")


def _is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


def _check_document_head(doc: object) -> tuple[str, list[Any]]:
    if not isinstance(doc, dict):
        raise GraphFileError(
            f"not an opgraph graph: the top level is {_kind(doc)}, expected a map with "
            f"'format': {FORMAT!r}"
        )
    if "format" not in doc:
        raise GraphFileError(
            f"not an opgraph graph: the map has no 'format' marker (expected {FORMAT!r}); "
            f"its keys are {sorted(map(str, doc))[:8]}", field="format",
        )
    if doc["format"] != FORMAT:
        raise GraphFileError(
            f"not an opgraph graph: 'format' is {_show(doc['format'])}, expected {FORMAT!r}",
            field="format",
        )
    version = doc.get("version")
    if type(version) is not int:
        raise GraphFileError(
            f"graph 'version' must be an int, got {_kind(version)} {_show(version)}",
            field="version",
        )
    if version > VERSION:
        raise GraphFileError(
            f"written by a newer opgraph: format version {version}, this opgraph reads up to "
            f"{VERSION}", field="version",
        )
    if version < 1:
        raise GraphFileError(f"unknown graph format version {version} (versions start at 1)",
                             field="version")
    unknown = sorted(set(doc) - _TOP_KEYS, key=str)
    if unknown:
        raise GraphFileError(
            f"unknown top-level field {_show(unknown[0])} in a version {VERSION} graph "
            f"(fields are {sorted(_TOP_KEYS)})", field=str(unknown[0]),
        )
    name = doc.get("name", "")
    if not isinstance(name, str):
        raise GraphFileError(f"graph 'name' must be a string, got {_kind(name)} {_show(name)}",
                             field="name")
    producer = doc.get("producer", "")
    if not isinstance(producer, str):
        raise GraphFileError(
            f"graph 'producer' must be a string, got {_kind(producer)} {_show(producer)}",
            field="producer",
        )
    if "nodes" not in doc:
        raise GraphFileError("graph has no 'nodes' list", field="nodes")
    nodes = doc["nodes"]
    if not isinstance(nodes, list):
        raise GraphFileError(f"graph 'nodes' must be a list, got {_kind(nodes)}", field="nodes")
    return name, nodes


class _Node:
    """One node record, checked field by field."""

    __slots__ = ("attrs", "data", "grad", "id", "inputs", "label", "op", "source")

    def __init__(self, i: int, raw: object, count: int) -> None:
        if not isinstance(raw, dict):
            raise GraphFileError(f"node {i}: expected a map, got {_kind(raw)} {_show(raw)}",
                                 node=i)
        unknown = sorted(set(raw) - _NODE_KEYS, key=str)
        if unknown:
            raise GraphFileError(
                f"node {i}: unknown field {_show(unknown[0])} (fields are "
                f"{sorted(_NODE_KEYS)})", node=i, field=str(unknown[0]),
            )
        self.id = _read_id(i, raw)
        self.label = _typed(i, raw, "label", _where(i))
        where = _where(i, self.label)
        self.op = _typed(i, raw, "op", where)
        self.inputs = _read_inputs(i, raw.get("inputs", []), count, where)
        self.attrs = _read_attrs(i, raw.get("attrs", {}), where)
        if self.op is None:
            for field, present in (("inputs", self.inputs), ("attrs", self.attrs)):
                if present:
                    what = "inputs" if field == "inputs" else "attributes"
                    raise GraphFileError(f"{where}: a leaf (op nil) has no {what}, got "
                                         f"{_show(present)}", node=i, field=field)
            if "data" not in raw:
                raise GraphFileError(f"{where}: a leaf needs 'data'", node=i, field="data")
        data = _typed(i, raw, "data", where)
        self.data: float | None = None if data is None else _float_in(data, i, "data", where)
        self.grad = _float_in(_typed(i, raw, "grad", where), i, "grad", where)
        self.source: tuple[str, int] | None = _read_source(i, raw.get("source"), where)


# The fields checked by type alone: (default when absent, accepted, what the error asks for).
_SIMPLE_FIELDS: dict[str, tuple[object, Callable[[object], bool], str]] = {
    "label": ("", lambda v: isinstance(v, str), "a string"),
    "op": (None, lambda v: v is None or isinstance(v, str),
           "an op name (a string) or nil for a leaf"),
    "data": (None, lambda v: v is None or _is_number(v), "a number"),
    "grad": (0.0, lambda v: _is_number(v), "a number"),
}


def _typed(i: int, raw: dict, field: str, where: str) -> Any:
    """``raw[field]`` (or its default) if its type is right, else the error naming it."""
    default, accepted, wanted = _SIMPLE_FIELDS[field]
    value = raw.get(field, default)
    if field == "data" and value is None and "data" in raw:
        accepted = _is_number  # (an explicit nil is not a number)
    if not accepted(value):
        raise _type_error(i, field, wanted, value, where)
    return value


def _type_error(i: int, field: str, wanted: str, got: object,
                where: str | None = None) -> GraphFileError:
    return GraphFileError(
        f"{where or _where(i)}: {field!r} must be {wanted}, got {_kind(got)} {_show(got)}",
        node=i, field=field,
    )


def _read_id(i: int, raw: dict) -> int:
    if "id" not in raw:
        raise GraphFileError(f"node {i}: missing field 'id'", node=i, field="id")
    node_id = raw["id"]
    if type(node_id) is not int:
        raise _type_error(i, "id", "an int", node_id)
    if node_id != i:
        raise GraphFileError(
            f"node {i}: 'id' is {node_id}, expected {i} (a node's id is its position in "
            f"'nodes')", node=i, field="id",
        )
    return i


def _read_inputs(i: int, inputs: object, count: int, where: str) -> list[int]:
    if not isinstance(inputs, list):
        raise _type_error(i, "inputs", "a list of node ids", inputs, where)
    for n, ref in enumerate(inputs):
        if type(ref) is not int:
            problem = f"must be a node id (an int), got {_kind(ref)} {_show(ref)}"
        elif ref < 0 or ref >= count:
            problem = (f"is node {ref}, which does not exist (the graph has {count} "
                       f"node{'s' * (count != 1)}, ids 0..{count - 1})")
        elif ref >= i:
            what = "itself (a cycle)" if ref == i else f"node {ref}, a later node"
            problem = (f"refers to {what}; inputs must be earlier nodes, so a graph file "
                       f"cannot hold a cycle or a forward reference")
        else:
            continue
        raise GraphFileError(f"{where}: input {n} {problem}", node=i, field="inputs")
    return inputs


def _read_attrs(i: int, attrs: object, where: str) -> dict[str, Any]:
    if not isinstance(attrs, dict):
        raise _type_error(i, "attrs", "a map", attrs, where)
    attrs = dict(attrs)  # (a copy: the caller's document is not changed)
    for key, val in attrs.items():
        if not isinstance(key, str):
            raise GraphFileError(f"{where}: attribute names must be strings, got "
                                 f"{_kind(key)} {_show(key)}", node=i, field="attrs")
        if not (_is_number(val) or isinstance(val, str)):
            raise GraphFileError(
                f"{where}: attribute {key!r} must be a number or a string, got "
                f"{_kind(val)} {_show(val)}", node=i, field="attrs",
            )
        if type(val) is int and not _INT64_MIN <= val <= _UINT64_MAX:
            attrs[key] = _float_in(val, i, "attrs", where, f"attribute {key!r}")
    return attrs


def _read_source(i: int, source: object, where: str) -> tuple[str, int] | None:
    if source is None:
        return None
    if (not isinstance(source, list) or len(source) != 2 or not isinstance(source[0], str)
            or type(source[1]) is not int or source[1] < 0):
        raise _type_error(i, "source", "nil or [file: string, line: int >= 0]", source, where)
    return (source[0], source[1])


def _float_in(value: int | float, node: int, field: str, where: str,
              what: str | None = None) -> float:
    """A number read from a document as the double it stands for; an int too big for one is
    refused, naming the node and the field."""
    if type(value) is float:
        return value
    try:
        return float(value)
    except OverflowError:
        digits = int(value.bit_length() * 0.30103) + 1  # about; str() of it may be refused
        raise GraphFileError(
            f"{where}: {what or repr(field)} is an int of {digits} digits, too big for a float "
            f"(graph files hold numbers as IEEE doubles, up to about 1.8e308)",
            node=node, field=field,
        ) from None


def _agrees(stored: float, computed: float) -> bool:
    if stored == computed:
        return True
    if isinstance(stored, float) and isinstance(computed, float) and (
        math.isnan(stored) and math.isnan(computed)
    ):
        return True
    try:
        return math.isclose(stored, computed, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)
    except (TypeError, OverflowError):
        return False


def _build(graph: Graph, node: _Node) -> Value:
    where = _where(node.id, node.label)
    if node.op is None:
        try:
            value = graph.leaf(node.data, node.label)  # type: ignore[arg-type]
        except OpgraphError as exc:  # pragma: no cover - checked above
            raise GraphFileError(f"{where}: {exc}", node=node.id) from exc
        core.set_source(value, node.source)
        return value
    try:
        opdef = core.lookup(node.op)
    except UnknownOpError as exc:
        raise GraphFileError(
            f"{where}: {exc} (no installed plugin provides it)", node=node.id, field="op",
        ) from exc
    if len(node.inputs) != opdef.arity:
        raise GraphFileError(
            f"{where}: op {opdef.name!r} takes {opdef.arity} input"
            f"{'s' * (opdef.arity != 1)}, the file gives {len(node.inputs)}",
            node=node.id, field="inputs",
        )
    if node.attrs or opdef.attrs:
        try:
            core.check_attrs(opdef, node.attrs)
        except OpgraphError as exc:
            raise GraphFileError(f"{where}: bad attrs: {exc}", node=node.id,
                                 field="attrs") from exc
    try:
        value = graph.apply(node.op, node.inputs, node.attrs, label=node.label)
    except GraphLimitError:
        raise
    except OpgraphError as exc:
        raise GraphFileError(
            f"{where}: op {node.op!r} cannot recompute this node from its inputs: {exc}",
            node=node.id, field="op",
        ) from exc
    core.set_source(value, node.source)
    return value


class _PlainNodes:
    """Nodes in the plain form the writer writes, built at once: the common case, four times
    faster than checking each field on its own. Any other node (an attribute, an unknown op,
    an int where a float goes, an op that fails...) is left to `_Node` and `_build`, which
    check it field by field and say what is wrong."""

    __slots__ = ("graph", "nodes", "ops")

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes = graph.nodes
        self.ops: dict[str, Any] = {}  # op name -> its definition, when it takes no attributes

    def build(self, i: int, raw: object) -> bool:
        """Build node ``i`` from ``raw`` and return True, or return False having added
        nothing."""
        if type(raw) is not dict or not raw.keys() <= _NODE_KEYS or raw.get("id", -1) != i \
                or type(raw["id"]) is not int or raw.get("attrs"):
            return False
        label, grad, source = raw.get("label", ""), raw.get("grad", 0.0), raw.get("source")
        if type(label) is not str or type(grad) is not float:
            return False
        if source is not None:
            if not (type(source) is list and len(source) == 2 and type(source[0]) is str
                    and type(source[1]) is int and source[1] >= 0):
                return False
            source = (source[0], source[1])
        op, inputs, data = raw.get("op"), raw.get("inputs", ()), raw.get("data")
        if op is None:
            if inputs or type(data) is not float:
                return False
            value = Value(data)
        else:
            if type(op) is not str or type(inputs) is not list or not (
                    data is None or type(data) is float):
                return False
            opdef = self.ops.get(op) or self._op(op)
            if opdef is None or len(inputs) != opdef.arity:
                return False
            nodes = self.nodes
            for ref in inputs:
                if type(ref) is not int or not 0 <= ref < i:
                    return False
            try:
                value = core.compute(opdef, tuple([nodes[ref] for ref in inputs]), None)
            except OpgraphError:
                return False
        self.graph._register(value)
        if label:
            value.label = label
        core.set_source(value, source)  # (None forgets where this code made it, if tracked)
        value.grad = grad
        return True

    def _op(self, name: str) -> Any:
        try:
            opdef = core.lookup(name)
        except UnknownOpError:
            return None
        if opdef.attrs:
            return None
        self.ops[name] = opdef
        return opdef


def from_document(doc: object, *, name: str | None = None, strict: bool = False,
                  max_nodes: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Graph:
    """Rebuild a `Graph` from a document (as `to_document` returns, or as decoded off the wire).

    Every node is built by the engine from the installed ops. Computed nodes take the data
    their op recomputes; with ``strict=True`` stored data that disagrees is refused. Leaves
    keep their data; gradients, labels and source locations are restored. ``name`` names the
    graph (default: the document's name); ``max_nodes`` is the new graph's node limit, and a
    document with more nodes raises `GraphLimitError` before anything is built. Anything wrong
    with the document raises `GraphFileError`. ``progress(done, total)`` is called as nodes are
    built (every 4,096 and at the end), for a progress bar.
    """
    doc_name, raw_nodes = _check_document_head(doc)
    count = len(raw_nodes)
    if max_nodes is not None and count > max_nodes:
        raise GraphLimitError(
            f"the graph document has {count} nodes, more than the limit of {max_nodes}"
        )
    graph = Graph(doc_name if name is None else name, max_nodes=max_nodes)
    plain = _PlainNodes(graph)
    for i, raw in enumerate(raw_nodes):
        if not strict and plain.build(i, raw):
            if progress is not None and not i % 4096:
                progress(i, count)
            continue
        node = _Node(i, raw, count)
        value = _build(graph, node)
        if node.op is not None and node.data is not None and strict and not _agrees(
            node.data, value.data
        ):
            raise GraphFileError(
                f"{_where(i, node.label)}: stored data {node.data!r} differs from "
                f"{value.data!r} recomputed by op {node.op!r} (load with strict=False to "
                f"trust the recomputation)", node=i, field="data",
            )
        value.grad = node.grad
        if progress is not None and not i % 4096:
            progress(i, count)
    if progress is not None:
        progress(count, count)
    return graph


def _decode_json_float(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _FLOAT_TAG in obj and obj[_FLOAT_TAG] in _JSON_FLOATS:
        return _JSON_FLOATS[obj[_FLOAT_TAG]]
    return obj


def _parse_json(text: str) -> object:
    try:
        return json.loads(text, object_hook=_decode_json_float)
    except json.JSONDecodeError as exc:
        raise GraphFileError(
            f"corrupt graph file: not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise GraphFileError(f"corrupt graph file: JSON that cannot be read ({exc})") from None


def _parse_msgpack(data: bytes) -> object:
    size = len(data)
    # No length in the data can be more than the bytes there are: limits that keep a forged
    # header from making the decoder allocate more than the input's own size.
    unpacker = msgpack.Unpacker(
        None, raw=False, strict_map_key=True, use_list=True, max_buffer_size=size,
        max_str_len=size, max_bin_len=size, max_array_len=size, max_map_len=size,
        max_ext_len=0, unicode_errors="surrogatepass",
    )
    unpacker.feed(data)
    try:
        doc = unpacker.unpack()
    except msgpack.OutOfData:
        raise GraphFileError(
            f"truncated graph file: the data ends in the middle of a msgpack value "
            f"({size} bytes)"
        ) from None
    except Exception as exc:  # the decoder raises ValueError, FormatError, StackError, ...
        if isinstance(exc, msgpack.StackError):
            detail = "values nested too deeply"
        elif isinstance(exc, msgpack.FormatError):
            detail = "a byte that begins no msgpack value"
        else:
            detail = str(exc) or type(exc).__name__
        if "exceeds max_" in detail and "max_ext_len" not in detail:
            raise GraphFileError(
                f"truncated or corrupt graph file: a msgpack length is more than the {size} "
                f"bytes there are ({detail})"
            ) from None
        raise GraphFileError(f"corrupt graph file: not valid msgpack ({detail})") from None
    extra = size - unpacker.tell()
    if extra:
        raise GraphFileError(
            f"corrupt graph file: {extra} unexpected byte{'s' * (extra != 1)} after the graph"
        )
    return doc


# The first byte of a msgpack map: fixmap (0x80-0x8f), map 16 (0xde), map 32 (0xdf).
_MSGPACK_MAP_MARKERS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
# The first byte of a msgpack string: fixstr (0xa0-0xbf), str 8, 16 and 32 (0xd9-0xdb).
_MSGPACK_STR_MARKERS = frozenset(range(0xA0, 0xC0)) | {0xD9, 0xDA, 0xDB}


def _may_be_a_graph_map(data: bytes) -> bool:
    """Whether msgpack ``data`` begins as a graph document does: a map whose first key (if it
    has one, and the bytes go that far) is a string."""
    first = data[0]
    if first not in _MSGPACK_MAP_MARKERS:
        return False
    header = 1 if first < 0x90 else (3 if first == 0xDE else 5)
    empty = first == 0x80 or (header > 1 and data[1:header] == bytes(header - 1))
    if empty or len(data) <= header:
        return True  # decoded as it is: an empty map, or a truncated file
    return data[header] in _MSGPACK_STR_MARKERS


def _sniff_json(data: bytes) -> bool:
    start = data.lstrip(b" \t\r\n")
    if start.startswith(b"\xef\xbb\xbf"):
        start = start[3:].lstrip(b" \t\r\n")
    return start[:1] in (b"{", b"[")


def parse(data: bytes | bytearray | memoryview | str) -> object:
    """Decode graph-file bytes (msgpack or JSON, told apart by content) into a document.

    The document is not checked; `from_document` does that.
    """
    if isinstance(data, str):
        return _parse_json(data.removeprefix("\ufeff"))
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"graph file data must be bytes or str, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise GraphFileError("empty graph file: no data")
    if _sniff_json(data):
        try:
            text = data.decode("utf-8-sig", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise GraphFileError(f"corrupt graph file: JSON that is not UTF-8 ({exc})") from None
        return _parse_json(text)
    if _may_be_a_graph_map(data):
        return _parse_msgpack(data)
    # Every graph file is a map with string keys. Bytes that begin something else and do not
    # decode as one whole msgpack value (a text file, a picture, a Python file renamed .opg)
    # are no graph file at all, rather than a corrupt one.
    try:
        return _parse_msgpack(data)
    except GraphFileError:
        raise GraphFileError(
            f"not an opgraph graph file: it begins with {data[:16]!r}, not with a graph "
            f"document (a msgpack map with string keys, or a JSON object)"
        ) from None


def loads(data: bytes | bytearray | memoryview | str, *, name: str | None = None,
          strict: bool = False, max_nodes: int | None = None,
          progress: Callable[[int, int], None] | None = None) -> Graph:
    """A `Graph` from graph-file bytes: msgpack, or JSON (bytes or str), told apart by content.

    Options as for `from_document`. Raises `GraphFileError` for anything that is not a good
    graph file.
    """
    return from_document(parse(data), name=name, strict=strict, max_nodes=max_nodes,
                         progress=progress)


def from_json(text: str | bytes, *, name: str | None = None, strict: bool = False,
              max_nodes: int | None = None) -> Graph:
    """A `Graph` from the JSON form (str or UTF-8 bytes)."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8-sig", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise GraphFileError(f"corrupt graph file: JSON that is not UTF-8 ({exc})") from None
    if not isinstance(text, str):
        raise TypeError(f"JSON graph text must be str or bytes, got {type(text).__name__}")
    text = text.removeprefix("\ufeff")
    return from_document(_parse_json(text), name=name, strict=strict, max_nodes=max_nodes)


def load(path: str | os.PathLike[str], *, name: str | None = None, strict: bool = False,
         max_nodes: int | None = None,
         progress: Callable[[int, int], None] | None = None) -> Graph:
    """Read the graph file at ``path`` (msgpack or JSON, whatever its suffix).

    A bad file raises `GraphFileError` whose message starts with the path; a file that cannot
    be opened raises the usual `OSError`. Options as for `from_document`.
    """
    target = Path(path)
    data = target.read_bytes()
    try:
        return loads(data, name=name, strict=strict, max_nodes=max_nodes, progress=progress)
    except GraphFileError as exc:
        raise GraphFileError(f"{target}: {exc}", node=exc.node, field=exc.field) from exc

