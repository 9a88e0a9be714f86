"""Higher-order gradients: `grad` (PyTorch's name and arguments), `hessian`, `hvp`, the
check of an op's graph gradient rule (`check_grad_graph`, run by ``opgraph ops check``) and of
a graph's second derivatives (`gradcheck_second_order`).

``grad(outputs, inputs)`` gives d (sum of outputs) / d input for each input, as floats, and
changes no ``grad``. With ``create_graph=True`` each gradient is a `Value`: a node of a graph
built from the ops' graph rules (``OpDef.grad_graph``), labelled ``d o/d x``, that can be drawn
(``draw_dot``), saved, held by a `Graph` (when the outputs belong to one, the gradient nodes
join it) and differentiated again, to any order::

    >>> x = Value(3.0, label="x")
    >>> f = 3 * x**2 - 4 * x + 5
    >>> df = grad(f, x, create_graph=True)      # a Value: d f/d x
    >>> df.data, grad(df, x)
    (14.0, 6.0)

An input the outputs do not depend on gets zero (0.0, or with ``create_graph`` a constant
leaf holding 0.0), as PyTorch gives with ``allow_unused=True, materialize_grads=True``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from opgraph.core import higher, rules
from opgraph.core.value import Value, apply_op
from opgraph.errors import GraphMismatchError, InputTypeError
from opgraph.opdef import OpDef

__all__ = [
    "GraphRuleFailure",
    "GraphRuleReport",
    "HessianCheckReport",
    "HessianRowCheck",
    "check_grad_graph",
    "grad",
    "gradcheck_second_order",
    "hessian",
    "hvp",
]


def _values(arg: object, where: str, kind: str, *, allow_empty: bool) -> tuple[list[Value], bool]:
    """``arg`` (one Value or a sequence of them) as a list, and whether it was one Value."""
    if isinstance(arg, Value):
        return [arg], True
    if isinstance(arg, str | bytes) or not isinstance(arg, Sequence):
        raise InputTypeError(f"{where}: {kind} must be a Value or a list of Values, got "
                             f"{type(arg).__name__} {rules.show_number(arg)}")
    values = list(arg)
    if not values and not allow_empty:
        raise InputTypeError(f"{where}: {kind} is empty; give at least one Value")
    for i, v in enumerate(values):
        if not isinstance(v, Value):
            raise InputTypeError(f"{where}: {kind}[{i}] is {type(v).__name__} "
                                 f"{rules.show_number(v)}, not a Value")
    return values, False


def _check_inputs(inputs: Sequence[Value], owner: Any, where: str) -> None:
    """Refuse an input that cannot be in the outputs' graph: one of another `Graph`, or a free
    value while the outputs belong to a `Graph` (and the other way round)."""
    for i, v in enumerate(inputs):
        if v.graph is not owner:
            if owner is None:
                detail = (f"belongs to graph {v.graph.name!r}, but the outputs belong to no "
                          f"graph, so they cannot depend on it")
            elif v.graph is None:
                detail = (f"belongs to no graph, but the outputs belong to graph "
                          f"{owner.name!r}, which holds everything they depend on")
            else:
                detail = (f"belongs to graph {v.graph.name!r}, not to graph {owner.name!r} "
                          f"of the outputs")
            raise GraphMismatchError(f"{where}: inputs[{i}] ({rules.describe(v)}) {detail}")


@overload
def grad(outputs: Value | Sequence[Value], inputs: Value, create_graph: bool = False, *,
         grad_outputs: Sequence[float] | None = None) -> Any: ...
@overload
def grad(outputs: Value | Sequence[Value], inputs: Sequence[Value], create_graph: bool = False,
         *, grad_outputs: Sequence[float] | None = None) -> list[Any]: ...
def grad(outputs: Value | Sequence[Value], inputs: Value | Sequence[Value],
         create_graph: bool = False, *,
         grad_outputs: Sequence[float] | None = None) -> Any:
    """The gradient of ``outputs`` (one Value, or a list of them, summed) with respect to each
    of ``inputs``: one result for one input Value, a list for a list.

    Floats by default; with ``create_graph=True``, `Value` nodes (see the module's docstring).
    ``grad_outputs`` weighs each output (the vector of a vector-Jacobian product; 1 each by
    default). No ``grad`` field changes. An input the outputs do not depend on gets zero.
    Inputs may be leaves or computed nodes. Errors: `InputTypeError` for an argument that is
    not a Value, `GraphMismatchError` for an input outside the outputs' graph, `GradRuleError`
    (`NoGradGraphError` for an op without a graph rule) naming the op and the node.
    """
    where = "grad"
    outs, _ = _values(outputs, where, "outputs", allow_empty=False)
    ins, single = _values(inputs, where, "inputs", allow_empty=True)
    create_graph = higher.check_create_graph(create_graph, where)
    seeds = _seeds(grad_outputs, len(outs), where)
    owner = higher.owner_of(outs, where, "outputs")
    _check_inputs(ins, owner, where)
    order = higher.topological_order(outs)
    if not create_graph:
        grads = higher.gradients(outs, order, create_graph=False, seeds=seeds, wrt=ins)
        results: list[Any] = [float(grads.get(v, 0.0)) for v in ins]
    else:
        mark = higher.checkpoint(owner)
        try:
            with higher.quiet_collector(len(order)):
                grads = higher.gradients(outs, order, create_graph=True, seeds=seeds, wrt=ins)
                make = higher.Materializer(higher.outputs_name(outs), order, owner)
                results = [make(grads.get(v, 0.0), v) for v in ins]
        except BaseException:
            higher.rollback(owner, mark)
            raise
    return results[0] if single else results


def _seeds(numbers: object, count: int, where: str, name: str = "grad_outputs",
           per: str = "output") -> list[float] | None:
    """``numbers`` (None, or one real number per output) as floats; `InputTypeError` naming
    ``name`` otherwise."""
    if numbers is None and name == "grad_outputs":
        return None
    if isinstance(numbers, str | bytes) or not isinstance(numbers, Sequence):
        raise InputTypeError(f"{where}: {name} must be a list of numbers, one per {per}, "
                             f"got {type(numbers).__name__} {rules.show_number(numbers)}")
    if len(numbers) != count:
        raise InputTypeError(f"{where}: {name} has {len(numbers)} numbers for {count} "
                             f"{per}{'s' * (count != 1)}")
    seeds = []
    for i, s in enumerate(numbers):
        if not rules.is_real(s):
            raise InputTypeError(f"{where}: {name}[{i}] is {type(s).__name__} "
                                 f"{rules.show_number(s)}, not a real number")
        seeds.append(float(s))
    return seeds


def hessian(f: Value, inputs: Value | Sequence[Value]) -> list[list[float]]:
    """The Hessian of ``f`` with respect to ``inputs``: ``H[i][j]`` = d/d x_j (d f/d x_i), as
    nested lists of floats (as ``torch.autograd.functional.hessian`` lays it out).

    One backward pass with ``create_graph`` and then one float pass over the gradient graph
    per input. Nothing is left behind: no ``grad`` changes, and a `Graph` that ``f`` belongs
    to gets no nodes.
    """
    where = "hessian"
    if not isinstance(f, Value):
        raise InputTypeError(f"{where}: f must be a Value, got {type(f).__name__} "
                             f"{rules.show_number(f)}")
    ins, _ = _values(inputs, where, "inputs", allow_empty=True)
    owner = f.graph
    _check_inputs(ins, owner, where)
    mark = higher.checkpoint(owner)
    try:
        first = grad(f, ins, create_graph=True)
        return [grad(g, ins) for g in first]
    finally:
        higher.rollback(owner, mark)


def hvp(f: Value, inputs: Value | Sequence[Value], v: Sequence[float]) -> list[float]:
    """The Hessian of ``f`` (with respect to ``inputs``) times the vector ``v``, without the
    Hessian: d/d x (grad f . v), reverse over reverse.

    Two passes whatever the number of inputs: one backward pass with ``create_graph``, then
    one float pass over the gradient graph, seeded with ``v``. Leaves nothing behind, as
    `hessian`.
    """
    where = "hvp"
    if not isinstance(f, Value):
        raise InputTypeError(f"{where}: f must be a Value, got {type(f).__name__} "
                             f"{rules.show_number(f)}")
    ins, _ = _values(inputs, where, "inputs", allow_empty=True)
    seeds = _seeds(v, len(ins), where, "v", "input")
    owner = f.graph
    _check_inputs(ins, owner, where)
    if not ins:
        return []
    mark = higher.checkpoint(owner)
    try:
        first = grad(f, ins, create_graph=True)
        return grad(first, ins, grad_outputs=seeds)
    finally:
        higher.rollback(owner, mark)


# --- checking an op's graph rule -----------------------------------------------------------------


@dataclass(frozen=True)
class GraphRuleFailure:
    """A sample point where an op's graph rule disagrees with its float rule, or its second
    derivatives with finite differences of the float rule."""

    inputs: tuple[float, ...]
    message: str


@dataclass
class GraphRuleReport:
    """What `check_grad_graph` found for one op (``has_rule`` False: nothing to check)."""

    op: str
    plugin: str
    points: int
    has_rule: bool = True
    failures: list[GraphRuleFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the rule agreed everywhere (or there is no graph rule to check)."""
        return not self.failures

    def __str__(self) -> str:
        if not self.has_rule:
            return "no graph rule (create_graph=True over it raises)"
        if self.ok:
            return "graph rule ok to second order"
        first = self.failures[0]
        return (f"graph rule: {len(self.failures)} disagreement(s) in {self.points} points; "
                f"first at inputs {first.inputs}: {first.message}")


def check_grad_graph(op: OpDef, *, points: int = 25, seed: int = 0, eps: float = 1e-5,
                     rtol: float = 1e-4, atol: float = 1e-6) -> GraphRuleReport:
    """Check ``op``'s graph gradient rule at ``points`` random points of its domain (the same
    points as `opgraph.check_op` with the same ``seed``):

    - its partials against the float rule's (they must be equal, to rounding);
    - its partials' own derivatives (the op's second derivatives, by a backward pass through
      the partials' graph) against central differences of the float rule.

    A rule that raises or returns the wrong count is a failure, not a crash.
    """
    if not isinstance(op, OpDef):
        raise InputTypeError(f"check_grad_graph: expected an OpDef, got {type(op).__name__}")
    if type(points) is not int or points < 1:
        raise InputTypeError(f"check_grad_graph: points must be a positive int, got {points!r}")
    report = GraphRuleReport(op=op.name, plugin=op.plugin, points=points,
                             has_rule=op.grad_graph is not None)
    if op.grad_graph is None:
        return report
    rng = random.Random(seed)
    attrs = dict(op.sample_attrs)
    for _ in range(points):
        args = tuple(rng.uniform(*op.interval(i)) for i in range(op.arity))
        problem = _check_point(op, args, attrs, eps, rtol, atol)
        if problem is not None:
            report.failures.append(GraphRuleFailure(args, problem))
    return report


def _float_partials(op: OpDef, args: Sequence[float], attrs: dict[str, Any]) -> list[float]:
    out = op.forward(*args, **attrs)
    return [float(d) for d in op.grad(*args, out, **attrs)]


def _check_point(op: OpDef, args: tuple[float, ...], attrs: dict[str, Any], eps: float,
                 rtol: float, atol: float) -> str | None:
    try:
        xs = [Value(a) for a in args]
        out = apply_op(op, xs, attrs)
        floats = _float_partials(op, args, attrs)
    except Exception as exc:
        return f"forward or float gradient rule raised {type(exc).__name__}: {exc}"
    try:
        partials = higher.run_graph_rule(out, op)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    for i, (f, p) in enumerate(zip(floats, partials, strict=True)):
        number = p.data if isinstance(p, Value) else p
        if not higher.close(f, number, 1e-9, 1e-12):
            return (f"d/d input {i}: graph rule gives {number!r}, float rule {f!r}")
    for i, p in enumerate(partials):
        try:
            second = grad(p, xs) if isinstance(p, Value) else [0.0] * len(xs)
        except Exception as exc:
            return f"differentiating its partial {i} raised {type(exc).__name__}: {exc}"
        for j in range(len(xs)):
            hi, lo = list(args), list(args)
            hi[j] += eps
            lo[j] -= eps
            try:
                numeric = (_float_partials(op, hi, attrs)[i]
                           - _float_partials(op, lo, attrs)[i]) / (2 * eps)
            except Exception:
                continue  # the float rule is undefined next to the point: nothing to compare
            if not math.isfinite(numeric):
                continue
            if not higher.close(second[j], numeric, rtol, atol):
                return (f"d2/d input {i} d input {j}: graph rule gives {second[j]:.10g}, "
                        f"finite differences of the float rule {numeric:.10g}")
    return None


# --- second-order gradcheck ----------------------------------------------------------------------


@dataclass(frozen=True)
class HessianRowCheck:
    """One leaf: its row of the Hessian (over the checked leaves), analytic and numeric."""

    node: str
    label: str
    id: int | None
    analytic: tuple[float, ...]
    numeric: tuple[float, ...]
    ok: bool

    @property
    def error(self) -> float:
        """The largest absolute difference in the row."""
        return max((abs(a - n) for a, n in zip(self.analytic, self.numeric, strict=True)),
                   default=0.0)


@dataclass
class HessianCheckReport:
    """What `gradcheck_second_order` found: a row per checked leaf."""

    root: str
    leaves: list[HessianRowCheck] = field(default_factory=list)
    eps: float = 1e-5

    @property
    def ok(self) -> bool:
        """True when every row agrees."""
        return all(row.ok for row in self.leaves)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        lines = [f"second-order gradcheck of {self.root}: {'ok' if self.ok else 'FAILED'}"]
        for row in self.leaves:
            mark = "ok " if row.ok else "BAD"
            lines.append(f"  {mark} {row.node}: d2/d it d each, analytic "
                         f"[{', '.join(f'{a:.6g}' for a in row.analytic)}], numeric "
                         f"[{', '.join(f'{n:.6g}' for n in row.numeric)}]")
        return "\n".join(lines)


def gradcheck_second_order(root: Value, leaves: Sequence[Value] | None = None, *,
                           eps: float = 1e-5, rtol: float = 1e-4, atol: float = 1e-6,
                           progress: Any = None) -> HessianCheckReport:
    """Check the second derivatives of ``root``: for each of ``leaves`` (every leaf ``root``
    depends on by default), its row of the Hessian over those leaves, by the graph rules
    (`hessian`), against central differences of the float gradient.

    Each leaf costs two forward passes and two backward passes; its data is changed while it
    is checked and restored. No ``grad`` changes and a `Graph` gets no nodes.
    ``progress(done, total)`` is called after each leaf.
    """
    from opgraph.core import passes

    where = "gradcheck_second_order"
    if not isinstance(root, Value):
        raise InputTypeError(f"{where}: expected a Value, got {type(root).__name__}")
    for name, value in (("eps", eps), ("rtol", rtol), ("atol", atol)):
        if not rules.is_real(value) or not math.isfinite(value) or value < 0:
            raise InputTypeError(f"{where}: {name} must be a finite number >= 0, got {value!r}")
    if not 0 < eps < 1:
        raise InputTypeError(f"{where}: eps must be within (0, 1), got {eps!r}")
    order = higher.topological_order([root])
    if leaves is None:
        checked = [v for v in order if v.is_leaf]
    else:
        checked, _ = _values(leaves, where, "leaves", allow_empty=True)
        _check_inputs(checked, root.graph, where)
    matrix = hessian(root, checked)
    report = HessianCheckReport(root=rules.describe(root), eps=eps)
    for i, leaf in enumerate(checked):
        saved = leaf.data
        columns = []
        try:
            for step in (eps, -eps):
                leaf.data = saved + step
                passes.recompute(order)
                columns.append(grad(root, checked))
        except Exception:
            columns = [[math.nan] * len(checked)] * 2  # undefined next to the point
        finally:
            leaf.data = saved
            passes.recompute(order)
        numeric = tuple((a - b) / (2 * eps) for a, b in zip(*columns, strict=True))
        analytic = tuple(matrix[i])
        ok = all(higher.close(a, n, rtol, atol * max(1.0, abs(n)))
                 for a, n in zip(analytic, numeric, strict=True))
        report.leaves.append(HessianRowCheck(node=rules.describe(leaf), label=leaf.label,
                                             id=leaf.id, analytic=analytic, numeric=numeric,
                                             ok=ok))
        if progress is not None:
            progress(i + 1, len(checked))
    return report
