"""`OpDef`: what a plugin hands opgraph to define one op."""

from __future__ import annotations

import inspect
import keyword
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opgraph.errors import OpDefError

DEFAULT_INTERVAL = (-3.0, 3.0)


@dataclass(frozen=True, eq=False)
class OpDef:
    """The definition of one op.

    - ``name``: an identifier, unique among all installed plugins (``"tanh"``, ``"softplus"``).
    - ``arity``: how many inputs the op takes (1 or more).
    - ``forward(*inputs, **attrs) -> float``: the output, from the inputs' data.
    - ``grad(*inputs, out, **attrs) -> sequence of float``: the partial derivative of the output
      with respect to each input (``arity`` numbers), given the inputs' data and the output.
    - ``symbol``: what pictures and ``Value._op`` show (``"+"``, ``"tanh"``); it may hold
      ``str.format`` fields naming attributes, as in ``"**{exponent}"``. Defaults to ``name``.
    - ``doc``: one line for people.
    - ``attrs``: names of constant attributes the op requires (``("exponent",)``).
    - ``domain``: an interval ``(low, high)`` per input from which ``opgraph ops check`` samples;
      inputs without one sample from ``(-3, 3)``.
    - ``sample_attrs``: attribute values to use when checking the op (needed when ``attrs`` is
      not empty).
    - ``grad_graph(*inputs, out, **attrs) -> sequence of Value or float``: optional, the
      gradient rule in graph form, for gradients of gradients (``create_graph=True``). It gets
      the input `Value` objects and the output `Value` (not their data) and returns the same
      partials as ``grad``, built from ops over them (``1 - out * out`` for tanh) so that they
      can be differentiated again; a plain number stands for a partial that is constant near
      the point (add's ``1.0``, relu's step). Without it the op works as before, except that
      ``create_graph=True`` over it raises `HigherOrderError` naming the op and its plugin.
      ``opgraph ops check`` checks it against ``grad`` and against finite differences of
      ``grad`` (the second derivatives).
    - ``vforward`` / ``vgrad``: optional numpy kernels with the same signatures as ``forward`` and
      ``grad`` but taking and returning arrays, used by the compiled executor. Where the scalar
      rule raises, the kernel should give NaN or infinity (as numpy does): that is how the
      executor finds the node whose rule fails.
    - ``plugin``: filled in by opgraph with the name of the plugin that delivered the op.
    """

    name: str
    arity: int
    forward: Callable[..., float]
    grad: Callable[..., Sequence[float]]
    symbol: str | None = None
    doc: str = ""
    attrs: tuple[str, ...] = ()
    domain: tuple[tuple[float, float], ...] | None = None
    sample_attrs: Mapping[str, Any] = field(default_factory=dict)
    vforward: Callable[..., Any] | None = None
    vgrad: Callable[..., Any] | None = None
    plugin: str = ""
    grad_graph: Callable[..., Sequence[Any]] | None = None

    def __post_init__(self) -> None:
        where = f"op {self.name!r}" + (f" from plugin {self.plugin!r}" if self.plugin else "")
        if not isinstance(self.name, str) or not self.name.isidentifier() or keyword.iskeyword(
            self.name
        ):
            raise OpDefError(f"op name {self.name!r} is not a Python identifier")
        if type(self.arity) is not int or self.arity < 1:
            raise OpDefError(f"{where}: arity must be a positive int, got {self.arity!r}")
        object.__setattr__(self, "attrs", tuple(self.attrs))
        for attr in self.attrs:
            if not isinstance(attr, str) or not attr.isidentifier():
                raise OpDefError(f"{where}: attribute name {attr!r} is not an identifier")
        if self.symbol is None:
            object.__setattr__(self, "symbol", self.name)
        elif not isinstance(self.symbol, str) or not self.symbol:
            raise OpDefError(f"{where}: symbol must be a non-empty string, got {self.symbol!r}")
        if not isinstance(self.doc, str):
            raise OpDefError(f"{where}: doc must be a string")
        _check_rule(where, "forward", self.forward, self.arity, self.attrs)
        _check_rule(where, "grad", self.grad, self.arity + 1, self.attrs)
        for kernel_name in ("vforward", "vgrad"):
            kernel = getattr(self, kernel_name)
            if kernel is not None and not callable(kernel):
                raise OpDefError(f"{where}: {kernel_name} must be callable or None")
        if self.grad_graph is not None:
            _check_rule(where, "grad_graph", self.grad_graph, self.arity + 1, self.attrs)
        if self.domain is not None:
            object.__setattr__(self, "domain", _check_domain(where, self.domain, self.arity))
        missing = [a for a in self.attrs if a not in self.sample_attrs]
        if missing:
            raise OpDefError(f"{where}: sample_attrs must give a value for {missing}")
        object.__setattr__(self, "sample_attrs", dict(self.sample_attrs))

    def interval(self, index: int) -> tuple[float, float]:
        """The sampling interval of input ``index``."""
        return self.domain[index] if self.domain else DEFAULT_INTERVAL

    def format_symbol(self, attrs: Mapping[str, Any] | None) -> str:
        """The symbol with its attribute fields filled in (``"**{exponent}"`` -> ``"**2"``)."""
        if not attrs:
            return self.symbol  # type: ignore[return-value]
        try:
            return self.symbol.format(**attrs)  # type: ignore[union-attr]
        except (KeyError, IndexError, ValueError):
            return self.symbol  # type: ignore[return-value]


def _check_rule(where: str, what: str, rule: object, positional: int, attrs: tuple[str, ...]):
    """Refuse a rule that cannot be called with ``positional`` arguments plus the attributes."""
    if not callable(rule):
        raise OpDefError(f"{where}: {what} rule must be callable, got {type(rule).__name__}")
    try:
        signature = inspect.signature(rule)
    except (TypeError, ValueError):
        return  # builtins without a signature: trust them
    try:
        signature.bind(*range(positional), **dict.fromkeys(attrs, 1.0))
    except TypeError as exc:
        expected = f"{positional} inputs" + (f" and attributes {list(attrs)}" if attrs else "")
        raise OpDefError(
            f"{where}: {what} rule {getattr(rule, '__name__', rule)!r}{signature} cannot take "
            f"{expected} ({exc})"
        ) from None


def _check_domain(where: str, domain: object, arity: int) -> tuple[tuple[float, float], ...]:
    try:
        intervals = tuple((float(lo), float(hi)) for lo, hi in domain)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise OpDefError(f"{where}: domain must be one (low, high) pair per input") from None
    if len(intervals) != arity:
        raise OpDefError(f"{where}: domain has {len(intervals)} intervals for {arity} inputs")
    for lo, hi in intervals:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise OpDefError(f"{where}: domain interval ({lo}, {hi}) is empty or not finite")
    return intervals
