"""The engine: `Value`, applying ops, and the forward and backward passes.

The engine has no arithmetic of its own. Every op, ``+`` included, is an `OpDef` looked up by
name in the op table that the plugins filled (see `opgraph.registry`). A node stores its inputs
as a tuple and a reference to its op; there are no per-node closures, so a graph holds no
reference cycles and the cyclic garbage collector has nothing to chase.

Gradient semantics (documented in the README), as in PyTorch: ``root.backward()`` sets the
``grad`` of every computed node under ``root`` to d root / d node (the root's own to 1), and
*adds* d root / d leaf to the ``grad`` of every leaf. A fresh graph starts at zero, so after one
call every ``grad`` is exactly the derivative. A second call adds again at the leaves (twice
the gradient) while computed nodes keep exactly the derivative, so micrograd's trap (stale
interior gradients fed back into the pass) cannot happen. Reset with ``root.zero_grad()``,
``Graph.zero_grad()`` or ``Module.zero_grad()``.
"""

from __future__ import annotations

import gc
import math
import numbers
import operator
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opgraph.errors import (
    ArityError,
    AttributeSpecError,
    ForwardError,
    GradRuleError,
    GraphMismatchError,
    InputTypeError,
)
from opgraph.opdef import OpDef

if TYPE_CHECKING:
    from opgraph.graph import Graph

SourceLocation = tuple[str, int]

# --- the op table, cached from the default registry ----------------------------------------------

# A plain dict (an exact dict is what the interpreter's fast subscript path takes), filled from
# the default registry on first use; `_table` fills it, and the hot paths fall back to
# `lookup_op` when a name is missing.
_OPS: dict[str, OpDef] = {}
_ops_loaded = False


def _table() -> dict[str, OpDef]:
    """The installed ops by name, loaded from the default registry on first use."""
    global _ops_loaded
    if not _ops_loaded:
        from opgraph.registry import default_registry

        _OPS.update(default_registry()._ops)
        _ops_loaded = True
        _add_op_methods(_OPS)
    return _OPS


def _reset_op_cache() -> None:
    global _ops_loaded
    _OPS.clear()
    _ops_loaded = False
    for name in _added_methods:
        delattr(Value, name)
    _added_methods.clear()


_added_methods: list[str] = []


def _add_op_methods(ops: dict[str, OpDef]) -> None:
    """Give `Value` a method per installed op it lacks: ``x.softplus()``, ``x.atan2(y)``.

    (Methods on the class rather than a ``__getattr__`` hook, which would slow every
    attribute access of every node.)
    """
    for name, op in ops.items():
        if hasattr(Value, name):
            continue

        def method(self: Value, *others: Value | float, _name: str = name,
                   **attrs: Any) -> Value:
            return apply(_name, self, *others, **attrs)

        method.__name__ = name
        method.__qualname__ = f"Value.{name}"
        method.__doc__ = op.doc or f"op {name!r} from plugin {op.plugin!r}"
        setattr(Value, name, method)
        _added_methods.append(name)


def lookup_op(name: str) -> OpDef:
    """The installed op named ``name``; raises `UnknownOpError` with suggestions."""
    try:
        return _table()[name]
    except (KeyError, TypeError):  # (TypeError: an unhashable name)
        from opgraph.registry import default_registry

        # (the registry's error: unknown, with suggestions, or left out by a plugin clash)
        raise default_registry().missing(name) from None


# --- source locations ----------------------------------------------------------------------------

