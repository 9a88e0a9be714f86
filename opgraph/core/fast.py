"""The engine's fast path, all of it: `Value`'s operators and `Value.backward`.

Each is the reference path (`opgraph.core.value`, `opgraph.core.passes`) with the calls
inlined, because a scalar engine's time goes to per-node overhead:

- `binary_operator` / `unary_operator` make ``x * y`` and ``x.tanh()``: bound to their op when
  the op table is installed (no lookup per call), they run the forward rule and make the node in
  place. Only when an input belongs to a `Graph` (its class is `GraphValue`, not `Value`), or
  source tracking is on, do they take the reference path (`opgraph.core.value.apply_checked`),
  which adds the node to the graph.
- `backward` is `topological_order` and `backward_over` fused into one walk and one sweep, and
  `backward_over` is the same sweep over a given order: gradient rules of one or two inputs
  and no attributes are called unpacked (see `Sweep`), leaf gradients are type-checked as the
  sweep passes them, and the collector is paused only when the walk goes deep
  (`opgraph.gcpolicy.DEEP`). While `opgraph.core.passes.remember_walks` is on (a client that
  publishes training steps turns it on), the walk also records where each input is, as
  `structure_order` does, and the last pass keeps its order and that record for
  `structure_order` of its root: publishing right after a backward pass walks the graph no
  second time.

The differential tests (tests/core/test_fast_path.py) hold both paths to identical results.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opgraph import gcpolicy
from opgraph.core import passes, rules, source
from opgraph.core.passes import check_grads, restore
from opgraph.opdef import OpDef


class Sweep(enum.IntEnum):
    """How the backward sweep calls an op's gradient rule."""

    GENERAL = 0  # with the inputs' data as a list and the attributes: any other op
    UNARY = 1  # one input, no attributes: ``(da,) = grad(a, out)``
    BINARY = 2  # two inputs, no attributes: ``da, db = grad(a, b, out)``

    @classmethod
    def of(cls, op: OpDef) -> Sweep:
        """The sweep ``op`` takes."""
        if op.attrs or op.arity > 2:
            return cls.GENERAL
        return cls.UNARY if op.arity == 1 else cls.BINARY


_UNARY, _BINARY = int(Sweep.UNARY), int(Sweep.BINARY)  # plain ints compare fastest
_sweeps: dict[OpDef, int] = {}  # the installed ops' sweeps (others are looked up as they come)


def prepare(ops: Iterator[OpDef] | list[OpDef]) -> None:
    """Note the sweep of every op of a newly installed table (`opgraph.core.optable`)."""
    _sweeps.clear()
    for op in ops:
        _sweeps[op] = int(Sweep.of(op))


def binary_operator(op: OpDef, symbol: str, reflected: bool, *, cls: type,
                    slow: Callable[..., Any], operand: Callable[[Any, str], Any]
                    ) -> Callable[[Any, Any], Any]:
    """``cls.__mul__`` and friends: ``op`` over self and other (swapped if ``reflected``).

    ``slow(op, inputs, attrs)`` is the reference path, for an input of a graph (of a subclass
    of ``cls``: `opgraph.core.GraphValue`); ``operand`` makes a number into a leaf.
    """
    forward = op.forward
    new = object.__new__

    def operator(self: Any, other: Any) -> Any:
        if type(other) is not cls:
            other = operand(other, symbol)  # a number becomes a leaf
        if reflected:
            a, b = other, self
        else:
            a, b = self, other
        if type(a) is not cls or type(b) is not cls or source.tracking:  # a graph's value
            return slow(op, (a, b), None)
        try:
            out = forward(a.data, b.data)
        except Exception as exc:
            raise rules.forward_failed(op, (a, b), exc) from exc
        if type(out) is not float:
            out = rules.checked_result(out, op, (a, b))
        node = new(cls)
        node.data = out
        node.grad = 0.0
        node._inputs = (a, b)
        node._opdef = op
        return node

    return operator


def unary_operator(op: OpDef, *, cls: type, slow: Callable[..., Any]) -> Callable[[Any], Any]:
    """``cls.tanh`` and friends: the one-input ``op`` over self (as in `binary_operator`)."""
    forward = op.forward
    new = object.__new__

    def method(self: Any) -> Any:
        if type(self) is not cls or source.tracking:
            return slow(op, (self,), None)
        try:
            out = forward(self.data)
        except Exception as exc:
            raise rules.forward_failed(op, (self,), exc) from exc
        if type(out) is not float:
            out = rules.checked_result(out, op, (self,))
        node = new(cls)
        node.data = out
        node.grad = 0.0
        node._inputs = (self,)
        node._opdef = op
        return node

    return method


def _no_graph_backward(root: Any, create_graph: object) -> None:
    raise RuntimeError("opgraph.core.higher is not loaded")  # (it is, with opgraph.core)


graph_backward: Callable[[Any, object], None] = _no_graph_backward
"""``backward(create_graph=True)``: `opgraph.core.higher.backward_graph`, which puts itself
here (it builds on `opgraph.core.value`, which builds on this module)."""


