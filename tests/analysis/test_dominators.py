"""opgraph.dominators against networkx: immediate dominators of random DAGs (any labels, any
shape), gradient dominators against the previous networkx-based computation, and the shape that
made networkx quadratic (a long accumulation chain with shared leaves)."""

from __future__ import annotations

import random

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opgraph import Graph
from opgraph.analysis import to_networkx
from opgraph.dominators import (
    DominatorTree,
    dag_dominator_tree,
    gradient_dominators,
    gradient_dominators_csr,
    immediate_dominators,
)
from opgraph.structure import structure


@st.composite
def dags(draw, max_nodes: int = 40) -> nx.DiGraph:
    """A random DAG: edges only from a lower to a higher position, then the node names
    shuffled (so names are not a topological order), with some isolated nodes."""
    n = draw(st.integers(1, max_nodes))
    density = draw(st.sampled_from([0.05, 0.15, 0.4]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    names = list(range(n))
    rng.shuffle(names)
    g = nx.DiGraph()
    g.add_nodes_from(names)
    for j in range(n):
        for i in range(j):
            if rng.random() < density:
                g.add_edge(names[i], names[j])
    return g


def networkx_idom(g: nx.DiGraph, start) -> dict:
    idom = nx.immediate_dominators(g, start)
    idom[start] = start  # some networkx versions leave the start out
    return idom


@settings(max_examples=300, deadline=None)
@given(dags(), st.data())
def test_immediate_dominators_equal_networkx_on_random_dags(g: nx.DiGraph, data) -> None:
    start = data.draw(st.sampled_from(sorted(g)))
    assert immediate_dominators(g, start) == networkx_idom(g, start)


def old_gradient_dominators(g: nx.DiGraph, root: int, leaves: list[int]) -> list[int]:
    """The computation analysis.py made before this module (networkx's dominators, then the
    leaves below each node counted in id order)."""
    idom = networkx_idom(g.reverse(copy=False), root)
    reaching = [leaf for leaf in leaves if leaf in idom and leaf != root]
    if not reaching:
        return []
    below = dict.fromkeys(idom, 0)
    for leaf in reaching:
        below[leaf] += 1
    for node in range(min(idom), max(idom) + 1):
        if node != root and node in idom:
            below[idom[node]] += below[node]
    return [n for n in range(min(idom), max(idom) + 1)
            if below.get(n) == len(reaching) and n != root and n not in set(reaching)]


@st.composite
def flow_graphs(draw) -> tuple[nx.DiGraph, int, list[int]]:
    """A DAG whose node ids are a topological order, a root, and its sources as leaves."""
    n = draw(st.integers(1, 40))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([0.05, 0.15, 0.4]))
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    for j in range(n):
        for i in range(j):
            if rng.random() < density:
                g.add_edge(i, j)
    root = draw(st.integers(0, n - 1))
    leaves = [v for v in g if g.in_degree(v) == 0]
    if draw(st.booleans()):  # sometimes only some of the leaves, or one not in the graph
        leaves = [v for v in leaves if rng.random() < 0.5] + [n + 5]
    return g, root, leaves


@settings(max_examples=300, deadline=None)
@given(flow_graphs())
def test_gradient_dominators_equal_the_networkx_computation(case) -> None:
    g, root, leaves = case
    assert gradient_dominators(g, root, leaves) == old_gradient_dominators(g, root, leaves)


def accumulation(terms: int, shared: int, seed: int = 0) -> tuple[Graph, int]:
    """``acc = acc + w[i % shared] * x`` for ``terms`` terms: a long chain, shared leaves."""
    rng = random.Random(seed)
    g = Graph("acc")
    ws = [g.leaf(rng.uniform(-1, 1), f"w{i}") for i in range(shared)]
    x = g.leaf(0.5, "x")
    acc = g.leaf(0.0, "acc0")
    for i in range(terms):
        acc = acc + ws[rng.randrange(shared) if seed else i % shared] * x
    return g, acc.id


@pytest.mark.parametrize(("terms", "shared", "seed"), [(1, 1, 0), (50, 7, 0), (300, 11, 3),
                                                       (200, 1, 0), (120, 40, 9)])
def test_accumulation_chains_with_shared_leaves(terms: int, shared: int, seed: int) -> None:
    g, root = accumulation(terms, shared, seed)
    nxg = to_networkx(g)
    leaves = [v.id for v in g.leaves]
    expected = old_gradient_dominators(nxg, root, leaves)
    assert gradient_dominators(nxg, root, leaves) == expected
    s = structure(g)
    use_ptr, users = s.users()
    assert gradient_dominators_csr(len(g), root, use_ptr.tolist(), users.tolist(), leaves,
                                   s.is_leaf.tolist()) == expected
    # every term's product and the chain below it feed the root: the chain nodes after the last
    # use of a leaf dominate; here the leaves are used all along, so only the last add does
    assert immediate_dominators(nxg.reverse(copy=False), root) == networkx_idom(
        nxg.reverse(copy=False), root)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 5), st.integers(0, 1000), st.data())
def test_chains_with_shared_leaves_and_side_branches(terms, shared, seed, data) -> None:
    """Chains where some terms skip the shared leaves, and the root is anywhere on the chain."""
    rng = random.Random(seed)
    g = Graph("chain")
    ws = [g.leaf(rng.uniform(-1, 1)) for _ in range(shared)]
    acc = g.leaf(1.0)
    for _ in range(terms):
        term = ws[rng.randrange(shared)]
        acc = acc + (term * term if rng.random() < 0.3 else term.tanh())
        if rng.random() < 0.2:
            acc = acc.exp()
    root = data.draw(st.integers(0, len(g) - 1))
    nxg = to_networkx(g)
    leaves = [v.id for v in g.leaves]
    assert gradient_dominators(nxg, root, leaves) == old_gradient_dominators(nxg, root, leaves)


def test_tree_growth_and_queries_on_a_path_and_a_broom() -> None:
    """A path of 1,000 nodes with a fork at every tenth: depths, ancestors and paths."""
    n = 1000
    tree = DominatorTree(n + 100, 0)
    for v in range(1, n):
        tree.add(v, v - 1)
    for k in range(100):  # a branch off node 10k
        tree.add(n + k, 10 * k)
    assert tree.depth[n - 1] == n - 1
    assert tree.lca(n - 1, 500) == 500
    assert tree.lca(n + 7, n + 93) == 70
    assert tree.lca(n + 50, 499) == 499
    assert tree.lca(n + 50, 501) == 500
    assert tree.path_to_start(n + 3) == [n + 3, 30, *range(29, -1, -1)]


def test_unreached_nodes_and_bad_input() -> None:
    # 0 -> 1 -> 2; 3 -> 2 (3 is not reached from 0)
    pred_ptr = [0, 0, 1, 3, 3]
    preds = [0, 1, 3]
    tree = dag_dominator_tree(4, [0, 3, 1, 2], pred_ptr, preds)
    assert tree.parent == [0, 0, 1, -1]
    with pytest.raises(ValueError, match="empty"):
        dag_dominator_tree(4, [], pred_ptr, preds)
    with pytest.raises(ValueError, match="not one of the 4 nodes"):
        DominatorTree(4, 4)
    with pytest.raises(ValueError, match="not in the graph"):
        immediate_dominators(nx.DiGraph([(0, 1)]), 7)
    with pytest.raises(ValueError, match="cycle"):
        immediate_dominators(nx.DiGraph([(0, 1), (1, 2), (2, 1)]), 0)
    with pytest.raises(ValueError, match="on a cycle"):
        immediate_dominators(nx.DiGraph([(0, 1), (1, 0)]), 0)
