"""Gradients checked against central finite differences.

`gradcheck` checks a whole graph: each leaf's analytic gradient against a numeric one, and each
op node's local-gradient rule at the point where the graph uses it, so a report says which leaf
and which op disagree. `check_op` checks one op definition at random points of its domain
(``opgraph ops check`` runs it for every installed op).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from opgraph import core
from opgraph.core import Value
from opgraph.errors import InputTypeError
from opgraph.opdef import OpDef

if TYPE_CHECKING:
    from opgraph.graph import Graph


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
    """What `gradcheck` found: a line per leaf checked and every disagreeing op node.

    ``total_leaves`` is how many leaves the root depends on; when only some were checked
    (``sample``, ``leaves``), ``leaves`` holds those, ``sample`` and ``seed`` say how they were
    drawn and ``chosen`` is ``"all"``, ``"sample"`` or ``"given"``.
    """

    root: str
    leaves: list[LeafCheck] = field(default_factory=list)
    bad_ops: list[LocalCheck] = field(default_factory=list)
    eps: float = 1e-6
    total_leaves: int | None = None
    chosen: str = "all"
    sample: int | None = None
    seed: int | None = None

    @property
    def ok(self) -> bool:
        """True when every leaf and every op node agrees."""
        return all(leaf.ok for leaf in self.leaves) and not self.bad_ops

    @property
    def failed(self) -> list[LeafCheck]:
        """The leaves whose two gradients disagree."""
        return [leaf for leaf in self.leaves if not leaf.ok]

    def __bool__(self) -> bool:
        return self.ok

    def header(self) -> str:
        """The first line: the root, ok or FAILED, and which leaves were checked."""
        line = f"gradcheck of {self.root}: {'ok' if self.ok else 'FAILED'}"
        total = self.total_leaves
        if self.chosen == "sample":
            line += (f" ({len(self.leaves):,} of {total:,} leaves, a random sample drawn with "
                     f"seed {self.seed})")
        elif self.chosen == "given":
            line += f" ({len(self.leaves):,} of {total:,} leaves, as given)"
        return line

    def lines(self, limit: int | None = None) -> list[str]:
        """The report as lines: the header, a line per leaf, one per disagreeing op node.

        With ``limit``, at most ``limit`` leaves that disagree and ``limit`` that agree are
        listed (the others counted on one line each), and ``limit`` op nodes.
        """
        out = [self.header()]
        bad = [leaf for leaf in self.leaves if not leaf.ok]
        good = [leaf for leaf in self.leaves if leaf.ok]
        if limit is None or len(self.leaves) <= limit:
            out += [_leaf_line(leaf) for leaf in self.leaves]
        else:
            out += [_leaf_line(leaf) for leaf in bad[:limit]]
            if len(bad) > limit:
                out.append(f"  ... and {len(bad) - limit:,} more leaves that disagree")
            out += [_leaf_line(leaf) for leaf in good[:limit]]
            if len(good) > limit:
                worst = max(good, key=lambda leaf: leaf.error)
                out.append(f"  ... and {len(good) - limit:,} more leaves that agree (largest "
                           f"difference {worst.error:.3g}, at {worst.node})")
        shown = self.bad_ops if limit is None else self.bad_ops[:limit]
        for bad_op in shown:
            out.append(f"  op {bad_op.op!r} (plugin {bad_op.plugin!r}) at {bad_op.node}: d/d "
                       f"input {bad_op.input_index} is {bad_op.analytic:.10g} by its rule, "
                       f"{bad_op.numeric:.10g} numerically")
        if len(shown) < len(self.bad_ops):
            out.append(f"  ... and {len(self.bad_ops) - len(shown):,} more op nodes whose rule "
                       "disagrees")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _leaf_line(leaf: LeafCheck) -> str:
    mark = "ok " if leaf.ok else "BAD"
    return f"  {mark} {leaf.node}: analytic {leaf.analytic:.10g}, numeric {leaf.numeric:.10g}"


LeafRef = int | Value


def gradcheck(
    root: Value, *, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7,
    progress: Callable[[int, int], None] | None = None,
    leaves: Iterable[LeafRef] | None = None, sample: int | None = None, seed: int = 0,
) -> GradcheckReport:
    """Check the gradients of ``root`` against central finite differences.

    By default every leaf that ``root`` depends on is checked (two forward passes each, over
    the nodes that leaf affects). ``leaves`` (ids in ``root``'s graph, or `Value`s) checks only
    those; ``sample`` checks that many leaves drawn at random (from ``leaves`` when given, else
    from all), reproducibly for a given ``seed``. The leaves are checked, and listed, in the
    order of the graph. Every op node's local-gradient rule is checked too, whatever the
    choice of leaves. The ``grad`` of every node is left as it was. ``progress(done, total)``
    is called before each leaf, for a progress bar.
    """
    if not isinstance(root, Value):
        raise InputTypeError(f"gradcheck: expected a Value, got {type(root).__name__}")
    _check_tolerances("gradcheck", eps, rtol, atol)
    if sample is not None and (type(sample) is not int or sample < 1):
        raise InputTypeError(f"gradcheck: sample must be a positive int, got {sample!r}")
    if type(seed) is not int:
        raise InputTypeError(f"gradcheck: seed must be an int, got {seed!r}")
    order = core.topological_order(root)
    all_leaves = [v for v in order if v.is_leaf]
    chosen = all_leaves
    how = "all"
    if leaves is not None:
        chosen = _given_leaves(root, order, leaves)
        how = "given"
    if sample is not None and sample < len(chosen):
        picked = set(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [v for i, v in enumerate(chosen) if i in picked]
        how = "sample"
    saved = [v.grad for v in order]
    try:
        for v in order:
            v.grad = 0.0
        core.backward_over(order, root)
        analytic = {v: v.grad for v in order}
    finally:
        for v, g in zip(order, saved, strict=True):
            v.grad = g
    report = GradcheckReport(root=core.describe(root), eps=eps, total_leaves=len(all_leaves),
                             chosen=how, sample=sample if how == "sample" else None,
                             seed=seed if how == "sample" else None)
    sweep = _Sweep(order)
    total = len(chosen)
    for leaf in chosen:
        if progress is not None:
            progress(len(report.leaves), total)
        cone = sweep.cone(leaf)
        up = sweep.root_with(cone, leaf.data + eps)
        down = sweep.root_with(cone, leaf.data - eps)
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


def _given_leaves(root: Value, order: list[Value], leaves: Iterable[LeafRef]) -> list[Value]:
    """The leaves named by ``leaves`` (ids or Values), in the order of ``order``; an error
    naming the first that is not a leaf ``root`` depends on."""
    if isinstance(leaves, int | Value | str | bytes):
        raise InputTypeError(f"gradcheck: leaves must be a list of ids or Values, got "
                             f"{type(leaves).__name__} {leaves!r}")
    graph = cast("Graph | None", root.graph)
    wanted: set[Value] = set()
    for item in leaves:
        if isinstance(item, Value):
            value = item
        elif type(item) is int:
            if graph is None:
                raise InputTypeError(f"gradcheck: leaf {item} is an id, but the root "
                                     f"{core.describe(root)} is in no graph: give Values")
            value = graph.node(item)  # NodeNotFoundError for an id not in the graph
        else:
            raise InputTypeError(f"gradcheck: a leaf must be an id or a Value, got "
                                 f"{type(item).__name__} {item!r}")
        if not value.is_leaf:
            raise InputTypeError(f"gradcheck: {core.describe(value)} is computed by op "
                                 f"{value.op!r}, not a leaf")
        wanted.add(value)
    if not wanted:
        raise InputTypeError("gradcheck: leaves is empty: give at least one leaf")
    chosen = [v for v in order if v in wanted]
    if len(chosen) < len(wanted):
        missing = next(v for v in sorted(wanted, key=lambda v: (v.id is None, v.id or 0))
                       if v not in set(chosen))
        raise InputTypeError(f"gradcheck: the root {core.describe(root)} does not depend on "
                             f"leaf {core.describe(missing)}")
    return chosen


def _no_rule(*args: float) -> float:  # (a leaf's place in `_Sweep.forward`: never called)
    raise AssertionError("a leaf has no forward rule")


class _Sweep:
    """The root's value with one leaf's data changed, recomputing only the nodes that leaf
    affects: the others keep the values that a forward pass over ``order`` gives them (so the
    result is what `core.evaluate` over the whole order gives, in a fraction of the time)."""

    def __init__(self, order: list[Value]) -> None:
        position = {v: i for i, v in enumerate(order)}
        self.position = position
        base = core.evaluate(order, {})
        self.base = [base[v] for v in order]
        self.inputs = [[position[i] for i in v.inputs] for v in order]
        self.forward: list[Callable[..., float]] = [
            _no_rule if v.opdef is None else v.opdef.forward for v in order]
        self.attrs = [v.attrs for v in order]
        users: list[list[int]] = [[] for _ in order]
        for i, ins in enumerate(self.inputs):
            for j in ins:
                users[j].append(i)
        self.users = users

    def cone(self, leaf: Value) -> list[int]:
        """The positions of ``leaf`` and of the nodes it affects, in order."""
        users = self.users
        start = self.position[leaf]
        seen = bytearray(len(users))
        seen[start] = 1
        found = [start]
        stack = [start]
        while stack:
            for u in users[stack.pop()]:
                if not seen[u]:
                    seen[u] = 1
                    found.append(u)
                    stack.append(u)
        found.sort()
        return found

    def root_with(self, cone: list[int], data: float) -> float:
        """The root's value when the leaf at ``cone[0]`` holds ``data`` (NaN where a rule
        fails)."""
        inputs, forward, attrs = self.inputs, self.forward, self.attrs
        values = self.base.copy()
        values[cone[0]] = data
        for i in cone[1:]:
            try:
                if attrs[i]:
                    values[i] = forward[i](*[values[j] for j in inputs[i]], **attrs[i])
                else:
                    values[i] = forward[i](*[values[j] for j in inputs[i]])
            except Exception:
                values[i] = math.nan
        return values[-1]


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
