"""The rewrite before grouping: chains of ``add`` nodes become n-ary sums.

A chain ``s_1 = t_0 + t_1``, ``s_2 = s_1 + t_2``, ..., ``s_n = s_{n-1} + t_n``, where each
``s_k`` below the last is used once (by ``s_{k+1}``), is one sum of ``n + 1`` terms. A term
that is a product used only there (a neuron's ``w_i * x_i``) is fused into the sum: the sum
reads the product's two operands. Nothing else is assumed about the graph: the rewrite sees
only which nodes are sums and products (opgraph's own ``add`` and ``mul``, recognised by their
rules, see `sum_and_product_kinds`) and how often each node is used, so it applies around any
plugin op, wherever the chains are.

Exactness: the compiled sum adds the terms in the order the eager engine does, one after the
other from the first (``t_0 + t_1``, then ``+ t_2``, ...), so its result is the eager result to
the last bit; a fused product is the same IEEE multiplication. Both input orders of an ``add``
continue a chain (``a + b == b + a`` exactly in IEEE arithmetic); where both inputs are chains
used once, the first continues this chain and the second becomes a sum of its own, which keeps
the order of every addition.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

from opgraph.opdef import OpDef

OTHER, ADD, MUL = 0, 1, 2


def op_kind(op: OpDef | None) -> int:
    """`ADD` for an op computing ``a + b`` with gradient ``(1, 1)``, `MUL` for ``a * b`` with
    gradient ``(b, a)`` (opgraph's own ``add`` and ``mul``: their forward rules are Python's
    operators, and their gradient rules are checked at one point), else `OTHER`."""
    if op is None or op.arity != 2 or op.attrs:
        return OTHER
    try:
        if op.forward is operator.add and tuple(op.grad(2.0, 3.0, 5.0)) == (1.0, 1.0):
            return ADD
        if op.forward is operator.mul and tuple(op.grad(2.0, 3.0, 6.0)) == (3.0, 2.0):
            return MUL
    except Exception:  # a rule that fails on plain numbers: not one the rewrite knows
        return OTHER
    return OTHER


@dataclass
class Sum:
    """One n-ary sum: ``out`` (the chain's last add, which stays) and, per term in the order
    of addition, its operands ``a[k] * b[k]`` (``b[k]`` is `-1` for a term read as it is),
    the fused product node (``products[k]``, -1 if none) and the add node whose value is the
    sum of terms ``0..k`` (``chain[k]``, -1 for the first term and for ``out`` itself)."""

    out: int
    a: list[int]
    b: list[int]
    products: list[int]
    chain: list[int]

    def __len__(self) -> int:
        return len(self.a)


def find_sums(kinds: Sequence[int], inputs: Sequence[tuple[int, ...]],
              uses: Sequence[int]) -> tuple[list[Sum], bytearray]:
    """The sums of a graph given, per node in topological order, its kind (`op_kind`), its
    input positions and how many times it is used as an input. Returns the sums (in the order
    of their ``out``) and a mask of the nodes they remove (the chains' inner adds and the
    fused products)."""
    n = len(kinds)
    removed = bytearray(n)
    chain_input: dict[int, int] = {}
    adds = [i for i in range(n) if kinds[i] == ADD]
    for i in adds:
        a, b = inputs[i]
        if kinds[a] == ADD and uses[a] == 1:
            chain_input[i] = a
            removed[a] = 1
        elif kinds[b] == ADD and uses[b] == 1:
            chain_input[i] = b
            removed[b] = 1
    sums: list[Sum] = []
    for i in adds:
        if removed[i]:
            continue
        levels = [i]  # the chain from its last add down to its first
        j = i
        while j in chain_input:
            j = chain_input[j]
            levels.append(j)
        first = levels[-1]
        terms = list(inputs[first])
        chain = [-1, first]
        for level in reversed(levels[:-1]):
            a, b = inputs[level]
            terms.append(b if chain_input[level] == a else a)
            chain.append(level)
        chain[-1] = -1  # the last add is the sum's own node
        products = [t if kinds[t] == MUL and uses[t] == 1 else -1 for t in terms]
        if len(levels) == 1 and products[0] < 0 and products[1] < 0:
            continue  # one add of two plain terms: it stays an add
        a_side, b_side = [], []
        for t, p in zip(terms, products, strict=True):
            if p < 0:
                a_side.append(t)
                b_side.append(-1)
            else:
                x, y = inputs[p]
                a_side.append(x)
                b_side.append(y)
                removed[p] = 1
        sums.append(Sum(i, a_side, b_side, products, chain))
    return sums, removed
