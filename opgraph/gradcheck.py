"""Gradients checked against central finite differences.

`gradcheck` checks a whole graph: each leaf's analytic gradient against a numeric one, and each
op node's local-gradient rule at the point where the graph uses it, so a report says which leaf
and which op disagree. `check_op` checks one op definition at random points of its domain
(``opgraph ops check`` runs it for every installed op).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opgraph import core
from opgraph.core import Value
from opgraph.errors import InputTypeError
from opgraph.opdef import OpDef


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * max(abs(a), abs(b))


def _check_tolerances(where: str, eps: object, rtol: object, atol: object) -> None:
    for name, value in (("eps", eps), ("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value >= 0):
            raise InputTypeError(f"{where}: {name} must be a finite number >= 0, got {value!r}")
    if not 0 < eps < 1:  # type: ignore[operator]
        raise InputTypeError(f"{where}: eps must be within (0, 1), got {eps!r}")


def numeric_partials(
    op: OpDef, args: Sequence[float], attrs: Mapping[str, Any] | None = None, eps: float = 1e-6
) -> list[float]:
    """Central-difference partial derivatives of ``op.forward`` at ``args``."""
    attrs = dict(attrs or {})
    partials = []
    for i in range(len(args)):
        hi, lo = list(args), list(args)
        hi[i] += eps
        lo[i] -= eps
        partials.append((op.forward(*hi, **attrs) - op.forward(*lo, **attrs)) / (2 * eps))
    return partials


@dataclass(frozen=True)
class LeafCheck:
    """One leaf: its analytic and numeric gradient of the root."""

    node: str
    label: str
    id: int | None
    analytic: float
    numeric: float
    ok: bool

    @property
    def error(self) -> float:
        """Absolute difference between the two gradients."""
        return abs(self.analytic - self.numeric)


@dataclass(frozen=True)
class LocalCheck:
    """One op node whose local-gradient rule disagrees with finite differences of its forward."""

    node: str
    op: str
    plugin: str
    input_index: int
    inputs: tuple[float, ...]
    analytic: float
    numeric: float


@dataclass
class GradcheckReport:
    """What `gradcheck` found: a line per leaf and every disagreeing op node."""

    root: str
    leaves: list[LeafCheck] = field(default_factory=list)
    bad_ops: list[LocalCheck] = field(default_factory=list)
    eps: float = 1e-6

    @property
    def ok(self) -> bool:
        """True when every leaf and every op node agrees."""
        return all(leaf.ok for leaf in self.leaves) and not self.bad_ops

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        lines = [f"gradcheck of {self.root}: {'ok' if self.ok else 'FAILED'}"]
        for leaf in self.leaves:
            mark = "ok " if leaf.ok else "BAD"
            lines.append(f"  {mark} {leaf.node}: analytic {leaf.analytic:.10g}, "
                         f"numeric {leaf.numeric:.10g}")
        for bad in self.bad_ops:
            lines.append(f"  op {bad.op!r} (plugin {bad.plugin!r}) at {bad.node}: d/d input "
                         f"{bad.input_index} is {bad.analytic:.10g} by its rule, "
                         f"{bad.numeric:.10g} numerically")
        return "\n".join(lines)


def gradcheck(
    root: Value, *, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7,
    progress: Callable[[int, int], None] | None = None,
) -> GradcheckReport:
    """Check every gradient of ``root`` against central finite differences.

    The ``grad`` of every node is left as it was. ``progress(done, total)`` is called after
    each leaf (each costs two passes over the graph), for a progress bar.
    """
    if not isinstance(root, Value):
        raise InputTypeError(f"gradcheck: expected a Value, got {type(root).__name__}")
    _check_tolerances("gradcheck", eps, rtol, atol)
    order = core.topological_order(root)
    saved = [v.grad for v in order]
    try:
        for v in order:
            v.grad = 0.0
        core.backward_over(order, root)
        analytic = {v: v.grad for v in order}
    finally:
        for v, g in zip(order, saved, strict=True):
            v.grad = g
    report = GradcheckReport(root=core.describe(root), eps=eps)
    total = sum(1 for v in order if v.is_leaf)
    for leaf in order:
        if not leaf.is_leaf:
            continue
        if progress is not None:
            progress(len(report.leaves), total)
        up = core.evaluate(order, {leaf: leaf.data + eps})[root]
        down = core.evaluate(order, {leaf: leaf.data - eps})[root]
        numeric = (up - down) / (2 * eps)
        report.leaves.append(LeafCheck(
            node=core.describe(leaf), label=leaf.label, id=leaf.id,
            analytic=analytic[leaf], numeric=numeric,
            ok=_close(analytic[leaf], numeric, rtol, atol),
        ))
    for node in order:
        op = node.opdef
        if op is None:
            continue
        args = [v.data for v in node.inputs]
        attrs = node.attrs
        try:
            rule = list(op.grad(*args, node.data, **attrs))
            numeric_ = numeric_partials(op, args, attrs, eps)
        except Exception:
            continue  # a rule failing outright already shows as a GradRuleError in backward
        for i, (a, n) in enumerate(zip(rule, numeric_, strict=False)):
            if not _close(a, n, max(rtol, 1e-4), max(atol, 1e-6)):
                report.bad_ops.append(LocalCheck(
                    node=core.describe(node), op=op.name, plugin=op.plugin, input_index=i,
                    inputs=tuple(args), analytic=a, numeric=n))
    return report


@dataclass(frozen=True)
class OpCheckFailure:
    """A sample point where an op's gradient rule disagrees with finite differences."""

    inputs: tuple[float, ...]
    input_index: int
    analytic: float | None
    numeric: float | None
    message: str


