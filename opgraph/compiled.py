"""The compiled executor: a graph of fixed structure re-run with new leaf values, in numpy.

Training loops rebuild the same graph every step only to change a few numbers. `compile_graph`
takes the graph once: networkx gives its topological generations (nodes whose inputs are all
in earlier generations), the nodes of each generation are grouped by op, and each group runs as
one call of the op's vectorised kernel (`OpDef.vforward` / `OpDef.vgrad`) over numpy arrays of
all node values. An op without kernels runs its scalar rules node by node, so plugin ops work
too, only slower; so do groups of fewer than `SMALL_GROUP` nodes, where a numpy call costs
more than the scalar rules (a loss summed over a batch is a long serial run of them). Results
equal the eager engine's to rounding (the tests hold them to 1e-12).
Where the eager engine raises (``log`` of a negative number, ``1/0``, a rule returning what
is not a real number), so does `forward`, naming the first such node in topological order,
wherever numpy gives NaN or infinity there (the default ops' kernels do in every such case):
when any value comes out not finite, the scalar rule of each node holding one is run again on
that node's inputs to find the one that fails (the check of the whole array costs under 1% of
a step; ``forward(check=False)`` skips it and leaves numpy's values). Small groups give what
the kernel gives where their scalar rule fails, so both paths agree. `backward` follows numpy
where a gradient rule fails (``x ** 0.5`` at 0 gives an infinite gradient, where the eager
engine raises `GradRuleError`). A vector kernel that raises is a plugin's bug: `ForwardError`
or `GradRuleError` naming the op and the kernel.

    compiled = compile_graph(loss)
    for step in range(100):
        compiled.forward()
        compiled.backward()
        compiled.sgd_step(0.1, model.parameters())
    compiled.write_back()   # data and grad back into the Value objects
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from opgraph.core import Value, describe, is_partial, is_real, result_problem, topological_order
from opgraph.errors import (
    ForwardError,
    GradRuleError,
    GraphMismatchError,
    InputTypeError,
    NotALeafError,
)
from opgraph.opdef import OpDef

SMALL_GROUP = 8
"""Groups of fewer nodes run node by node with the scalar rules: a numpy call costs a few
microseconds however small its arrays, a scalar rule about half of one. (The serial tails of a
graph, such as a loss summed over a batch, are long runs of one-node groups.)"""


@dataclass
class _Group:
    """Nodes of one generation computed by one op with the same attributes."""

    op: OpDef
    attrs: dict[str, Any]
    out: np.ndarray  # positions of the nodes
    ins: list[np.ndarray]  # positions of each input slot, aligned with ``out``
    unique: list[bool]  # whether each input slot's positions are free of repeats

    def __post_init__(self) -> None:
        self.vectorised = self.op.vforward is not None and self.op.vgrad is not None
        self.batched = self.vectorised and len(self.out) >= SMALL_GROUP
        # each node's position and its inputs' positions, for the node-by-node path
        self.rows: list[tuple[int, list[int]]] = [] if self.batched else list(zip(
            self.out.tolist(), [list(r) for r in zip(*[i.tolist() for i in self.ins],
                                                     strict=True)], strict=True))


class CompiledGraph:
    """The graph under ``root``, compiled; see `compile_graph`."""

    def __init__(self, root: Value) -> None:
        if not isinstance(root, Value):
            raise InputTypeError(f"compile_graph: expected a Value, got {type(root).__name__}")
        self.root = root
        self.nodes: list[Value] = topological_order(root)
        self.position = {node: i for i, node in enumerate(self.nodes)}
        self.values = np.array([float(v.data) for v in self.nodes], dtype=np.float64)
        self.grads = np.zeros(len(self.nodes), dtype=np.float64)
        self.groups: list[_Group] = self._group()
        self._root_index = self.position[root]

    def _group(self) -> list[_Group]:
        g = nx.DiGraph()
        g.add_nodes_from(range(len(self.nodes)))
        position = self.position
        g.add_edges_from(
            (position[i], position[v]) for v in self.nodes for i in v.inputs
        )
        groups: list[_Group] = []
        for generation in nx.topological_generations(g):
            by_op: dict[tuple[int, tuple], list[int]] = {}
            for index in sorted(generation):
                node = self.nodes[index]
                if node.is_leaf:
                    continue
                attrs = tuple(sorted(node.attrs.items()))
                by_op.setdefault((id(node.opdef), attrs), []).append(index)
            for members in by_op.values():
                first = self.nodes[members[0]]
                op = first.opdef
                assert op is not None
                ins = [np.array([position[self.nodes[m].inputs[k]] for m in members],
                                dtype=np.intp) for k in range(op.arity)]
                groups.append(_Group(
                    op=op, attrs=first.attrs,
                    out=np.array(members, dtype=np.intp), ins=ins,
                    unique=[len(np.unique(i)) == len(i) for i in ins],
                ))
        return groups

    def __len__(self) -> int:
        return len(self.nodes)

    # --- leaves ---------------------------------------------------------------------------

    def index(self, value: Value) -> int:
        """The position of ``value`` in this compiled graph."""
        if not isinstance(value, Value):
            raise InputTypeError(f"expected a Value of this compiled graph, got "
                                 f"{type(value).__name__} {value!r}")
        try:
            return self.position[value]
        except KeyError:
            raise GraphMismatchError(f"{describe(value)} is not in this compiled graph") \
                from None

    def indices(self, values: Iterable[Value]) -> np.ndarray:
        """Positions of ``values``, as an index array."""
        return np.array([self.index(v) for v in values], dtype=np.intp)

    def set(self, leaves: Sequence[Value], data: Sequence[float] | np.ndarray) -> None:
        """Give ``leaves`` new data (call `forward` next)."""
        idx = self.indices(leaves)
        for i in idx:
            node = self.nodes[i]
            if not node.is_leaf:
                raise NotALeafError(f"{describe(node)} is computed by op "
                                    f"{node.op!r}; only leaves can be set")
        try:
            new = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputTypeError(f"set: expected real numbers, got {data!r}") from None
        if new.shape != idx.shape:
            raise ValueError(f"set: {len(idx)} leaves need {len(idx)} numbers, got data of "
                             f"shape {new.shape}")
        self.values[idx] = new

    def data(self, value: Value) -> float:
        """The current data of ``value``."""
        return float(self.values[self.index(value)])

    def grad(self, value: Value) -> float:
        """The gradient of the root with respect to ``value`` after `backward`."""
        return float(self.grads[self.index(value)])

    # --- passes ---------------------------------------------------------------------------

    def forward(self, *, check: bool = True) -> float:
        """Recompute every node from the leaves; returns the root's data.

        Raises `ForwardError` where the eager engine would and numpy gives NaN or infinity
        (see the module's docstring), unless ``check`` is false: then such nodes keep numpy's
        values (NaN for an op without vector kernels).
        """
        values = self.values
        with np.errstate(all="ignore"):  # NaN and infinity are checked for below, not warned of
            for group in self.groups:
                if group.batched:
                    try:
                        out = group.op.vforward(*[values[i] for i in group.ins], **group.attrs)
                    except Exception as exc:
                        raise _kernel_failed(group, "vforward", exc) from exc
                    values[group.out] = out
                else:
                    self._scalar_forward(group)
        if check and not np.isfinite(values).all():
            self._raise_if_a_rule_fails()
        return float(values[self._root_index])

    def _scalar_forward(self, group: _Group) -> None:
        """A small group, or one of an op without vector kernels: node by node, scalar rule.

        Where the rule raises or gives what is not a real number (or a float), the node gets
        what the op's kernel gives, as in a big group (NaN without kernels); where that is not
        finite, `_raise_if_a_rule_fails` then finds the rule's failure.
        """
        op, attrs = group.op, group.attrs
        values = self.values
        item = values.item
        for out, ins in group.rows:
            xs = [item(i) for i in ins]
            try:
                result = op.forward(*xs, **attrs)
                if type(result) is not float and not is_real(result):
                    raise TypeError("not a real number")
                values[out] = result  # (an int too big for a float raises OverflowError)
            except Exception:
                values[out] = _kernel_value(group, xs)

    def _failure(self, index: int, inputs: list[float], problem: str,
                 cause: BaseException | None = None) -> ForwardError:
        """The error for the node at ``index``, whose forward rule ``problem``."""
        node = self.nodes[index]
        op = node.opdef
        assert op is not None
        where = _where(node, index)
        return ForwardError(f"op {op.name!r} failed at {where} (compiled) on inputs {inputs}: "
                            f"forward rule {problem}", op=op.name, node=where, cause=cause)

    def _raise_if_a_rule_fails(self) -> None:
        """Rerun the scalar forward rule of every computed node whose value is not finite, in
        topological order; raise `ForwardError` for the first that fails (NaN and infinity
        are results where the rule itself returns them, as ``exp`` past 709 does). A rule fails
        as in the eager engine (`opgraph.core.rules`), or if it gives an int too big for a
        float (which the eager engine keeps as an int)."""
        values = self.values
        for index in np.flatnonzero(~np.isfinite(values)).tolist():
            node = self.nodes[index]
            op = node.opdef
            if op is None:
                continue
            inputs = [float(values[self.position[v]]) for v in node.inputs]
            try:
                out = op.forward(*inputs, **node.attrs)
            except Exception as exc:
                raise self._failure(index, inputs, f"raised {type(exc).__name__}: {exc}",
                                    exc) from exc
            problem = result_problem(out)
            if problem is None and type(out) is not float:
                try:
                    float(out)
                except OverflowError:
                    problem = "too big for a float"
            if problem:
                text = repr(out) if len(repr(out)) <= 40 else repr(out)[:37] + "..."
                raise self._failure(index, inputs,
                                    f"returned {type(out).__name__} {text}, {problem}")

    def backward(self) -> np.ndarray:
        """Gradients of the root with respect to every node (fresh, not accumulated).

        Follows numpy where a gradient rule fails (``x ** 0.5`` at 0): the gradient is
        infinite or NaN, as the op's kernel gives it, in small groups as in big ones. Only an
        op without kernels whose rule fails raises `GradRuleError`.
        """
        grads = self.grads
        grads.fill(0.0)
        grads[self._root_index] = 1.0
        with np.errstate(all="ignore"):  # infinities and NaN are results here, as in numpy
            for group in reversed(self.groups):
                if group.batched:
                    self._batched_backward(group)
                else:
                    self._scalar_backward(group)
        return grads

    def _batched_backward(self, group: _Group) -> None:
        values, grads = self.values, self.grads
        g = grads[group.out]
        try:
            local = group.op.vgrad(*[values[i] for i in group.ins], values[group.out],
                                   **group.attrs)
            if len(local) != len(group.ins):
                raise ValueError(f"{len(local)} partials for {len(group.ins)} inputs")
        except Exception as exc:
            raise _kernel_failed(group, "vgrad", exc) from exc
        for idx, unique, partial in zip(group.ins, group.unique, local, strict=True):
            contribution = g * partial
            if unique:
                grads[idx] += contribution
            else:
                np.add.at(grads, idx, np.broadcast_to(contribution, idx.shape))

    def _scalar_backward(self, group: _Group) -> None:
        """Node by node, with the scalar rule; one or two float partials (the common case)
        are added at once, anything else goes through `_slow_grad`."""
        op, attrs = group.op, group.attrs
        grads = self.grads
        item, grad_of = self.values.item, grads.item
        for out, ins in reversed(group.rows):
            g = grad_of(out)
            xs = [item(i) for i in ins]
            local: Any = None
            exc: Exception | None = None
            try:
                local = op.grad(*xs, item(out), **attrs)
                if len(ins) == 1:
                    (d,) = local = tuple(local)
                    if type(d) is float or isinstance(d, float):  # (np.float64 is one)
                        grads[ins[0]] += g * d
                        continue
                elif len(ins) == 2:
                    da, db = local = tuple(local)
                    if (type(da) is float or isinstance(da, float)) and (
                            type(db) is float or isinstance(db, float)):
                        grads[ins[0]] += g * da
                        grads[ins[1]] += g * db
                        continue
            except Exception as raised:
                exc = raised
            for i, d in zip(ins, self._slow_grad(group, out, xs, local, exc), strict=True):
                grads[i] += g * d

    def _slow_grad(self, group: _Group, index: int, xs: list[float], local: Any,
                   exc: Exception | None) -> list[float]:
        """The partials of a node whose gradient rule raised (``exc``) or did not give one
        float per input: partials the eager engine takes (`opgraph.core.is_partial`: bools,
        ints and numpy scalars too) are taken as they are; otherwise the op's kernel gives them,
        as in a big group; an op without kernels raises `GradRuleError`."""
        if exc is None:
            try:
                given = tuple(local)
                if len(given) == len(xs) and all(is_partial(d) for d in given):
                    return [float(d) for d in given]
            except (TypeError, ValueError, OverflowError):
                pass
            exc = TypeError(f"it returned {local!r}, not one real number per input")
        if group.vectorised:
            try:
                partials = group.op.vgrad(*[np.array([x]) for x in xs],
                                          np.array([self.values.item(index)]), **group.attrs)
                if len(partials) != len(xs):
                    raise ValueError(f"{len(partials)} partials for {len(xs)} inputs")
                return [_only_value(p) for p in partials]
            except Exception as kernel_exc:
                raise _kernel_failed(group, "vgrad", kernel_exc) from kernel_exc
        node = self.nodes[index]
        where = _where(node, index)
        name = group.op.name
        raise GradRuleError(
            f"op {name!r} gradient rule failed at {where} (compiled) on inputs {xs}: "
            f"{type(exc).__name__}: {exc}", op=name, node=where, cause=exc) from exc

    def sgd_step(self, lr: float, parameters: Iterable[Value] | np.ndarray | None = None) -> None:
        """``data -= lr * grad`` for ``parameters`` (Values or positions; default every leaf)."""
        if parameters is None:
            idx = self._leaf_positions()
        elif isinstance(parameters, np.ndarray):
            idx = parameters
        else:
            idx = self.indices(parameters)
        self.values[idx] -= lr * self.grads[idx]

    def _leaf_positions(self) -> np.ndarray:
        cached = getattr(self, "_leaves", None)
        if cached is None:
            cached = self._leaves = np.array(
                [i for i, v in enumerate(self.nodes) if v.is_leaf], dtype=np.intp)
        return cached

    def write_back(self) -> None:
        """Copy data and gradients into the `Value` objects."""
        for node, data, grad in zip(self.nodes, self.values.tolist(), self.grads.tolist(),
                                    strict=True):
            node.data = data
            node.grad = grad


def _kernel_value(group: _Group, xs: list[float]) -> float:
    """What the op's kernel gives for one node (NaN for an op without kernels)."""
    if not group.vectorised:
        return math.nan
    try:
        out = group.op.vforward(*[np.array([x]) for x in xs], **group.attrs)
        return _only_value(out)
    except Exception as exc:
        raise _kernel_failed(group, "vforward", exc) from exc


def _only_value(result: Any) -> float:
    """The one value of a kernel's result over 1-element arrays (it may be a plain number)."""
    return float(np.broadcast_to(np.asarray(result, dtype=np.float64), (1,))[0])


def _kernel_failed(group: _Group, kernel: str, exc: Exception) -> ForwardError | GradRuleError:
    """A vector kernel that raised (or gave the wrong number of partials): a plugin's bug."""
    name = group.op.name
    kind = ForwardError if kernel == "vforward" else GradRuleError
    return kind(f"op {name!r}: its vector kernel {kernel} raised {type(exc).__name__}: {exc} "
                f"(compiled, over {len(group.out)} nodes)", op=name, node="", cause=exc)


def _where(node: Value, index: int) -> str:
    """How errors name a node of a compiled graph: its label or id, else its position."""
    where = describe(node).rsplit(" (data", 1)[0]  # (its data is stale here)
    return f"the unlabelled value at position {index}" if where == "unlabelled value" else where


def compile_graph(root: Value) -> CompiledGraph:
    """Compile the graph under ``root`` for repeated forward and backward passes."""
    return CompiledGraph(root)
