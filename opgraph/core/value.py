"""`Value`, and applying an op to values: the engine's reference path, as micrograd has it.

A node stores its inputs as a tuple and a reference to its op (an `OpDef`); there are no
per-node closures. A free node refers only to its inputs, so a graph of free values holds no
reference cycles. A node held by a `Graph` refers to its graph, and the graph to its nodes:
those are cycles, which the collector frees once nothing else holds the graph.

Applying an op (`apply_op`) checks the inputs and attributes, runs the forward rule
(`rules.run_forward`), makes the node (`new_node`) and, when an input belongs to a `Graph`,
adds the node to that graph (free inputs join it first). The operators that `Value` gets from
the op table (``x * y``, ``x.tanh()``) do the same, faster: see `opgraph.core.fast`.

Gradient semantics (documented in the README), as in PyTorch: ``root.backward()`` sets the
``grad`` of every computed node under ``root`` to d root / d node (the root's own to 1), and
*adds* d root / d leaf to the ``grad`` of every leaf. A fresh graph starts at zero, so after one
call every ``grad`` is exactly the derivative. A second call adds again at the leaves (twice
the gradient) while computed nodes keep exactly the derivative, so micrograd's trap (stale
interior gradients fed back into the pass) cannot happen. Reset with ``root.zero_grad()``,
``Graph.zero_grad()`` or ``Module.zero_grad()``.

With ``root.backward(create_graph=True)`` the same holds with nodes for numbers: every computed
node's ``grad`` is a `Value`, the node of d root / d node in a graph built from the ops' graph
rules, and each leaf's ``grad`` becomes that node (from 0.0) or the sum of what it held and
that node, so gradients of gradients work (`opgraph.core.higher`, `opgraph.higher`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol

from opgraph.core import fast, passes, rules, source
from opgraph.core.rules import show_number
from opgraph.core.source import SourceLocation
from opgraph.errors import ArityError, AttributeSpecError, GraphMismatchError, InputTypeError
from opgraph.opdef import OpDef


class Owner(Protocol):
    """What the engine asks of the graph a new node joins (`opgraph.graph.Graph` is one)."""

    name: str

    def reserve(self, count: int) -> None:
        """Raise unless ``count`` more nodes fit."""

    def adopt(self, root: Value) -> Value:
        """Add ``root`` and the free values it depends on, inputs first."""


def check_data(data: Any, where: str) -> float:
    """``data`` as the float a node holds: ints (and other real numbers) are converted, as
    PyTorch and JAX do for float64 tensors, so no op computes with unbounded Python integers;
    anything else, or a number too big for a double, raises `InputTypeError` naming ``where``."""
    if type(data) is float:
        return data
    if isinstance(data, bool) or not isinstance(data, numbers.Real):
        raise InputTypeError(f"{where}: expected a real number, got {type(data).__name__} "
                             f"{show_number(data)}")
    try:
        return float(data)
    except (OverflowError, ValueError):
        raise InputTypeError(f"{where}: {show_number(data)} is too big for a float (a double "
                             f"holds up to about 1.8e308)") from None


class Value:
    """A scalar in an expression graph, as in micrograd.

    ``data`` is the number, ``grad`` the derivative of the last ``backward()`` root with respect
    to it, ``label`` a name for people. ``_prev`` is the set of input values and ``_op`` the
    op's symbol, so code written for micrograd (``trace``, ``draw_dot``) works unchanged.
    The op methods (``+``, ``*``, ``tanh()``, a plugin's ``softplus()``) come from the op table
    (`opgraph.core.optable`).
    """

    # The four fields every node sets are slots; the rarely set ones are class-level defaults,
    # stored in a per-instance dict only when set (a labelled or graph-held value). This keeps
    # the stores per created node, the engine's hottest path, to four.
    __slots__ = ("__dict__", "_inputs", "_opdef", "data", "grad")
    label: str = ""
    _attrs: dict[str, Any] | None = None
    _graph: Owner | None = None
    _id: int | None = None
    _loc: SourceLocation | None = None

    def __init__(self, data: float, label: str = "") -> None:
        """A leaf holding ``data`` as a float: ``Value(3).data == 3.0``; a number too big for a
        double, a bool or a non-number raises `InputTypeError`."""
        self.data = data if type(data) is float else check_data(data, "Value(data)")
        self.grad = 0.0
        self._inputs: tuple[Value, ...] = ()
        self._opdef: OpDef | None = None
        if label:
            if type(label) is not str:
                raise InputTypeError(f"Value(label): expected a string, got "
                                     f"{type(label).__name__} {label!r}")
            self.label = label
        if source.tracking:
            self._loc = source.caller_location()

    def __repr__(self) -> str:
        return f"Value(data={self.data})"

    # micrograd's names
    @property
    def _prev(self) -> set[Value]:
        """The set of input values (the same objects on every call)."""
        return set(self._inputs)

    @property
    def _op(self) -> str:
        """The op's symbol (``'+'``, ``'*'``, ``'tanh'``), ``''`` for a leaf."""
        op = self._opdef
        return "" if op is None else op.format_symbol(self._attrs)

    # opgraph's own read-only views
    @property
    def op(self) -> str | None:
        """The name of the op that computed this value, None for a leaf."""
        return None if self._opdef is None else self._opdef.name

    # (Read-only views of a field are properties whose getter is C code: about half the cost.)
    opdef: OpDef | None = property(  # type: ignore[assignment]
        attrgetter("_opdef"), doc="The definition of the op that computed this value, None for "
                                  "a leaf.")
    inputs: tuple[Value, ...] = property(  # type: ignore[assignment]
        attrgetter("_inputs"), doc="The input values, in the op's argument order.")

    @property
    def attrs(self) -> dict[str, Any]:
        """The op's constant attributes (``{'exponent': 2}``), empty for most ops."""
        return dict(self._attrs or {})

    @property
    def is_leaf(self) -> bool:
        """True for a value no op computed."""
        return self._opdef is None

    id: int | None = property(  # type: ignore[assignment]
        attrgetter("_id"), doc="The node id in its `Graph`, None when the value belongs to none.")
    graph: Owner | None = property(  # type: ignore[assignment]
        attrgetter("_graph"), doc="The `Graph` this value belongs to, if any.")
    source: SourceLocation | None = property(  # type: ignore[assignment]
        attrgetter("_loc"), doc="``(file, line)`` of the code that created this value, when it "
                                "was recorded.")

    def __pos__(self) -> Value:
        return self

    if TYPE_CHECKING:
        # The op methods `opgraph.core.optable` installs, declared for type checkers only (at
        # run time they are the op table's; a plugin op's method, ``x.softplus()``, is not here).
        def __add__(self, other: Value | float) -> Value: ...
        def __radd__(self, other: Value | float) -> Value: ...
        def __sub__(self, other: Value | float) -> Value: ...
        def __rsub__(self, other: Value | float) -> Value: ...
        def __mul__(self, other: Value | float) -> Value: ...
        def __rmul__(self, other: Value | float) -> Value: ...
        def __truediv__(self, other: Value | float) -> Value: ...
        def __rtruediv__(self, other: Value | float) -> Value: ...
        def __pow__(self, other: Value | float) -> Value: ...
        def __rpow__(self, other: Value | float) -> Value: ...
        def __neg__(self) -> Value: ...
        def tanh(self) -> Value: ...
        def exp(self) -> Value: ...
        def log(self) -> Value: ...
        def relu(self) -> Value: ...
        def sigmoid(self) -> Value: ...

    def __format__(self, spec: str) -> str:
        """With a format spec, ``data`` formatted by it (``f"{v:.4f}"``, as pictures show a
        ``grad`` that is a node); without one, ``str(v)``."""
        return format(self.data, spec) if spec else str(self)

    backward = fast.backward

    def zero_grad(self) -> None:
        """Set ``grad`` to 0 on this value and every node it depends on."""
        for node in passes.topological_order(self):
            node.grad = 0.0


# --- the node fields that layers above the engine set --------------------------------------------


def new_node(op: OpDef | None, inputs: tuple[Value, ...], data: float | int,
             attrs: dict[str, Any] | None = None) -> Value:
    """A new node of ``op`` over ``inputs`` holding ``data`` (nothing is computed or checked;
    None and no inputs: a leaf); it joins no graph. The one place the reference path makes a
    node."""
    node = object.__new__(Value)
    node.data = data
    node.grad = 0.0
    node._inputs = inputs
    node._opdef = op
    if attrs is not None:
        node._attrs = attrs
    if source.tracking:
        node._loc = source.caller_location()
    return node


def copy_node(value: Value, inputs: tuple[Value, ...]) -> Value:
    """A copy of ``value`` over ``inputs`` (copies of its own): the same data, grad, label, op,
    attributes and source; it joins no graph."""
    node = new_node(value._opdef, inputs, value.data, value._attrs)
    node.grad = value.grad
    if value.label:
        node.label = value.label
    set_source(node, value._loc)
    return node


class GraphValue(Value):
    """A `Value` held by a `Graph`: a value becomes one when it joins a graph (`place`).

    Nothing else differs; the class is how the operators tell, at no cost, that an input
    belongs to a graph, so that they take the reference path, which adds the result to it.
    """

    __slots__ = ()


def place(value: Value, graph: Owner | None, node_id: int | None) -> None:
    """Record that ``value`` is node ``node_id`` of ``graph`` (None, None: of no graph).
    For `Graph`, which keeps its node list to match."""
    if graph is not None:
        value.__class__ = GraphValue
        value._graph = graph
        value._id = node_id
        return
    value.__class__ = Value
    for field in ("_graph", "_id"):
        if field in value.__dict__:
            del value.__dict__[field]  # back to the class-level default


def set_source(value: Value, location: SourceLocation | None) -> None:
    """Record (or with None, forget) where ``value`` was made."""
    if location is not None:
        value._loc = location
    elif value._loc is not None:
        del value._loc  # back to the class-level default


# --- applying ops --------------------------------------------------------------------------------


def check_attrs(op: OpDef, attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """Check that ``attrs`` are exactly the op's attributes, with scalar values.

    Returns them as the engine stores them (None for none).
    """
    if not attrs and not op.attrs:
        return None
    given, wanted = set(attrs), set(op.attrs)
    if given != wanted:
        extra, missing = sorted(given - wanted), sorted(wanted - given)
        detail = "; ".join(
            part for part in (
                f"unexpected {extra}" if extra else "",
                f"missing {missing}" if missing else "",
            ) if part
        )
        raise AttributeSpecError(
            f"op {op.name!r} takes attributes {sorted(wanted) or 'none'}: {detail}"
        )
    for key, value in attrs.items():
        if isinstance(value, bool) or not isinstance(value, int | float | str) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise AttributeSpecError(
                f"op {op.name!r}: attribute {key!r} must be a finite number or a string, "
                f"got {type(value).__name__} {value!r}"
            )
    return dict(attrs) or None


def check_application(
    op: OpDef, inputs: Sequence[Value], attrs: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """Check the number of inputs and the attributes of an application of ``op``.

    Returns the attributes as the engine stores them (None for none).
    """
    if len(inputs) != op.arity:
        raise ArityError(
            f"op {op.name!r} takes {op.arity} input{'s' * (op.arity != 1)}, got {len(inputs)}"
            + (f": {rules.describe_all(inputs)}" if inputs else "")
        )
    return check_attrs(op, attrs or {})


def compute(op: OpDef, inputs: tuple[Value, ...], attrs: dict[str, Any] | None) -> Value:
    """A new node: ``op`` over ``inputs`` (arity and attributes already checked); joins no
    graph."""
    return new_node(op, inputs, rules.run_forward(op, inputs, attrs), attrs)


def owner_of(inputs: Sequence[Value], op: OpDef) -> Owner | None:
    """The graph a new node over ``inputs`` joins: the one they belong to, if any (room for
    the node is reserved in it); `GraphMismatchError` if they belong to different graphs."""
    owner = None
    for v in inputs:
        g = v._graph
        if g is not None:
            if owner is None:
                owner = g
            elif g is not owner:
                raise GraphMismatchError(
                    f"op {op.name!r}: inputs belong to different graphs "
                    f"({owner.name!r} and {g.name!r}); {rules.describe_all(inputs)}"
                )
    if owner is not None:
        owner.reserve(1)
    return owner


def apply_checked(op: OpDef, inputs: tuple[Value, ...], attrs: dict[str, Any] | None) -> Value:
    """``op`` over ``inputs`` (arity and attributes already checked), joining their graph.

    The graph is asked for room first and takes the node (and its free inputs) only once its
    output is known to be good, so a failed op adds nothing to it.
    """
    owner = owner_of(inputs, op)
    node = compute(op, inputs, attrs)
    if owner is not None:
        owner.adopt(node)
    return node


def apply_op(op: OpDef, inputs: Sequence[Value], attrs: Mapping[str, Any] | None = None) -> Value:
    """Apply the op definition ``op`` to ``inputs`` (all `Value`)."""
    checked = check_application(op, inputs, attrs)
    return apply_checked(op, tuple(inputs), checked)


def as_values(inputs: Sequence[Value | float], op: str) -> list[Value]:
    """``inputs`` with numbers made into leaves (`InputTypeError` for anything else)."""
    return [
        v if isinstance(v, Value) else Value(check_data(v, f"input {i} of op {op!r}"))
        for i, v in enumerate(inputs)
    ]


def operand(other: Any, symbol: str) -> Value:
    """The other operand of an operator: a `Value`, or a number made into a leaf."""
    if isinstance(other, Value):
        return other
    return Value(check_data(other, f"operand of {symbol!r}"))


def backward(root: Value, create_graph: bool = False) -> None:
    """Backpropagate from ``root``: computed nodes get d root / d node, leaves add it (the same
    as ``root.backward(create_graph)``)."""
    if not isinstance(root, Value):
        raise InputTypeError(f"backward: expected a Value, got {type(root).__name__}")
    root.backward(create_graph)