def backward(self: Any, create_graph: bool = False) -> None:
    """Backpropagate: every computed node's ``grad`` becomes d self / d node, and every leaf's
    ``grad`` grows by d self / d leaf (leaves accumulate; see `zero_grad`). Iterative.

    If a gradient rule fails, every ``grad`` is restored and `GradRuleError` names the op and
    the node. (`topological_order` and `backward_over` fused: see the module's docstring.)
    With ``create_graph=True`` the gradients are nodes instead of floats, made by the ops'
    graph rules (`graph_backward`), so that they can be differentiated again.
    """
    if create_graph:
        graph_backward(self, create_graph)
        return
    if self._opdef is None:  # a leaf: d self / d self is 1, and nothing lies below it
        self.grad += 1.0
        return
    if passes.remembering:
        _backward_remembered(self)
        return
    order: list[Any] = []
    saved = {self: self.grad}  # the nodes seen so far, each with its grad from before
    stack: list[tuple[Any, Iterator[Any]]] = []  # the nodes above `node`, with inputs to visit
    emit = order.append
    deep = gcpolicy.DEEP
    paused = False
    node, pending = self, iter(self._inputs)  # a node and its inputs not yet visited
    try:
        while True:
            for child in pending:
                if child not in saved:
                    saved[child] = child.grad
                    if child._inputs:
                        stack.append((node, pending))
                        if len(stack) == deep and not paused:
                            gcpolicy.pause()  # a deep walk: its stack would set off collections
                            paused = True
                        node, pending = child, iter(child._inputs)
                        break
                    emit(child)  # a leaf: done at once, no stack entry (often half the nodes)
            else:
                emit(node)  # only computed nodes are stacked: zero each before the sweep
                node.grad = 0.0
                if not stack:
                    break
                node, pending = stack.pop()
        _sweep(order, saved, self)
    finally:
        if paused:
            gcpolicy.release()


def _backward_remembered(self: Any) -> None:
    """`backward`'s walk that also notes where each input is, as `structure_order` does (-1 a
    new input, its position one placed before, -2 closing a computed node); kept in
    `opgraph.core.passes` once the sweep is done (`keep_walk`). A copy of `backward`'s walk
    rather than a flag tested in it: the plain pass, the engine's hottest loop, pays nothing;
    tests/core/test_structure_order.py holds the two, and `structure_order`, to one result."""
    passes.keep_walk(None, [], [])
    order: list[Any] = []
    saved = {self: self.grad}
    position: dict[Any, int] = {}
    marks: list[int] = []
    mark = marks.append
    stack: list[tuple[Any, Iterator[Any]]] = []
    emit = order.append
    deep = gcpolicy.DEEP
    paused = False
    count = 0
    node, pending = self, iter(self._inputs)
    try:
        while True:
            for child in pending:
                at = position.get(child)
                if at is None:
                    mark(-1)
                    saved[child] = child.grad
                    if child._inputs:
                        stack.append((node, pending))
                        if len(stack) == deep and not paused:
                            gcpolicy.pause()
                            paused = True
                        node, pending = child, iter(child._inputs)
                        break
                    position[child] = count
                    count += 1
                    emit(child)
                    continue
                mark(at)
            else:
                position[node] = count
                count += 1
                emit(node)
                mark(-2)
                node.grad = 0.0
                if not stack:
                    break
                node, pending = stack.pop()
        _sweep(order, saved, self)
    finally:
        if paused:
            gcpolicy.release()
    passes.keep_walk(self, order, marks)


def backward_over(order: Sequence[Any], root: Any) -> None:
    """`opgraph.core.passes.backward_over`, fast: the backward pass over ``order`` (a
    topological order ending at ``root``), with the same results and errors."""
    saved = {node: node.grad for node in order}
    for node in order:
        if node._opdef is not None:
            node.grad = 0.0
    _sweep(order, saved, root)


def _sweep(order: Sequence[Any], saved: dict[Any, float], root: Any) -> None:
    """The reverse sweep, computed nodes of ``order`` already zeroed; ``saved`` maps every node
    to its ``grad`` from before, restored if a gradient rule fails."""
    if root._opdef is None:
        root.grad += 1.0
    else:
        root.grad = 1.0
    sweeps = _sweeps
    odd = False
    node = root
    try:
        for node in reversed(order):
            op = node._opdef
            if op is None:
                # A leaf's grad is final here (its users all came first). A rule that returns a
                # complex number or an array taints every grad below it, leaves included, so
                # checking the leaves' types finds it; `check_grads` names the rule.
                if type(node.grad) is not float:
                    odd = True
                continue
            try:
                kind = sweeps[op]
            except KeyError:  # an op applied without being installed
                kind = Sweep.of(op)
            if kind == _BINARY:
                a, b = node._inputs
                da, db = op.grad(a.data, b.data, node.data)
                g = node.grad
                a.grad += g * da
                b.grad += g * db
            elif kind == _UNARY:
                (a,) = node._inputs
                (da,) = op.grad(a.data, node.data)
                a.grad += node.grad * da
            else:
                inputs, attrs = node._inputs, node._attrs
                args = [v.data for v in inputs]
                local = op.grad(*args, node.data, **attrs) if attrs else op.grad(*args, node.data)
                g = node.grad
                for v, d in zip(inputs, local, strict=True):
                    v.grad += g * d
    except Exception as exc:
        restore(saved)
        raise rules.grad_failed(node, exc) from exc
    if odd:
        check_grads(order, saved)
