"""The passes over a graph, written plainly: the reference for `opgraph.core.fast`.

`topological_order` and `backward_over` are micrograd's ``backward()`` taken apart and made
iterative (no recursion, so a chain of a million ops is fine); `recompute` and `evaluate` are
the forward pass. `Value.backward` is the fast version of the two first, fused
(`opgraph.core.fast`); the differential tests hold the two paths to identical results.
`structure_order` is `topological_order` with a key that tells graphs of the same structure
(and other values) apart from the others.
"""

from __future__ import annotations

import math
import operator
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from opgraph.core import rules
from opgraph.errors import GraphMismatchError


def topological_order(root: Any) -> list[Any]:
    """Every node ``root`` depends on, inputs before the nodes that use them; no recursion."""
    order: list[Any] = []
    seen = {root}
    stack: list[tuple[Any, Iterator[Any]]] = []
    node, pending = root, iter(root._inputs)  # a node and its inputs not visited yet
    while True:
        for child in pending:
            if child not in seen:
                seen.add(child)
                if not child._inputs:  # a leaf: placed at once, no stack entry
                    order.append(child)
                    continue
                stack.append((node, pending))
                node, pending = child, iter(child._inputs)
                break
        else:  # every input of `node` is placed: place it
            order.append(node)
            if not stack:
                return order
            node, pending = stack.pop()


_OPDEF, _ATTRS = operator.attrgetter("_opdef"), operator.attrgetter("_attrs")
_LABEL, _SOURCE = operator.attrgetter("label"), operator.attrgetter("_loc")


remembering = False
"""Whether `Value.backward` keeps its walk for `structure_order` (see `remember_walks`)."""

_last_walk: tuple[Any, list[Any], list[int]] | None = None  # (root, order, marks), until taken


def remember_walks(enabled: bool) -> bool:
    """Switch on (or off) keeping the walk of the last backward pass for `structure_order` of
    its root, which then walks the graph no second time; returns the old state. Process-wide
    (a client that publishes training steps turns it on). While on, a backward pass notes
    each input's position as it walks (a little more work), and keeps its graph alive until
    the next pass or until `structure_order` takes it."""
    global remembering, _last_walk
    old, remembering = remembering, bool(enabled)
    if not remembering:
        _last_walk = None
    return old


def keep_walk(root: Any, order: list[Any], marks: list[int]) -> None:
    """Keep a backward pass's walk of ``root`` (None: forget the last one); see
    `remember_walks`. ``marks`` are `structure_order`'s."""
    global _last_walk
    _last_walk = None if root is None else (root, order, marks)


def _taken_walk(root: Any) -> tuple[list[Any], list[int]] | None:
    global _last_walk
    walk = _last_walk
    if walk is None or walk[0] is not root:
        return None
    _last_walk = None
    return walk[1], walk[2]


def structure_order(root: Any) -> tuple[list[Any], tuple[Any, ...]]:
    """`topological_order` of ``root``, and a key to what that graph is apart from its values:
    each node's op, attributes, label and source, and where its inputs are in the order.

    Two graphs give equal keys exactly when they have the same structure, so that one's values
    can stand for the other's node for node (a training step's graph, built again). The key
    holds no node, and compares in C (``==`` of lists and arrays). It costs one walk: each
    input, met in the walk, is recorded as ``-1`` when it is new (placed by the walk itself, so
    its position follows from the rest) or as its position when it was placed before; ``-2``
    closes each computed node. Right after ``root.backward()`` with `remember_walks` on, that
    pass's walk is used instead.
    """
    walked = _taken_walk(root)
    if walked is not None:  # the backward pass just walked it (see `remember_walks`)
        return walked[0], _key(*walked)
    order: list[Any] = []
    place = order.append
    position: dict[Any, int] = {}  # placed nodes (a node whose inputs are being walked cannot
    # be met again: that would be a cycle)
    placed = position.get
    wiring: list[int] = []  # (a list takes ints quicker than an array; made one at the end)
    mark = wiring.append
    stack: list[tuple[Any, Iterator[Any]]] = []
    push, pop = stack.append, stack.pop
    count = 0
    node, pending = root, iter(root._inputs)
    while True:
        for child in pending:
            at = placed(child)
            if at is None:
                mark(-1)
                if not child._inputs:  # a leaf: placed at once, no stack entry
                    position[child] = count
                    count += 1
                    place(child)
                    continue
                push((node, pending))
                node, pending = child, iter(child._inputs)
                break
            mark(at)
        else:  # every input of `node` is placed: place it
            position[node] = count
            count += 1
            place(node)
            mark(-2)
            if not stack:
                return order, _key(order, wiring)
            node, pending = pop()