_track_source = False
_live_graphs = 0  # Graph objects alive in the process (counted by `_graph_born`)
# True while no node can need more than its four fields: source tracking is off and no `Graph`
# is alive (a value in a graph holds its graph, so then no input can belong to one). The hot
# paths test this one flag. It and the two above change together, under this lock.
_plain = True
_flags_lock = threading.RLock()  # re-entrant: a finalizer may run inside, during a collection
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller_location() -> SourceLocation | None:
    """File and line of the innermost frame outside the opgraph package."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR):
            if not os.path.isabs(filename) and not filename.startswith("<"):
                filename = os.path.abspath(filename)  # editors match sources by full path
            return (filename, frame.f_lineno)
        frame = frame.f_back
    return None


@contextmanager
def track_source(enabled: bool = True) -> Iterator[None]:
    """Record the file and line that created each node while inside this block.

    Off by default because walking the stack costs about a microsecond per node; the Neovim
    client and ``Client.publish`` use these locations to put values beside the code.
    """
    previous = set_source_tracking(enabled)
    try:
        yield
    finally:
        set_source_tracking(previous)


def set_source_tracking(enabled: bool) -> bool:
    """Switch source-location recording on or off for the whole process; returns the old state."""
    global _track_source, _plain
    with _flags_lock:
        previous, _track_source = _track_source, bool(enabled)
        _plain = not _track_source and _live_graphs == 0
    return previous


def _graph_born(graph: Graph) -> None:
    """Called for every `Graph` made (or unpickled): while any is alive, new nodes check whether
    their inputs belong to one."""
    global _live_graphs, _plain
    with _flags_lock:
        _live_graphs += 1
        _plain = False
    weakref.finalize(graph, _graph_gone)


def _graph_gone() -> None:
    global _live_graphs, _plain
    with _flags_lock:
        _live_graphs -= 1
        _plain = not _track_source and _live_graphs == 0


# --- Value ---------------------------------------------------------------------------------------


def _check_data(data: Any, where: str) -> float:
    """``data`` as the float a node holds: ints (and other real numbers) are converted, as
    PyTorch and JAX do for float64 tensors; anything else, or a number too big for a double,
    raises `InputTypeError` naming ``where``."""
    if type(data) is float:
        return data
    if isinstance(data, bool) or not isinstance(data, numbers.Real):
        raise InputTypeError(f"{where}: expected a real number, got {type(data).__name__} "
                             f"{_show_number(data)}")
    try:
        return float(data)
    except (OverflowError, ValueError):
        raise InputTypeError(f"{where}: {_show_number(data)} is too big for a float (a double "
                             f"holds up to about 1.8e308)") from None


def _show_number(data: Any) -> str:
    """``repr(data)``, cut short: an int of thousands of digits is named by its size."""
    if isinstance(data, int) and not isinstance(data, bool) and data.bit_length() > 200:
        return f"an int of {int(data.bit_length() * 0.30103) + 1} digits"  # (about)
    try:
        text = repr(data)
    except Exception:  # pragma: no cover - a hostile __repr__
        return type(data).__name__
    return text if len(text) <= 60 else text[:57] + "..."


class Value:
    """A scalar in an expression graph, as in micrograd.

    ``data`` is the number, ``grad`` the derivative of the last ``backward()`` root with respect
    to it, ``label`` a name for people. ``_prev`` is the set of input values and ``_op`` the
    op's symbol, so code written for micrograd (``trace``, ``draw_dot``) works unchanged.
    """

    # The four fields every node sets are slots; the rarely set ones are class-level defaults,
    # stored in a per-instance dict only when set (a labelled or graph-held value). This
    # halves the stores per created node, the engine's hottest path.
    __slots__ = ("__dict__", "_inputs", "_opdef", "data", "grad")
    label: str = ""
    _attrs: dict[str, Any] | None = None
    _graph: Graph | None = None
    _id: int | None = None
    _loc: SourceLocation | None = None

    def __init__(self, data: float, label: str = "") -> None:
        """A leaf holding ``data`` as a float: ``Value(3).data == 3.0`` (ints are converted, so
        no op computes with unbounded Python integers); a number too big for a double, a
        bool or a non-number raises `InputTypeError`."""
        if not _ops_loaded:
            _table()  # so that plugin ops are methods (x.softplus()) from the first value on
        self.data = data if type(data) is float else _check_data(data, "Value(data)")
        self.grad = 0.0
        self._inputs: tuple[Value, ...] = ()
        self._opdef: OpDef | None = None
        if label:
            if type(label) is not str:
                raise InputTypeError(f"Value(label): expected a string, got "
                                     f"{type(label).__name__} {label!r}")
            self.label = label
        if _track_source:
            self._loc = _caller_location()

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

    @property
    def inputs(self) -> tuple[Value, ...]:
        """The input values, in the op's argument order."""
        return self._inputs

    @property
    def attrs(self) -> dict[str, Any]:
        """The op's constant attributes (``{'exponent': 2}``), empty for most ops."""
        return dict(self._attrs or {})

    @property
    def is_leaf(self) -> bool:
        """True for a value no op computed."""
        return self._opdef is None

    @property
    def id(self) -> int | None:
        """The node id in its `Graph`, None when the value belongs to none."""
        return self._id

    @property
    def graph(self) -> Graph | None:
        """The `Graph` this value belongs to, if any."""
        return self._graph

    @property
    def source(self) -> SourceLocation | None:
        """``(file, line)`` of the code that created this value, when it was recorded."""
        return self._loc

    # arithmetic: each operator is an op looked up by name (methods made below the class)
    def __pow__(self, other: Value | float) -> Value:
        if isinstance(other, Value):
            return apply_op(lookup_op("pow"), (self, other))
        # A constant exponent is an attribute, not data: an int stays one (drawn as ``**2``); a
        # float base makes the power a float one, so even a huge int exponent costs nothing.
        exponent = other if type(other) is int else _check_data(other, "Value ** exponent")
        return _apply_checked(lookup_op("pow_const"), (self,), {"exponent": exponent})

    def __pos__(self) -> Value:
        return self

    def backward(self) -> None:
        """Backpropagate: every computed node's ``grad`` becomes d self / d node, and every leaf's
        ``grad`` grows by d self / d leaf (leaves accumulate; see `zero_grad`). Iterative.

        The pass itself, written out here because it is the hottest path of a training loop:
        `topological_order` and the zeroing of `backward_over` fused into one walk, then
        `_propagate`. Python's cyclic garbage collector is paused meanwhile: the pass makes no
        reference cycles, but on a deep graph its stack would set off full collections.
        """
        if self._opdef is None:  # a leaf: d self / d self is 1, and nothing lies below it
            self.grad += 1.0
            return
        paused = _gc_isenabled()
        if paused:
            _gc_disable()
        try:
            order: list[Value] = []
            saved = {self: self.grad}  # the nodes seen so far, each with its grad from before
            stack: list[tuple[Value, Iterator[Value]]] = []  # the nodes below `node`'s parent
            emit = order.append
            node, pending = self, iter(self._inputs)  # a node and its inputs not yet visited
            while True:
                for child in pending:
                    if child not in saved:
                        saved[child] = child.grad
                        if child._inputs:
                            stack.append((node, pending))
                            node, pending = child, iter(child._inputs)
                            break
                        emit(child)  # a leaf: done at once, no stack entry (often half the nodes)
                else:
                    emit(node)  # only computed nodes are stacked: zero each before the sweep
                    node.grad = 0.0
                    if not stack:
                        break
                    node, pending = stack.pop()
            _propagate(order, saved, self)
        finally:
            if paused:
                _gc_enable()

    def zero_grad(self) -> None:
        """Set ``grad`` to 0 on this value and every node it depends on."""
        for node in topological_order(self):
            node.grad = 0.0


