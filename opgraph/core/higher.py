"""Gradients as values: the reverse pass that builds its result from ops (``create_graph``).

`gradients` is the backward pass over one or more outputs, written to return the gradients
rather than store them: in float mode it calls each op's ``grad`` rule, as
`opgraph.core.passes.backward_over` does, and gives the same numbers; in graph mode it calls
each op's ``grad_graph`` rule (`opgraph.OpDef`), whose partials are `Value` nodes built from ops
over the node's inputs and output, and multiplies and adds them with ops too, so every
gradient is a node of a graph that can be drawn, held by a `Graph` and differentiated again.

Numbers stay numbers for as long as they can: the seed is the number 1, a constant partial
(add's 1, relu's step) times a number is a number, and a partial of exactly 1 passes the
gradient through unchanged. So the gradient graph holds only what the derivative needs. At
the end each gradient asked for is made a node of its own (`materialize`): a number becomes a
constant leaf, and a gradient that is a node of the differentiated graph itself (d(x*y)/dx is
y) or already another node's gradient is multiplied by a constant 1, so that each gets its own
node and label, ``d o/d x1``.

Everything is iterative (a chain of any depth), and a pass that fails changes nothing: no
``grad`` is set and a `Graph` that the outputs belong to gets back to where it was.

`backward_graph` is ``Value.backward(create_graph=True)``: every node's ``grad`` becomes its
gradient node; leaves add theirs to what they hold, as in float mode.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opgraph import gcpolicy
from opgraph.core import fast, rules
from opgraph.core.value import Value
from opgraph.errors import (
    GradRuleError,
    GraphLimitError,
    GraphMismatchError,
    InputTypeError,
    NoGradGraphError,
    OpgraphPluginWarning,
    RuleError,
)
from opgraph.opdef import OpDef

Grad = float | Value  # a gradient inside the pass: a number (a constant) or a node

_verdicts: dict[OpDef, str | None] = {}
"""Each graph rule checked so far (`verdict`): None if it agrees with its float rule, else why
it was refused."""


# --- walking ---------------------------------------------------------------------------------


def topological_order(roots: Sequence[Any]) -> list[Any]:
    """Every node the ``roots`` depend on (and the roots), inputs first, each once; iterative.
    The collector is paused once the walk goes `opgraph.gcpolicy.DEEP` deep, as in
    `opgraph.core.fast.backward` (a deep walk's stack would set off collections)."""
    order: list[Any] = []
    seen: set[Any] = set()
    emit = order.append
    deep = gcpolicy.DEEP
    paused = False
    try:
        for root in roots:
            if root in seen:
                continue
            seen.add(root)
            stack: list[tuple[Any, Iterator[Any]]] = []
            node, pending = root, iter(root._inputs)
            while True:
                for child in pending:
                    if child not in seen:
                        seen.add(child)
                        if not child._inputs:
                            emit(child)
                            continue
                        stack.append((node, pending))
                        if len(stack) == deep and not paused:
                            gcpolicy.pause()
                            paused = True
                        node, pending = child, iter(child._inputs)
                        break
                else:
                    emit(node)
                    if not stack:
                        break
                    node, pending = stack.pop()
    finally:
        if paused:
            gcpolicy.release()
    return order


def owner_of(values: Sequence[Value], where: str, kind: str) -> Any:
    """The graph every value of ``values`` belongs to (None: they belong to none), or
    `GraphMismatchError` naming two that differ (``kind`` names the list: "outputs")."""
    owner = values[0]._graph
    for i, v in enumerate(values):
        if v._graph is not owner:
            raise GraphMismatchError(
                f"{where}: {kind}[0] ({rules.describe(values[0])}) belongs to "
                f"{_graph_name(owner)} but {kind}[{i}] ({rules.describe(v)}) to "
                f"{_graph_name(v._graph)}")
    return owner


def _graph_name(graph: Any) -> str:
    return "no graph" if graph is None else f"graph {graph.name!r}"


# --- the pass ----------------------------------------------------------------------------------


def gradients(outputs: Sequence[Value], order: Sequence[Value], *, create_graph: bool,
              seeds: Sequence[float] | None = None,
              wrt: Iterable[Value] | None = None) -> dict[Value, Grad]:
    """The gradient of the sum of ``outputs`` (each weighted by its seed, 1 by default) with
    respect to every node of ``order`` (their topological order) that they depend on; with
    ``wrt``, only to those nodes and what lies between them and the outputs (the rest of the
    graph costs nothing).

    Float mode: floats, as `opgraph.core.passes.backward_over` computes them. Graph mode: each
    a number (a constant) or a `Value` (use `Materializer` for one node each). A rule that
    fails raises `GradRuleError` (`NoGradGraphError` for an op without a graph rule) naming
    the op and the node.
    """
    grads: dict[Value, Grad] = {}
    for k, out in enumerate(outputs):
        seed = 1.0 if seeds is None else float(seeds[k])
        grads[out] = grads[out] + seed if out in grads else seed  # type: ignore[operator]
    if wrt is not None:
        order, keep = between(order, wrt)
    else:
        keep = None
    if not create_graph:
        _float_sweep(order, grads, keep)
        return grads
    for node in reversed(order):
        op = node._opdef
        if op is None:
            continue
        g = grads[node]  # (every node of the order leads to an output: it has its gradient)
        local = graph_partials(node, op)
        for v, d in zip(node._inputs, local, strict=True):
            if keep is not None and v not in keep:
                continue
            c = _times(g, d)
            grads[v] = _plus(grads[v], c) if v in grads else c
    return grads


def between(order: Sequence[Value], wrt: Iterable[Value]) -> tuple[list[Value], set[Value]]:
    """The nodes of ``order`` that are in ``wrt`` or depend on one of them, in order, and the
    same as a set."""
    keep = set(wrt)
    kept = []
    for node in order:
        if node in keep:
            kept.append(node)
            continue
        for v in node._inputs:
            if v in keep:
                keep.add(node)
                kept.append(node)
                break
    return kept, keep


@contextmanager
def quiet_collector(size: int) -> Iterator[None]:
    """Pause the cyclic garbage collector while a pass over ``size`` nodes makes its gradient
    nodes (thousands of new objects and no cycles: collections would only cost time)."""
    if size < gcpolicy.DEEP:
        yield
        return
    gcpolicy.pause()
    try:
        yield
    finally:
        gcpolicy.release()


def _float_sweep(order: Sequence[Value], grads: dict[Value, Grad],
                 keep: set[Value] | None) -> None:
    """The float-mode sweep of `gradients`: each op's ``grad`` rule, as the backward pass
    calls it, and the same check of what the rules return (`opgraph.core.passes.check_grads`);
    with ``keep``, only to the nodes of that set."""
    node: Value | None = None
    get = grads.get
    try:
        for node in reversed(order):
            op = node._opdef
            if op is None:
                continue
            g = grads[node]
            inputs, attrs = node._inputs, node._attrs
            if attrs:
                local = op.grad(*[v.data for v in inputs], node.data, **attrs)
            elif len(inputs) == 2:
                a, b = inputs
                local = op.grad(a.data, b.data, node.data)
            elif len(inputs) == 1:
                local = op.grad(inputs[0].data, node.data)
            else:
                local = op.grad(*[v.data for v in inputs], node.data)
            for v, d in zip(inputs, local, strict=True):
                if keep is None or v in keep:
                    grads[v] = get(v, 0.0) + g * d  # type: ignore[operator]
    except Exception as exc:
        raise rules.grad_failed(node, exc) from exc
    try:
        math.fsum(grads.values())  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # a non-number, or inf - inf: look closer
        culprit = rules.non_number_rule(order)
        if culprit is not None:
            raise rules.grad_failed(*culprit) from None


def graph_partials(node: Value, op: OpDef) -> list[Grad]:
    """The partials of ``node`` by its op's graph rule: Values or numbers, one per input;
    `GradRuleError` naming the op and the node if the rule fails or returns something else."""
    if op.grad_graph is None or (_verdicts[op] if op in _verdicts else verdict(op)) is not None:
        raise no_graph_rule(node, op)
    return run_graph_rule(node, op)


def run_graph_rule(node: Value, op: OpDef) -> list[Grad]:
    """`graph_partials` without the check before first use (for the checks themselves)."""
    rule = op.grad_graph
    if rule is None:
        raise no_graph_rule(node, op)
    attrs = node._attrs
    try:
        local = list(rule(*node._inputs, node, **attrs) if attrs else rule(*node._inputs, node))
        if len(local) != op.arity:
            raise ValueError(f"it returned {len(local)} partials for {op.arity} inputs")
        out: list[Grad] = []
        for d in local:
            if isinstance(d, Value):
                out.append(d)
            elif rules.is_partial(d) and not isinstance(d, bool):
                out.append(float(d))
            else:
                raise TypeError(f"it returned {type(d).__name__} {rules.show_number(d)}, not "
                                f"a Value or a real number")
    except GraphLimitError:
        raise  # the graph is full: not the rule's fault
    except Exception as exc:
        where = f"node {rules.describe(node)} over {rules.describe_all(node._inputs)}"
        cause = str(exc) if isinstance(exc, RuleError) else f"{type(exc).__name__}: {exc}"
        raise GradRuleError(f"op {op.name!r} graph gradient rule failed at {where}: {cause}",
                            op=op.name, node=rules.describe(node), cause=exc) from exc
    return out


def no_graph_rule(node: Value, op: OpDef) -> NoGradGraphError:
    """The error for differentiating ``node`` with create_graph=True when its op has no graph
    rule (or had it refused when first used)."""
    where = f"op {op.name!r} from plugin {op.plugin!r}" if op.plugin else f"op {op.name!r}"
    refused = _verdicts.get(op)
    if refused is not None:
        why = f"its graph gradient rule was refused when it was first used ({refused})"
    else:
        why = ("it has no graph form of its gradient rule (OpDef.grad_graph), which "
               "create_graph=True needs; gradients as numbers (create_graph=False) still work")
    return NoGradGraphError(
        f"{where} at node {rules.describe(node)}: {why}", op=op.name, node=rules.describe(node))


def _times(g: Grad, d: Grad) -> Grad:
    """``g * d``, folding numbers: a partial of exactly 1 passes the gradient through."""
    if type(g) is float:
        if type(d) is float:
            return g * d
        if g == 1.0:
            return d
        if g == 0.0:
            return d.data * 0.0  # type: ignore[union-attr]  # a constant zero (NaN if d is)
        return d * g
    if type(d) is float:
        if d == 1.0:
            return g
        if d == -1.0:
            return -g
        if d == 0.0:
            return g.data * 0.0  # type: ignore[union-attr]  # a constant zero (NaN if g is)
    return g * d


def _plus(a: Grad, b: Grad) -> Grad:
    """``a + b``, folding numbers (and adding no node for a zero)."""
    if type(a) is float:
        if type(b) is float:
            return a + b
        return b if a == 0.0 else b + a
    if type(b) is float and b == 0.0:
        return a
    return a + b


# --- one node per gradient -----------------------------------------------------------------------


def name_of(value: Value) -> str:
    """How a gradient's label names a value: its label, else ``#id`` in a `Graph`, else an
    expression of its inputs' labels (``x*w``, ``tanh(n)``) up to 24 characters, else its op's
    name; bracketed when it holds spaces or a slash (``(d o/d x)``)."""
    name = _plain_name(value)
    if not value.label and value._id is None:
        op = value._opdef
        named = [i.label for i in value._inputs]
        symbol = op.format_symbol(value._attrs) if op is not None else ""
        if op is not None and all(named) and not any(" " in n or "/" in n for n in named):
            if len(named) == 2 and symbol and not symbol[0].isalpha():
                name = f"{named[0]}{symbol}{named[1]}"
            else:
                name = f"{op.name}({', '.join(named)})"
            if len(name) > 24:
                name = op.name
    return f"({name})" if (" " in name or "/" in name) else name


def _plain_name(value: Value) -> str:
    if value.label:
        return value.label
    if value._id is not None:
        return f"#{value._id}"
    return value._opdef.name if value._opdef is not None else "value"


def outputs_name(outputs: Sequence[Value]) -> str:
    """The name of the sum of ``outputs`` in a label (``o``, ``(o1 + o2)``)."""
    names = list(dict.fromkeys(name_of(o) for o in outputs))
    return names[0] if len(names) == 1 else "(" + " + ".join(names) + ")"


class Materializer:
    """Makes each gradient asked for a node of its own, labelled ``d {root}/d {node}``."""

    def __init__(self, root_name: str, original: Iterable[Value], owner: Any) -> None:
        self.root_name = root_name
        self.original = set(original)
        self.claimed: set[Value] = set()
        self.owner = owner

    def __call__(self, grad: Grad, of: Value) -> Value:
        if type(grad) is float:
            value = Value(grad)
            if self.owner is not None:
                self.owner.adopt(value)
        elif grad in self.original or grad in self.claimed:
            value = grad * 1.0  # type: ignore[operator]
        else:
            value = grad  # type: ignore[assignment]
        self.claimed.add(value)
        if not value.label:
            value.label = f"d {self.root_name}/d {name_of(of)}"
        return value


def checkpoint(owner: Any) -> Any:
    """A mark to roll ``owner`` (a `Graph`, or None) back to if the pass fails."""
    mark = getattr(owner, "checkpoint", None)
    return mark() if mark is not None else None


def rollback(owner: Any, mark: Any) -> None:
    """Remove what a failed pass added to ``owner``."""
    if mark is not None:
        owner.rollback(mark)


def backward_graph(root: Value, create_graph: object = True) -> None:
    """``root.backward(create_graph=True)``: set every computed node's ``grad`` to the node of
    d root / d node, and add d root / d leaf (a node) to every leaf's ``grad`` (a leaf holding
    0.0 takes the node itself). Nothing changes if a rule fails."""
    check_create_graph(create_graph, f"backward of {rules.describe(root)}")
    owner = root._graph
    mark = checkpoint(owner)
    order = topological_order([root])
    try:
        with quiet_collector(len(order)):
            results = _graph_grads_of_all(root, order, owner)
    except BaseException:
        rollback(owner, mark)
        raise
    for node, g in results:
        node.grad = g


def _graph_grads_of_all(root: Value, order: list[Value], owner: Any) -> list[tuple[Value, Value]]:
    """Each node of ``order`` with the gradient node its ``grad`` is to hold."""
    grads = gradients([root], order, create_graph=True)
    make = Materializer(name_of(root), order, owner)
    results: list[tuple[Value, Value]] = []
    for node in order:
        g = make(grads.get(node, 0.0), node)
        if node._opdef is None:
            before = node.grad
            if isinstance(before, Value):
                g = _labelled(before + g, g.label)
            elif before != 0.0:
                g = _labelled(g + before, g.label)
        results.append((node, g))
    return results


def _labelled(value: Value, label: str) -> Value:
    value.label = label
    return value


fast.graph_backward = backward_graph


# --- the check of a graph rule before its first use ---------------------------------------------

CHECK_FRACTIONS = (0.3, 0.7)
"""Where in each input's sampling interval a graph rule is checked before its first use."""


def verdict(op: OpDef) -> str | None:
    """Check ``op``'s graph rule against its float rule at two points (cheap: a few nodes),
    once, before its first use: None if they agree. A rule that raises or disagrees is refused
    for as long as the op table is installed: an `OpgraphPluginWarning` names op and plugin,
    and create_graph=True over the op raises `NoGradGraphError` saying why. (Not when the
    table is installed: nodes made then would cost every program, higher order or not, a
    garbage collection in its first big pass.)"""
    _verdicts[op] = None  # (while the check runs: it applies the op, never its graph rule)
    problem = disagreement(op)
    _verdicts[op] = problem
    if problem is not None:
        warnings.warn(f"plugin {op.plugin!r}: op {op.name!r}: graph gradient rule refused "
                      f"({problem}); create_graph=True over it raises", OpgraphPluginWarning,
                      stacklevel=2)
    return problem


def forget_verdicts() -> None:
    """Forget the checks done (a new op table was installed)."""
    _verdicts.clear()


def disagreement(op: OpDef, points: Sequence[Sequence[float]] | None = None,
                 rtol: float = 1e-9, atol: float = 1e-12) -> str | None:
    """What is wrong with ``op``'s graph rule against its float rule at ``points`` (by
    default two points of its domain), or None if they agree."""
    from opgraph.core.value import apply_op

    attrs = dict(op.sample_attrs)
    if points is None:
        points = [[lo + f * (hi - lo) for lo, hi in map(op.interval, range(op.arity))]
                  for f in CHECK_FRACTIONS]
    for args in points:
        try:
            inputs = [Value(a) for a in args]
            out = apply_op(op, inputs, attrs)
            floats = list(op.grad(*args, out.data, **attrs))
        except Exception:
            continue  # the forward or float rule fails here: nothing to compare
        try:
            nodes = run_graph_rule(out, op)
        except Exception as exc:
            return f"at inputs {tuple(args)} it raised {type(exc).__name__}: {exc}"
        for i, (f, g) in enumerate(zip(floats, nodes, strict=False)):
            number = g.data if isinstance(g, Value) else g
            if not close(float(f), number, rtol, atol):
                return (f"at inputs {tuple(args)}, d/d input {i} is {number!r} by the graph "
                        f"rule but {f!r} by the float rule")
    return None


def close(a: float, b: float, rtol: float, atol: float) -> bool:
    """Whether two numbers agree (NaN with NaN, an infinity only with itself)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * max(abs(a), abs(b))


def refused() -> Mapping[OpDef, str]:
    """The graph rules refused so far (see `verdict`), with the reasons."""
    return {op: why for op, why in _verdicts.items() if why is not None}


def check_create_graph(flag: object, where: str) -> bool:
    """``flag`` as a bool, or `InputTypeError`."""
    if type(flag) is not bool:
        raise InputTypeError(f"{where}: create_graph must be True or False, got "
                             f"{type(flag).__name__} {flag!r}")
    return flag


__all__ = [
    "Materializer",
    "backward_graph",
    "forget_verdicts",
    "gradients",
    "graph_partials",
    "run_graph_rule",
    "verdict",
]