def _key(order: list[Any], wiring: list[int]) -> tuple[Any, ...]:
    # A list per field (a tuple per node would wake the cyclic collector); the attributes only
    # when an op of the graph takes some.
    ops = list(map(_OPDEF, order))
    attrs = (list(map(_ATTRS, order))
             if any(op is not None and op.attrs for op in set(ops)) else None)
    return (array("q", wiring), ops, attrs, list(map(_LABEL, order)),
            list(map(_SOURCE, order)))


def backward_over(order: Sequence[Any], root: Any) -> None:
    """Backward pass over ``order`` (a topological order ending at ``root``).

    Sets ``grad`` of every computed node to d root / d node and adds d root / d leaf to the
    ``grad`` of every leaf (leaves accumulate, as in PyTorch). If a gradient rule fails, every
    ``grad`` is restored and `GradRuleError` names the op and the node.
    """
    saved = {node: node.grad for node in order}
    for node in order:
        if node._opdef is not None:
            node.grad = 0.0
    if root._opdef is None:
        root.grad += 1.0
    else:
        root.grad = 1.0
    node = root
    try:
        for node in reversed(order):
            op = node._opdef
            if op is None:
                continue
            inputs, attrs = node._inputs, node._attrs
            args = [v.data for v in inputs]
            local = op.grad(*args, node.data, **attrs) if attrs else op.grad(*args, node.data)
            for v, d in zip(inputs, local, strict=True):
                v.grad += node.grad * d
    except Exception as exc:
        restore(saved)
        raise rules.grad_failed(node, exc) from exc
    check_grads(order, saved)


def check_grads(order: Sequence[Any], saved: Mapping[Any, float]) -> None:
    """After a backward pass: refuse its gradients if a rule returned what is not a real number
    (restoring every grad from ``saved`` and raising `GradRuleError`), accept them otherwise.

    A partial that is not a real number (a complex number, an array) taints every grad below
    it, so the grads themselves show it; `math.fsum` checks them at C speed, and only when it
    refuses them are the rules run again to name the one at fault.
    """
    try:
        math.fsum(map(_grad_of, order))
    except (TypeError, ValueError, OverflowError):  # or inf - inf, or an overflow: look closer
        culprit = rules.non_number_rule(order)
        if culprit is not None:
            restore(saved)
            raise rules.grad_failed(*culprit) from None


def restore(saved: Mapping[Any, float]) -> None:
    """Put every ``grad`` back as ``saved`` has it."""
    for value, before in saved.items():
        value.grad = before


_grad_of = operator.attrgetter("grad")


def dependents(root: Any, later: Iterable[Any]) -> list[Any]:
    """``root`` and the nodes of ``later`` (in its order, which is topological) that depend on
    it, directly or through others of them."""
    dirty = {root}
    affected = [root]
    for node in later:
        for v in node._inputs:
            if v in dirty:
                dirty.add(node)
                affected.append(node)
                break
    return affected


def free_values(root: Any, owner: Any) -> list[Any]:
    """``root`` and the values it depends on that belong to no graph, inputs first, each once:
    what joins ``owner`` with ``root``. The walk stops at ``owner``'s own values (their inputs
    are in it too); `GraphMismatchError` for a value of another graph."""
    fresh: list[Any] = []
    if _owned(root, owner):
        return fresh
    seen = {root}
    stack: list[tuple[Any, Iterator[Any]]] = []
    node, pending = root, iter(root._inputs)
    while True:
        for child in pending:
            if child not in seen and not _owned(child, owner):
                seen.add(child)
                stack.append((node, pending))
                node, pending = child, iter(child._inputs)
                break
        else:
            fresh.append(node)
            if not stack:
                return fresh
            node, pending = stack.pop()


def _owned(value: Any, owner: Any) -> bool:
    """True for a value of ``owner``, False for a free one; raises for another graph's."""
    graph = value._graph
    if graph is None:
        return False
    if graph is not owner:
        raise GraphMismatchError(
            f"{rules.describe(value)} belongs to graph {graph.name!r}, not {owner.name!r}")
    return True


def recompute(order: Iterable[Any]) -> None:
    """Forward pass: recompute every non-leaf node of ``order`` from its inputs, in order."""
    for node in order:
        op = node._opdef
        if op is not None:
            node.data = rules.run_forward(op, node._inputs, node._attrs)


def evaluate(order: Sequence[Any], overrides: Mapping[Any, float]) -> dict[Any, float]:
    """Data of every node of ``order`` with some leaves' data replaced; changes no node.

    A rule that fails gives NaN (the numbers are for finite differences, not for keeping).
    """
    values: dict[Any, float] = {}
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