def _operand(other: Any, symbol: str) -> Value:
    if isinstance(other, Value):
        return other
    return Value(_check_data(other, f"operand of {symbol!r}"))


def _binary_operator(name: str, symbol: str, reflected: bool) -> Callable[[Value, Any], Value]:
    """``Value.__add__`` and friends: the op ``name`` over self and other (swapped if reflected).

    The node is made here rather than through a helper: one call less on the hottest path.
    """

    def operator(self: Value, other: Value | float) -> Value:
        if type(other) is not Value:
            other = _operand(other, symbol)
        if reflected:
            a, b = other, self
        else:
            a, b = self, other
        try:
            op = _OPS[name]
        except KeyError:
            op = lookup_op(name)
        if not _plain:
            return _apply_checked(op, (a, b), None)
        try:
            out = op.forward(a.data, b.data)
        except Exception as exc:
            raise _forward_failed(op, (a, b), exc) from exc
        if type(out) is not float:
            out = _coerce_output(out, op, (a, b))
        node = _new(Value)
        node.data = out
        node.grad = 0.0
        node._inputs = (a, b)
        node._opdef = op
        return node

    operator.__name__ = f"__{'r' * reflected}{name}__"
    operator.__doc__ = f"other {symbol} self" if reflected else f"self {symbol} other"
    return operator


