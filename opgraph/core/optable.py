"""The op table: the installed ops by name, and `Value`'s op methods, which are bound to them.

The engine has no arithmetic of its own. Every op, ``+`` included, is an `OpDef` from the table
that `install` puts in place. Only the registry calls it (`opgraph.registry`: with a function
that builds the default registry, called on first use, or with a registry's ops); everything
else reads the table through `lookup` and `ops`.

Installing a table also writes `Value`'s op methods, all here in `_bind_methods`: the operators
(``+ - * / ** neg``) and micrograd's methods (``tanh() exp() log() relu() sigmoid()``), bound
to their ops (`opgraph.core.fast`), and a method per other op that `Value` lacks
(``x.softplus()``, ``x.atan2(y)``; methods on the class rather than a ``__getattr__`` hook,
which would slow every attribute access of every node). Until a table is loaded, `Value` and its
operators load it on first use, so plugin ops are methods from the first value on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from opgraph.core import fast, higher, value
from opgraph.core.value import Value
from opgraph.errors import UnknownOpError
from opgraph.opdef import OpDef

Source = Mapping[str, OpDef] | Callable[[], Mapping[str, OpDef]]

# A plain dict (an exact dict is what the interpreter's fast subscript path takes).
_ops: dict[str, OpDef] = {}
_loaded = False
_source: Source = dict  # until the registry installs its own: no ops at all
Missing = Callable[[str], UnknownOpError]
_missing_error: Missing | None = None  # the installer's error for a name the table lacks

# The operators: (method, op, symbol, reflected)
_BINARY = (
    ("__add__", "add", "+", False), ("__radd__", "add", "+", True),
    ("__sub__", "sub", "-", False), ("__rsub__", "sub", "-", True),
    ("__mul__", "mul", "*", False), ("__rmul__", "mul", "*", True),
    ("__truediv__", "div", "/", False), ("__rtruediv__", "div", "/", True),
    ("__rpow__", "pow", "**", True),  # (__pow__ chooses between pow and pow_const)
)
# micrograd's one-input methods: (method, op)
_UNARY = (("__neg__", "neg"), ("tanh", "tanh"), ("exp", "exp"), ("log", "log"),
          ("relu", "relu"), ("sigmoid", "sigmoid"))
_FIXED = {name for name, *_ in _BINARY} | {name for name, _ in _UNARY} | {"__pow__", "__init__"}
_plugin_methods: list[str] = []  # the methods made for other ops, removed at the next install
_plain_init = Value.__init__


def install(table: Source, missing: Missing | None = None) -> None:
    """Install the op table: a mapping of op names to `OpDef` (installed now), or a function
    that returns one (called when an op or a `Value` is first needed). Called by the registry.

    ``missing(name)``, if given, makes the error for a name the table lacks (the registry's
    says when a name is known but was left out, as with two plugins defining it)."""
    global _source, _loaded, _missing_error
    _source = table
    _missing_error = missing
    _ops.clear()
    _loaded = False
    if callable(table):
        _bind_methods(None)
    else:
        _load()


def _load() -> dict[str, OpDef]:
    global _loaded
    table = _source() if callable(_source) else _source
    _ops.update(table)
    fast.prepare(list(_ops.values()))
    _loaded = True
    _bind_methods(_ops)
    higher.forget_verdicts()  # (graph rules are checked on first use: see higher.verdict)
    return _ops


def ops() -> Mapping[str, OpDef]:
    """The installed ops by name (read-only), loaded on first use."""
    return MappingProxyType(_ops if _loaded else _load())


def lookup(name: str) -> OpDef:
    """The installed op named ``name``; raises `UnknownOpError` with suggestions."""
    try:
        return (_ops if _loaded else _load())[name]
    except (KeyError, TypeError):  # (TypeError: an unhashable name)
        if _missing_error is not None and isinstance(name, str):
            raise _missing_error(name) from None
        raise UnknownOpError(name, _ops) from None


def apply(name: str, *inputs: Value | float, **attrs: Any) -> Value:
    """Apply the installed op ``name`` to ``inputs`` (Values or numbers), with its attributes.

    >>> apply("tanh", Value(0.5))          # same as Value(0.5).tanh()
    >>> apply("pow_const", x, exponent=3)  # same as x ** 3
    """
    op = lookup(name)
    return value.apply_op(op, value.as_values(inputs, name), attrs)


# --- Value's op methods --------------------------------------------------------------------------


def _bind_methods(table: dict[str, OpDef] | None) -> None:
    """Write `Value`'s op methods for ``table`` (None: methods that load the table first)."""
    for name in _plugin_methods:
        delattr(Value, name)
    _plugin_methods.clear()
    if table is None:
        Value.__init__ = _loading_init  # type: ignore[method-assign]
        for name in _FIXED - {"__init__"}:
            setattr(Value, name, _loading(name))
        return
    Value.__init__ = _plain_init  # type: ignore[method-assign]
    for method, name, symbol, reflected in _BINARY:
        op = table.get(name)
        _set(method, f"other {symbol} self" if reflected else f"self {symbol} other",
             _missing(name) if op is None else fast.binary_operator(
                 op, symbol, reflected, cls=Value, slow=value.apply_checked,
                 operand=value.operand))
    for method, name in _UNARY:
        op = table.get(name)
        _set(method, "-self" if name == "neg" else f"{name} of this value.",
             _missing(name) if op is None else fast.unary_operator(
                 op, cls=Value, slow=value.apply_checked))
    _set("__pow__", "self ** other", _power(table.get("pow"), table.get("pow_const")))
    for name, op in table.items():
        if not hasattr(Value, name):
            _set(name, op.doc or f"op {name!r} from plugin {op.plugin!r}", _op_method(op))
            _plugin_methods.append(name)


def _set(name: str, doc: str, function: Callable[..., Any]) -> None:
    function.__name__ = name
    function.__qualname__ = f"Value.{name}"
    function.__doc__ = doc
    setattr(Value, name, function)


def _loading_init(self: Value, data: float, label: str = "") -> None:
    _load()  # Value.__init__ is the plain one from now on
    _plain_init(self, data, label)


def _loading(method: str) -> Callable[..., Any]:
    def load_then_call(self: Value, *args: Any) -> Any:
        _load()
        return getattr(Value, method)(self, *args)

    return load_then_call


def _missing(name: str) -> Callable[..., Any]:
    def missing(self: Value, *args: Any) -> Any:
        raise _missing_error(name) if _missing_error is not None else UnknownOpError(name, _ops)

    return missing


def _power(pow_op: OpDef | None, pow_const: OpDef | None) -> Callable[[Value, Any], Value]:
    def power(self: Value, other: Value | float) -> Value:
        if isinstance(other, Value):
            if pow_op is None:
                raise UnknownOpError("pow", _ops)
            return value.apply_op(pow_op, (self, other))
        # A constant exponent is an attribute, not data: an int stays one (drawn as ``**2``); a
        # float base makes the power a float one, so even a huge int exponent costs nothing.
        exponent = other if type(other) is int else value.check_data(other, "Value ** exponent")
        if pow_const is None:
            raise UnknownOpError("pow_const", _ops)
        return value.apply_checked(pow_const, (self,), {"exponent": exponent})

    return power


def _op_method(op: OpDef) -> Callable[..., Value]:
    """``x.softplus()``, ``x.atan2(y)``: `apply` of the op over self and the others."""

    def method(self: Value, *others: Value | float, **attrs: Any) -> Value:
        return value.apply_op(op, value.as_values((self, *others), op.name), attrs)

    return method


_bind_methods(None)
