"""The compiled executor: a graph of fixed structure re-run with new leaf values, in numpy.

Training loops rebuild the same graph every step only to change a few numbers. `compile_graph`
takes the graph once and first rewrites it (`opgraph.compiled.rewrite`): every chain of ``add``
nodes whose inner results are used once is one n-ary sum, and a product used only as one of
its terms is fused into it. networkx then gives the topological generations of what is left
(nodes whose inputs are all in earlier generations); the nodes of each generation are grouped
by op, and each group runs as one call of the op's vectorised kernel (`OpDef.vforward` /
`OpDef.vgrad`) over numpy arrays of all node values, and the sums of a generation as one
table: two gathers, one multiply and one reduction (`steps.SumGroup`). An op without kernels
runs its scalar rules node by node, so plugin ops work too, only slower; so do groups of fewer
than `SMALL_GROUP` nodes and sums of fewer than `SMALL_SUM` terms in all, where a numpy call
costs more than the scalar rules. Forward values equal the eager engine's to the last bit (a
sum adds its terms in the eager order), except where an op's numpy kernel rounds otherwise
than its scalar rule (``np.tanh`` against ``math.tanh``); gradients differ only where several
contributions to one gradient are added in another order. The tests hold every value and
gradient to 1e-12 relative of the eager engine.

The nodes a rewrite removes (a chain's inner adds, the fused products) are not computed by
`forward` and `backward`: `write_back`, `data`, `grad` and `fill_removed` give them their data
(as of the last `forward`) and gradient (that of their sum). ``compile_graph(root,
rewrite=False)`` compiles every node as it is.

Where the eager engine raises (``log`` of a negative number, ``1/0``, a rule returning what
is not a real number), so does `forward`, naming the first such node in topological order,
wherever numpy gives NaN or infinity there (the default ops' kernels do in every such case):
when any computed value comes out not finite, the scalar rule of each node holding one is run
again on that node's inputs to find the one that fails (``forward(check=False)`` skips the
check and leaves numpy's values). The sums' additions and products never fail (float addition
and multiplication do not raise). Small groups give what the kernel gives where their scalar
rule fails, so both paths agree. `backward` follows numpy where a gradient rule fails (``x **
0.5`` at 0 gives an infinite gradient, where the eager engine raises `GradRuleError`). A
vector kernel that raises is a plugin's bug: `ForwardError` or `GradRuleError` naming the op
and the kernel.

    compiled = compile_graph(loss)
    for step in range(100):
        compiled.forward()
        compiled.backward()
        compiled.sgd_step(0.1, model.parameters())
    compiled.write_back()   # data and grad back into the Value objects
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain as chained
from typing import Any

import networkx as nx
import numpy as np

from opgraph.core import Value, describe, is_partial, result_problem, topological_order
from opgraph.errors import (
    ForwardError,
    GradRuleError,
    GraphMismatchError,
    InputTypeError,
    NotALeafError,
)
from opgraph.opdef import OpDef

from .rewrite import ADD, Sum, find_sums, op_kind
from .steps import (
    OP1,
    OP2,
    OPN,
    SUM,
    OpGroup,
    ScalarRun,
    SumGroup,
    kernel_failed,
    only_value,
    run_backward,
    run_fill,
    run_forward,
)

__all__ = ["SMALL_GROUP", "SMALL_SUM", "CompiledGraph", "compile_graph"]

SMALL_GROUP = 8
"""Groups of fewer nodes run node by node with the scalar rules: a numpy call costs a few
microseconds however small its arrays, a scalar rule about half of one."""

SMALL_SUM = 32
"""Sums of a generation with fewer terms in all (padding included) run term by term."""


class CompiledGraph:
    """The graph under ``root``, compiled; see `compile_graph`."""

    def __init__(self, root: Value, rewrite: bool = True) -> None:
        if not isinstance(root, Value):
            raise InputTypeError(f"compile_graph: expected a Value, got {type(root).__name__}")
        self.root = root
        self.rewrite = rewrite
        self.nodes: list[Value] = topological_order(root)
        n = len(self.nodes)
        self.position = {node: i for i, node in enumerate(self.nodes)}
        # the buffers: a slot per node, then ONE (1.0) and PAD (-0.0); see steps.py
        self._values = np.empty(n + 2)
        self._values[:n] = [float(v.data) for v in self.nodes]
        self._values[n:] = (1.0, -0.0)
        self._grads = np.zeros(n + 2)
        self.values = self._values[:n]
        self.grads = self._grads[:n]
        self._one, self._pad = n, n + 1
        self._root_index = self.position[root]
        self._removed = bytearray(n)
        self._sum_nodes: dict[int, tuple[list[int], list[int]]] = {}  # scalar sums' removed
        self._records: list[Any] = []
        self._groups: list[OpGroup | SumGroup] | None = None
        self._plan: list[OpGroup | SumGroup | ScalarRun] = []
        self._build()
        # whether the removed nodes' data and grads are those of the last forward / backward,
        # and the leaves changed since the last forward (to give removed nodes its data)
        self._values_filled = self._grads_filled = True
        self._changed: list[tuple[np.ndarray, np.ndarray]] = []

    # --- compiling --------------------------------------------------------------------------

    def _build(self) -> None:
        nodes, position = self.nodes, self.position
        ops = [v.opdef for v in nodes]
        at = position.__getitem__
        inputs = [tuple(map(at, v.inputs)) for v in nodes]
        self._input_positions = inputs
        sums = self._find_sums(ops, inputs) if self.rewrite else []
        sum_at = {s.out: s for s in sums}
        run: ScalarRun | None = None
        for generation in self._generations(ops, inputs, sum_at):
            one = self._one_scalar(generation, ops, sum_at) if len(generation) == 1 else None
            steps, scalar = ([], one) if one else self._group(generation, ops, sum_at)
            for step in steps:
                self._plan.append(step)
                self._records.append(step)
                run = None
            if scalar:
                if run is None:
                    run = ScalarRun()
                    self._plan.append(run)
                run.code.extend(scalar)
        self._sums = [step for step in self._plan if isinstance(step, SumGroup)]
        self._runs = [step for step in self._plan if isinstance(step, ScalarRun)]
        self._is_sum = bytearray(len(nodes))
        for s in sums:
            self._is_sum[s.out] = 1
        # what forward checks for NaN and infinity: the computed nodes it computes
        removed = self._removed
        self._checked = np.array([i for i, op in enumerate(ops) if op is not None
                                  and not removed[i]], dtype=np.intp)

    def _find_sums(self, ops: list[OpDef | None], inputs: list[tuple[int, ...]]) -> list[Sum]:
        """The rewrite (`rewrite.find_sums`); marks the nodes it removes in ``_removed``."""
        kind_of = {id(op): op_kind(op) for op in set(ops)}
        kinds = [kind_of[id(op)] for op in ops]
        if ADD not in kinds:
            return []
        uses = np.bincount(np.fromiter(chained.from_iterable(inputs), dtype=np.intp),
                           minlength=len(ops)).tolist()
        sums, self._removed = find_sums(kinds, inputs, uses)
        one = self._one
        for s in sums:
            s.b = [one if b < 0 else b for b in s.b]
        return sums

    def _generations(self, ops: list[OpDef | None], inputs: list[tuple[int, ...]],
                     sum_at: dict[int, Sum]) -> Iterator[list[int]]:
        """networkx's topological generations of what is left: the computed nodes that stay,
        with edges from their computed inputs (a sum's: its terms' operands)."""
        n, removed = len(ops), self._removed
        kept = [i for i in range(n) if ops[i] is not None and not removed[i]]
        g = nx.DiGraph()
        g.add_nodes_from(kept)
        edges = []
        for i in kept:
            s = sum_at.get(i)
            for j in (inputs[i] if s is None else chained(s.a, s.b)):
                if j < n and ops[j] is not None:
                    edges.append((j, i))
        g.add_edges_from(edges)
        for generation in nx.topological_generations(g):
            generation.sort()
            yield generation

    def _one_scalar(self, generation: list[int], ops: list[OpDef | None],
                    sum_at: dict[int, Sum]) -> list[tuple] | None:
        """A generation of one node that runs by its scalar rule (a serial chain is a long
        run of them): its instruction, made without grouping; None if it is batched."""
        i = generation[0]
        s = sum_at.get(i)
        if s is not None:
            if len(s) >= SMALL_SUM:
                return None
            self._sum_nodes[i] = (s.chain, s.products)
            self._records.append(s)
            return [(SUM, i, tuple(chained.from_iterable(zip(s.a, s.b, strict=True))), None,
                     {})]
        op = ops[i]
        assert op is not None
        if op.vforward is not None and op.vgrad is not None and SMALL_GROUP <= 1:
            return None
        attrs = self.nodes[i].attrs if op.attrs else {}
        code = OPN if attrs or op.arity > 2 else OP1 if op.arity == 1 else OP2
        self._records.append((op, attrs, generation))
        return [(code, i, self._input_positions[i], op, attrs)]

    def _group(self, generation: list[int], ops: list[OpDef | None], sum_at: dict[int, Sum]
               ) -> tuple[list[OpGroup | SumGroup], list[tuple]]:
        """One generation's batched steps, and its instructions for a scalar run."""
        nodes, inputs, records = self.nodes, self._input_positions, self._records
        here: list[Sum] = []
        by_op: dict[tuple[int, tuple], list[int]] = {}
        for i in generation:
            s = sum_at.get(i)
            if s is not None:
                here.append(s)
                continue
            op = ops[i]
            assert op is not None
            key = tuple(sorted(nodes[i].attrs.items())) if op.attrs else ()
            by_op.setdefault((id(op), key), []).append(i)
        steps: list[OpGroup | SumGroup] = []
        scalar: list[tuple] = []
        for members in by_op.values():
            first = nodes[members[0]]
            op = first.opdef
            assert op is not None
            attrs = first.attrs
            if op.vforward is not None and op.vgrad is not None and len(members) >= SMALL_GROUP:
                group = OpGroup(op, attrs, np.array(members, dtype=np.intp),
                                [np.array([inputs[m][k] for m in members], dtype=np.intp)
                                 for k in range(op.arity)], batched=True)
                group.prepare()
                steps.append(group)
            else:
                code = OPN if attrs or op.arity > 2 else OP1 if op.arity == 1 else OP2
                scalar.extend((code, m, inputs[m], op, attrs) for m in members)
                records.append((op, attrs, members))
        for bucket in _buckets(here):
            length = len(bucket[0])
            if length * len(bucket) >= SMALL_SUM:
                steps.append(self._sum_group(bucket, ops[bucket[0].out], length))  # type: ignore
                continue
            for s in bucket:
                pairs = tuple(chained.from_iterable(zip(s.a, s.b, strict=True)))
                scalar.append((SUM, s.out, pairs, None, {}))
                self._sum_nodes[s.out] = (s.chain, s.products)
                records.append(s)
        return steps, scalar

    @property
    def groups(self) -> list[OpGroup | SumGroup]:
        """The groups of each generation, in the order they run: batched ones, and records of
        those run node by node (``batched`` false), for inspection."""
        if self._groups is None:
            inputs, ops = self._input_positions, [v.opdef for v in self.nodes]
            self._groups = [
                record if isinstance(record, (OpGroup, SumGroup))
                else _scalar_sum_group(record, ops[record.out])  # type: ignore[arg-type]
                if isinstance(record, Sum)
                else OpGroup(record[0], record[1], np.array(record[2], dtype=np.intp),
                             [np.array([inputs[m][k] for m in record[2]], dtype=np.intp)
                              for k in range(record[0].arity)], batched=False)
                for record in self._records]
        return self._groups

    def _sum_group(self, bucket: list[Sum], op: OpDef, length: int) -> SumGroup:
        """A batched `SumGroup` of ``bucket``'s sums, padded to ``length`` terms."""
        def table(rows: Iterable[list[int]], fill: int) -> np.ndarray:
            flat = list(chained.from_iterable(r + [fill] * (length - len(r)) for r in rows))
            return np.array(flat, dtype=np.intp).reshape(len(bucket), length).T.copy()

        one, pad = self._one, self._pad
        plain = all(b == one for s in bucket for b in s.b)
        return SumGroup(
            op=op, out=np.array([s.out for s in bucket], dtype=np.intp),
            a=table((s.a for s in bucket), pad),
            b=None if plain else table((s.b for s in bucket), one),
            chain=table((s.chain for s in bucket), -1),
            products=table((s.products for s in bucket), -1),
        )

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
        self._changing(idx)
        self.values[idx] = new

    def _changing(self, idx: np.ndarray) -> None:
        """Leaves at ``idx`` are about to change: keep their data of the last forward, which
        the removed nodes' data is computed from until the next forward."""
        if not self._values_filled and self._sum_nodes:
            self._changed.append((idx, self.values[idx]))

    def data(self, value: Value) -> float:
        """The current data of ``value`` (for a node a rewrite removed, as of the last
        forward)."""
        i = self.index(value)
        if self._removed[i]:
            self.fill_removed()
        return float(self.values[i])

    def grad(self, value: Value) -> float:
        """The gradient of the root with respect to ``value`` after `backward`."""
        i = self.index(value)
        if self._removed[i]:
            self.fill_removed()
        return float(self.grads[i])

    # --- passes ---------------------------------------------------------------------------

    def forward(self, *, check: bool = True) -> float:
        """Recompute every node from the leaves; returns the root's data.

        Raises `ForwardError` where the eager engine would and numpy gives NaN or infinity
        (see the module's docstring), unless ``check`` is false: then such nodes keep numpy's
        values (NaN for an op without vector kernels). The nodes a rewrite removed get their
        data from `fill_removed` (which `write_back`, `data` and `grad` call).
        """
        values = self._values
        self._values_filled = False
        self._changed.clear()
        with np.errstate(all="ignore"):  # NaN and infinity are checked for below, not warned of
            for step in self._plan:
                if step.batched:
                    step.forward(values)  # type: ignore[union-attr]
                else:
                    run_forward(step, values)  # type: ignore[arg-type]
        if check and not np.isfinite(values.take(self._checked)).all():
            self._raise_if_a_rule_fails()
        return float(values[self._root_index])

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
        float (which the eager engine keeps as an int). Sums and the nodes the rewrite removed
        are skipped: additions and multiplications of floats do not fail."""
        values = self.values
        checked = self._checked
        is_sum = self._is_sum
        for index in checked[~np.isfinite(values[checked])].tolist():
            if is_sum[index]:
                continue
            node = self.nodes[index]
            op = node.opdef
            assert op is not None
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
        """Gradients of the root with respect to every node (fresh, not accumulated); the
        entries of the nodes a rewrite removed are filled by `fill_removed`.

        Follows numpy where a gradient rule fails (``x ** 0.5`` at 0): the gradient is
        infinite or NaN, as the op's kernel gives it, in small groups as in big ones. Only an
        op without kernels whose rule fails raises `GradRuleError`.
        """
        values, grads = self._values, self._grads
        self._grads_filled = False
        grads.fill(0.0)
        grads[self._root_index] = 1.0
        with np.errstate(all="ignore"):  # infinities and NaN are results here, as in numpy
            for step in reversed(self._plan):
                if step.batched:
                    step.backward(values, grads)  # type: ignore[union-attr]
                else:
                    run_backward(step, values, grads, self._one,  # type: ignore[arg-type]
                                 self._slow_grad)
        return self.grads

    def _slow_grad(self, op: OpDef, attrs: dict[str, Any], index: int, xs: list[float],
                   local: Any, exc: Exception | None) -> list[float]:
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
        if op.vforward is not None and op.vgrad is not None:
            try:
                partials = op.vgrad(*[np.array([x]) for x in xs],
                                    np.array([self._values.item(index)]), **attrs)
                if len(partials) != len(xs):
                    raise ValueError(f"{len(partials)} partials for {len(xs)} inputs")
                return [only_value(p) for p in partials]
            except Exception as kernel_exc:
                raise kernel_failed(op, "vgrad", kernel_exc, 1) from kernel_exc
        node = self.nodes[index]
        where = _where(node, index)
        raise GradRuleError(
            f"op {op.name!r} gradient rule failed at {where} (compiled) on inputs {xs}: "
            f"{type(exc).__name__}: {exc}", op=op.name, node=where, cause=exc) from exc

    def fill_removed(self) -> None:
        """Give the nodes a rewrite removed their data, as of the last `forward` (the sums'
        running totals and the products), and their gradient, as of the last `backward`
        (their sum's), in `values` and `grads`. `write_back`, `data` and `grad` call it."""
        if not self._values_filled:
            values = self._values
            for step in self._sums:
                step.fill_values(values)
            if self._runs and self._sum_nodes:
                if self._changed:  # leaves changed since the forward: use its data
                    values = values.copy()
                    for idx, old in reversed(self._changed):
                        values[idx] = old
                for run in self._runs:
                    run_fill(run, values, None, self._sum_nodes)
                if values is not self._values:
                    removed = np.flatnonzero(np.frombuffer(self._removed, dtype=np.uint8))
                    self._values[removed] = values[removed]
            self._values_filled = True
            self._changed.clear()
        if not self._grads_filled:
            for step in self._sums:
                step.fill_grads(self._grads)
            for run in self._runs:
                run_fill(run, self._values, self._grads, self._sum_nodes)
            self._grads_filled = True

    def sgd_step(self, lr: float, parameters: Iterable[Value] | np.ndarray | None = None) -> None:
        """``data -= lr * grad`` for ``parameters`` (Values or positions; default every leaf)."""
        if parameters is None:
            idx = self._leaf_positions()
        elif isinstance(parameters, np.ndarray):
            idx = parameters
        else:
            idx = self.indices(parameters)
        self._changing(idx)
        self.values[idx] -= lr * self.grads[idx]

    def _leaf_positions(self) -> np.ndarray:
        cached = getattr(self, "_leaves", None)
        if cached is None:
            cached = self._leaves = np.array(
                [i for i, v in enumerate(self.nodes) if v.is_leaf], dtype=np.intp)
        return cached

    def write_back(self) -> None:
        """Copy data and gradients into the `Value` objects (the removed nodes' too)."""
        self.fill_removed()
        for node, data, grad in zip(self.nodes, self.values.tolist(), self.grads.tolist(),
                                    strict=True):
            node.data = data
            node.grad = grad


def _buckets(sums: list[Sum]) -> list[list[Sum]]:
    """The sums of one generation in tables of about one length: longest first, a table
    taking the next sum while its padding stays under a fifth of its cells."""
    buckets: list[list[Sum]] = []
    cells = 0
    for s in sorted(sums, key=len, reverse=True):
        if buckets and len(buckets[-1][0]) * (len(buckets[-1]) + 1) * 4 <= 5 * (cells + len(s)):
            buckets[-1].append(s)
            cells += len(s)
        else:
            buckets.append([s])
            cells = len(s)
    return buckets


def _scalar_sum_group(s: Sum, op: OpDef) -> SumGroup:
    """A record of a sum run term by term (for `CompiledGraph.groups`)."""
    def column(xs: list[int]) -> np.ndarray:
        return np.array(xs, dtype=np.intp).reshape(-1, 1)

    group = SumGroup(op=op, out=np.array([s.out], dtype=np.intp), a=column(s.a),
                     b=column(s.b), chain=column(s.chain), products=column(s.products),
                     batched=False)
    return group


def _where(node: Value, index: int) -> str:
    """How errors name a node of a compiled graph: its label or id, else its position."""
    where = describe(node).rsplit(" (data", 1)[0]  # (its data is stale here)
    return f"the unlabelled value at position {index}" if where == "unlabelled value" else where


def compile_graph(root: Value, *, rewrite: bool = True) -> CompiledGraph:
    """Compile the graph under ``root`` for repeated forward and backward passes.

    ``rewrite=False`` compiles every node as it is, without the sums (see the module's
    docstring)."""
    return CompiledGraph(root, rewrite)