def _unary_method(name: str, doc: str) -> Callable[[Value], Value]:
    """``Value.tanh`` and friends: the one-input op ``name`` over self (inlined, as above)."""

    def method(self: Value) -> Value:
        try:
            op = _OPS[name]
        except KeyError:
            op = lookup_op(name)
        if not _plain:
            return _apply_checked(op, (self,), None)
        try:
            out = op.forward(self.data)
        except Exception as exc:
            raise _forward_failed(op, (self,), exc) from exc
        if type(out) is not float:
            out = _coerce_output(out, op, (self,))
        node = _new(Value)
        node.data = out
        node.grad = 0.0
        node._inputs = (self,)
        node._opdef = op
        return node

    method.__name__ = name
    method.__doc__ = doc
    return method


for _dunder, _name, _symbol in (("add", "add", "+"), ("sub", "sub", "-"), ("mul", "mul", "*"),
                                ("truediv", "div", "/"), ("pow", "pow", "**")):
    if _dunder != "pow":
        setattr(Value, f"__{_dunder}__", _binary_operator(_name, _symbol, False))
    setattr(Value, f"__r{_dunder}__", _binary_operator(_name, _symbol, True))
for _name, _doc in (("neg", "-self"), ("tanh", "tanh of this value."),
                    ("exp", "e to the power of this value."),
                    ("log", "Natural logarithm of this value."), ("relu", "max(0, this value)."),
                    ("sigmoid", "1 / (1 + e^-x) of this value.")):
    setattr(Value, "__neg__" if _name == "neg" else _name, _unary_method(_name, _doc))


# --- applying ops --------------------------------------------------------------------------------


def describe(value: Value) -> str:
    """How error messages name a node: its label and/or id, and its data."""
    parts = []
    if value.label:
        parts.append(repr(value.label))
    if value._id is not None:
        parts.append(f"id {value._id}")
    name = " ".join(parts) if parts else "unlabelled value"
    return f"{name} (data {value.data!r})"


def _describe_inputs(inputs: Sequence[Value]) -> str:
    return ", ".join(describe(v) for v in inputs)


def _forward_failed(op: OpDef, inputs: Sequence[Value], exc: BaseException) -> ForwardError:
    return ForwardError(
        f"op {op.name!r} failed on {_describe_inputs(inputs)}: forward rule raised "
        f"{type(exc).__name__}: {exc}",
        op=op.name, node=_describe_inputs(inputs), cause=exc,
    )


def _coerce_output(out: Any, op: OpDef, inputs: Sequence[Value]) -> float:
    """A forward rule's result that is not a float, as the float a node holds: an int (or
    another real number) is converted, so that no chain of ops computes with exact integers
    of growing size; anything else, or an int too big for a double, is a `ForwardError`."""
    if isinstance(out, numbers.Real) and not isinstance(out, bool):
        try:
            return float(out)
        except (OverflowError, ValueError):
            problem = f"{_show_number(out)}, too big for a float"
    else:
        problem = f"{type(out).__name__} {_show_number(out)}, not a real number"
    raise ForwardError(
        f"op {op.name!r} on {_describe_inputs(inputs)}: forward rule returned {problem}",
        op=op.name, node=_describe_inputs(inputs),
    )


def _owner(inputs: Sequence[Value], op: OpDef) -> Graph | None:
    """The graph the new node joins: the one its inputs belong to, if any."""
    owner = None
    for v in inputs:
        g = v._graph
        if g is not None:
            if owner is None:
                owner = g
            elif g is not owner:
                raise GraphMismatchError(
                    f"op {op.name!r}: inputs belong to different graphs "
                    f"({owner.name!r} and {g.name!r}); {_describe_inputs(inputs)}"
                )
    if owner is not None:
        owner._reserve(1)
    return owner


def _finish(node: Value, owner: Graph | None) -> Value:
    """Attach a node to its graph (adopting free inputs) once its output is known to be good."""
    if owner is not None:
        owner._adopt_inputs(node._inputs)
        owner._register(node)
    return node


_new = object.__new__
_gc_isenabled, _gc_disable, _gc_enable = gc.isenabled, gc.disable, gc.enable


def _new_node(data, op: OpDef, inputs: tuple[Value, ...], attrs) -> Value:
    node = _new(Value)
    node.data = data
    node.grad = 0.0
    node._inputs = inputs
    node._opdef = op
    if attrs is not None:
        node._attrs = attrs
    if _track_source:
        node._loc = _caller_location()
    return node