@dataclass
class OpCheckReport:
    """What `check_op` found for one op."""

    op: str
    plugin: str
    points: int
    failures: list[OpCheckFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the rule agreed at every sample point."""
        return not self.failures

    def __str__(self) -> str:
        if self.ok:
            return f"{self.op} ({self.plugin}): ok at {self.points} points"
        first = self.failures[0]
        return (f"{self.op} ({self.plugin}): {len(self.failures)} disagreement(s) in "
                f"{self.points} points; first at inputs {first.inputs}: {first.message}")


def check_op(
    op: OpDef,
    *,
    points: int = 25,
    seed: int = 0,
    eps: float = 1e-6,
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> OpCheckReport:
    """Check ``op``'s gradient rule against central differences of its forward rule.

    Samples ``points`` points uniformly from the op's domain (``OpDef.domain``), with its
    ``sample_attrs``. A rule that raises or returns the wrong count is a failure, not a crash.
    """
    if not isinstance(op, OpDef):
        raise InputTypeError(f"check_op: expected an OpDef (opgraph.lookup_op(name) gives one), "
                             f"got {type(op).__name__} {op!r}")
    if type(points) is not int or points < 1:
        raise InputTypeError(f"check_op: points must be a positive int, got {points!r}")
    _check_tolerances("check_op", eps, rtol, atol)
    rng = random.Random(seed)
    report = OpCheckReport(op=op.name, plugin=op.plugin, points=points)
    attrs = dict(op.sample_attrs)
    for _ in range(points):
        args = tuple(rng.uniform(*op.interval(i)) for i in range(op.arity))
        try:
            out = op.forward(*args, **attrs)
            rule = list(op.grad(*args, out, **attrs))
            numeric = numeric_partials(op, args, attrs, eps)
        except Exception as exc:
            report.failures.append(OpCheckFailure(args, -1, None, None,
                                                  f"{type(exc).__name__}: {exc}"))
            continue
        if len(rule) != op.arity:
            report.failures.append(OpCheckFailure(
                args, -1, None, None,
                f"gradient rule returned {len(rule)} numbers for {op.arity} inputs"))
            continue
        for i, (a, n) in enumerate(zip(rule, numeric, strict=True)):
            try:
                a = float(a)
            except (TypeError, ValueError):
                report.failures.append(OpCheckFailure(
                    args, i, None, n, f"gradient rule returned {a!r}, not a number"))
                continue
            if not _close(a, n, rtol, atol):
                report.failures.append(OpCheckFailure(
                    args, i, a, n, f"d/d input {i}: rule says {a:.10g}, finite differences "
                                   f"say {n:.10g}"))
    return report