def _apply_checked(op: OpDef, inputs: tuple[Value, ...], attrs: dict[str, Any] | None) -> Value:
    """``op`` over ``inputs`` (arity and attributes already checked), joining their graph."""
    owner = _owner(inputs, op) if _live_graphs else None
    node = compute(op, inputs, attrs)
    return node if owner is None else _finish(node, owner)


def check_attrs(op: OpDef, attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """Check that ``attrs`` are exactly the op's attributes, with scalar values."""
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
            + (f": {_describe_inputs(inputs)}" if inputs else "")
        )
    return check_attrs(op, attrs or {})


def compute(op: OpDef, inputs: tuple[Value, ...], attrs: dict[str, Any] | None) -> Value:
    """A new node: ``op`` over ``inputs``, already checked; joins no graph."""
    try:
        out = op.forward(*[v.data for v in inputs], **attrs) if attrs else op.forward(
            *[v.data for v in inputs])
    except Exception as exc:
        raise _forward_failed(op, inputs, exc) from exc
    if type(out) is not float:
        out = _coerce_output(out, op, inputs)
    return _new_node(out, op, inputs, attrs)


def apply_op(op: OpDef, inputs: Sequence[Value], attrs: Mapping[str, Any] | None = None) -> Value:
    """Apply the op definition ``op`` to ``inputs`` (all `Value`)."""
    checked = check_application(op, inputs, attrs)
    return _apply_checked(op, tuple(inputs), checked)


def apply(name: str, *inputs: Value | float, **attrs: Any) -> Value:
    """Apply the installed op ``name`` to ``inputs`` (Values or numbers), with its attributes.

    >>> apply("tanh", Value(0.5))          # same as Value(0.5).tanh()
    >>> apply("pow_const", x, exponent=3)  # same as x ** 3
    """
    op = lookup_op(name)
    values = [
        v if isinstance(v, Value) else Value(_check_data(v, f"input {i} of op {name!r}"))
        for i, v in enumerate(inputs)
    ]
    return apply_op(op, values, attrs)


# --- passes --------------------------------------------------------------------------------------


def topological_order(root: Value) -> list[Value]:
    """Every node ``root`` depends on, inputs before the nodes that use them; no recursion.

    (`Value.backward` repeats this walk with its own bookkeeping fused in.)
    """
    order: list[Value] = []
    seen = {root}
    stack: list[tuple[Value, Iterator[Value]]] = []
    emit, mark = order.append, seen.add
    node, pending = root, iter(root._inputs)
    while True:
        for child in pending:
            if child not in seen:
                mark(child)
                if child._inputs:
                    stack.append((node, pending))
                    node, pending = child, iter(child._inputs)
                    break
                emit(child)  # a leaf: done at once, no stack entry
        else:
            emit(node)
            if not stack:
                return order
            node, pending = stack.pop()


def backward_over(order: Sequence[Value], root: Value) -> None:
    """Backward pass over ``order`` (a topological order ending at ``root``).

    Sets ``grad`` of every computed node to d root / d node and adds d root / d leaf to the
    ``grad`` of every leaf (leaves accumulate, as in PyTorch). If a gradient rule fails, every
    ``grad`` is restored and `GradRuleError` names the op and the node.
    """
    saved = {node: node.grad for node in order}
    for node in order:
        if node._opdef is not None:
            node.grad = 0.0
    _propagate(order, saved, root)


def _propagate(order: Sequence[Value], saved: dict[Value, float], root: Value) -> None:
    """The reverse sweep of `backward_over`, computed nodes already zeroed; ``saved`` maps
    every node to its ``grad`` from before, restored if a gradient rule fails."""
    if root._opdef is None:
        root.grad += 1.0
    else:
        root.grad = 1.0
    node = root
    odd = False
    try:
        for node in reversed(order):
            op = node._opdef
            if op is None:
                # A leaf's grad is final here (its users all came first). A rule that returns a
                # complex number or an array taints every grad below it, leaves included, so
                # checking the leaves' types finds it; the slow check below names the rule.
                if type(node.grad) is not float:
                    odd = True
                continue
            kind = op._sweep
            if kind == 2:
                a, b = node._inputs
                da, db = op.grad(a.data, b.data, node.data)
                g = node.grad
                a.grad += g * da
                b.grad += g * db
            elif kind == 1:
                (a,) = node._inputs
                (da,) = op.grad(a.data, node.data)
                a.grad += node.grad * da
            else:  # attributes, or more than two inputs
                inputs = node._inputs
                local = op.grad(*[v.data for v in inputs], node.data, **(node._attrs or {}))
                g = node.grad
                for v, d in zip(inputs, local, strict=True):
                    v.grad += g * d
    except Exception as exc:
        _restore(saved)
        raise _grad_failed(node, exc) from exc
    if odd:
        _check_grads_are_numbers(order, saved)


def _check_grads_are_numbers(order: Sequence[Value], saved: dict[Value, float]) -> None:
    """After a pass that left a grad that is not a float: refuse it if a rule returned
    something that is not a real number (restoring every grad), accept it otherwise."""
    try:
        math.fsum(map(_grad_of, order))  # C speed; refuses complex numbers and arrays
    except (TypeError, ValueError, OverflowError):  # or inf - inf, or an overflow: look closer
        culprit = _non_number_rule(order)
        if culprit is not None:
            _restore(saved)
            raise _grad_failed(*culprit) from None


def _restore(saved: dict[Value, float]) -> None:
    for value, before in saved.items():
        value.grad = before


_grad_of = operator.attrgetter("grad")


def _non_number_rule(order: Sequence[Value]) -> tuple[Value, Exception] | None:
    """The first node whose gradient rule returns something that is not a real number."""
    for node in order:
        op = node._opdef
        if op is None:
            continue
        try:
            local = op.grad(*[v.data for v in node._inputs], node.data, **(node._attrs or {}))
        except Exception:
            continue  # it ran fine in the pass; nothing to learn from a second failure
        for d in local:
            if isinstance(d, bool) or not isinstance(d, numbers.Real):
                return node, TypeError(f"it returned {type(d).__name__} {d!r}, not a real number")
    return None


def _grad_failed(node: Value, exc: BaseException) -> GradRuleError:
    op = node._opdef
    name = op.name if op else "?"
    cause = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ValueError | TypeError) and op is not None:
        cause += f" (a gradient rule returns one number per input, here {op.arity})"
    where = f"node {describe(node)} over {_describe_inputs(node._inputs)}"
    return GradRuleError(f"op {name!r} gradient rule failed at {where}: {cause}",
                         op=name, node=describe(node), cause=exc)


_gc_lock = threading.Lock()
_gc_pauses = 0  # blocks inside `gc_paused` now, in every thread
_gc_resume = False  # whether the collector ran when the first of them began


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector inside the block (if it was running).

    Building or differentiating a big graph makes many objects and no reference cycles; the
    collector would otherwise run full collections over the whole graph again and again.
    Pauses taken with this function nest and overlap across threads (a server's event loop
    and its workers): the collector runs again when the last one ends. (`Value.backward`
    pauses on its own, to keep its fixed cost low: a backward pass in one thread ending
    while another thread is inside this block turns the collector back on early, which
    costs only time.)
    """
    global _gc_pauses, _gc_resume
    with _gc_lock:
        if not _gc_pauses:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if not _gc_pauses and _gc_resume:
                gc.enable()


def backward(root: Value) -> None:
    """Backpropagate from ``root``: computed nodes get d root / d node, leaves add it (the same
    as ``root.backward()``)."""
    if not isinstance(root, Value):
        raise InputTypeError(f"backward: expected a Value, got {type(root).__name__}")
    root.backward()


def recompute(order: Iterable[Value]) -> None:
    """Forward pass: recompute every non-leaf node of ``order`` from its inputs, in order."""
    for node in order:
        op = node._opdef
        if op is None:
            continue
        inputs = node._inputs
        try:
            out = op.forward(*[v.data for v in inputs], **(node._attrs or {}))
        except Exception as exc:
            raise _forward_failed(op, inputs, exc) from exc
        if type(out) is not float:
            out = _coerce_output(out, op, inputs)
        node.data = out


def evaluate(order: Sequence[Value], overrides: dict[Value, float]) -> dict[Value, float]:
    """Data of every node of ``order`` with some leaves' data replaced; changes no node."""
    values: dict[Value, float] = {}
    for node in order:
        op = node._opdef
        if op is None:
            values[node] = overrides.get(node, node.data)
            continue
        args = [values[v] for v in node._inputs]
        try:
            values[node] = op.forward(*args, **(node._attrs or {}))
        except Exception:
            values[node] = math.nan
    return values
