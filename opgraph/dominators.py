"""Dominators of a DAG in near-linear time, and the gradient dominators of a graph.

In a flow graph with a start node, ``d`` dominates ``v`` when every path from the start to ``v``
passes through ``d``; the immediate dominator of ``v`` is the closest such ``d``, and these form
the dominator tree. On a DAG, visited in a topological order from the start, the immediate
dominator of ``v`` is the lowest common ancestor, in the tree built so far, of ``v``'s
predecessors (every path to ``v`` comes through one of them, and their common dominators are
exactly their common ancestors in the tree).

The lowest common ancestors are found with jump pointers (Myers' skew-binary scheme): each node
stores its parent, its depth and one jump pointer, set in constant time when the node joins the
tree, and an ancestor query takes O(log depth) steps. The whole tree costs
O(nodes + edges * log depth), on any DAG shape. (The iterative algorithm of Cooper, Harvey and
Kennedy, which networkx's ``immediate_dominators`` uses, walks up the tree one parent at a time:
on a long accumulation chain whose leaves are shared along it, that is quadratic.)

Gradients flow from a root back to the leaves: the nodes every gradient path passes through are
the dominators, in the reversed graph started at the root, of every leaf that reaches the root.
They are the nodes on the tree path from the root down to the lowest common ancestor of those
leaves (`gradient_dominators`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

UNREACHED = -1


class DominatorTree:
    """A dominator tree over nodes ``0 .. n-1`` with constant-time growth and O(log) queries.

    ``parent[v]`` is the immediate dominator of ``v`` (``UNREACHED`` for a node the start does
    not reach; the start is its own parent), ``depth[v]`` its depth (the start's is 0).
    """

    __slots__ = ("depth", "jump", "parent", "start")

    def __init__(self, n: int, start: int) -> None:
        if not 0 <= start < n:
            raise ValueError(f"start node {start} is not one of the {n} nodes")
        self.parent = [UNREACHED] * n
        self.depth = [0] * n
        self.jump = [0] * n
        self.start = start
        self.parent[start] = start
        self.jump[start] = start

    def add(self, v: int, parent: int) -> None:
        """Put ``v`` in the tree under ``parent`` (already in it)."""
        depth, jump = self.depth, self.jump
        self.parent[v] = parent
        depth[v] = depth[parent] + 1
        j = jump[parent]
        if depth[parent] - depth[j] == depth[j] - depth[jump[j]]:
            jump[v] = jump[j]
        else:
            jump[v] = parent

    def reached(self, v: int) -> bool:
        """Whether ``v`` is in the tree (the start reaches it)."""
        return self.parent[v] != UNREACHED

    def lca(self, a: int, b: int) -> int:
        """The lowest common ancestor of ``a`` and ``b`` (both in the tree): their nearest
        common dominator."""
        parent, depth, jump = self.parent, self.depth, self.jump
        if depth[a] < depth[b]:
            a, b = b, a
        target = depth[b]
        while depth[a] > target:
            j = jump[a]
            a = j if depth[j] >= target else parent[a]
        while a != b:
            ja, jb = jump[a], jump[b]
            if ja != jb:
                a, b = ja, jb
            else:
                a, b = parent[a], parent[b]
        return a

    def path_to_start(self, v: int) -> list[int]:
        """``v``, its immediate dominator, and so on up to the start (included)."""
        parent = self.parent
        path = [v]
        while v != self.start:
            v = parent[v]
            path.append(v)
        return path


def dag_dominator_tree(n: int, order: Iterable[int], pred_ptr: Sequence[int],
                       preds: Sequence[int]) -> DominatorTree:
    """The dominator tree of a DAG over nodes ``0 .. n-1``.

    ``order`` is a topological order of (at least) the nodes the start reaches, the start first;
    nodes of ``order`` the start does not reach are skipped. The predecessors of ``v`` are
    ``preds[pred_ptr[v]:pred_ptr[v + 1]]`` (a CSR layout; repeats are fine). That ``order`` is
    topological is the caller's promise, not checked: a predecessor placed after its node
    would be taken for unreached.
    """
    it = iter(order)
    try:
        start = next(it)
    except StopIteration:
        raise ValueError("dag_dominator_tree: the order is empty (no start node)") from None
    tree = DominatorTree(n, start)
    parent, depth, jump, lca = tree.parent, tree.depth, tree.jump, tree.lca
    for v in it:
        lo, hi = pred_ptr[v], pred_ptr[v + 1]
        if hi - lo == 1:  # one predecessor (most nodes): it is the immediate dominator
            best = preds[lo]
            if parent[best] == UNREACHED:
                continue
        else:
            best = UNREACHED
            for u in preds[lo:hi]:
                if parent[u] == UNREACHED:
                    continue  # not reached from the start
                best = u if best == UNREACHED else (best if u == best else lca(best, u))
            if best == UNREACHED:
                continue
        # tree.add(v, best), written out: this loop is the cost of the whole computation
        parent[v] = best
        depth[v] = depth[best] + 1
        j = jump[best]
        jump[v] = jump[j] if depth[best] - depth[j] == depth[j] - depth[jump[j]] else best
    return tree


def immediate_dominators(graph: Any, start: Hashable) -> dict[Hashable, Hashable]:
    """networkx's ``immediate_dominators(graph, start)`` for a DAG, in near-linear time.

    ``graph`` is a networkx DiGraph (anything with ``predecessors``, ``successors`` and node
    iteration). Returns ``{node: its immediate dominator}`` for every node ``start`` reaches,
    the start mapped to itself. A graph with a cycle among the reached nodes raises
    `ValueError` (this is for DAGs; networkx's own function handles any graph).
    """
    if start not in graph:
        raise ValueError(f"immediate_dominators: the start node {start!r} is not in the graph")
    index = {node: i for i, node in enumerate(graph)}
    nodes = list(index)
    order = _reached_topological_order(graph, start, index)
    pred_ptr = [0] * (len(nodes) + 1)
    preds: list[int] = []
    for i, node in enumerate(nodes):
        preds.extend(index[p] for p in graph.predecessors(node))
        pred_ptr[i + 1] = len(preds)
    tree = dag_dominator_tree(len(nodes), order, pred_ptr, preds)
    return {nodes[v]: nodes[tree.parent[v]] for v in order}


def _reached_topological_order(graph: Any, start: Hashable, index: dict) -> list[int]:
    """Kahn's order of the nodes ``start`` reaches, as indices; a cycle raises ValueError."""
    reached = {start}
    stack = [start]
    while stack:
        for succ in graph.successors(stack.pop()):
            if succ not in reached:
                reached.add(succ)
                stack.append(succ)
    waiting = {node: sum(1 for p in graph.predecessors(node) if p in reached)
               for node in reached}
    if waiting[start]:
        raise ValueError(f"immediate_dominators: the start node {start!r} is on a cycle")
    order = []
    ready = [start]
    while ready:
        node = ready.pop()
        order.append(index[node])
        for succ in graph.successors(node):
            waiting[succ] -= 1
            if not waiting[succ]:
                ready.append(succ)
    if len(order) != len(reached):
        raise ValueError("immediate_dominators: the graph has a cycle among the nodes the "
                         "start reaches (this function is for DAGs)")
    return order


def common_dominators(tree: DominatorTree, targets: Iterable[int]) -> list[int]:
    """The nodes (other than the start) that dominate every reached node of ``targets``,
    nearest the start last; empty when no target is reached."""
    lowest = UNREACHED
    for t in targets:
        if tree.reached(t) and t != tree.start:
            lowest = t if lowest == UNREACHED else tree.lca(lowest, t)
    if lowest == UNREACHED:
        return []
    return tree.path_to_start(lowest)[:-1]


def gradient_dominators_csr(n: int, root: int, use_ptr: Sequence[int], users: Sequence[int],
                            leaves: Iterable[int], is_leaf: Sequence[bool]) -> list[int]:
    """`gradient_dominators` on nodes ``0 .. n-1`` whose ids are a topological order (every
    node's inputs have smaller ids), given who uses each node in CSR form: the users of ``v``
    are ``users[use_ptr[v]:use_ptr[v + 1]]``. ``is_leaf`` excludes leaves from the result.
    """
    tree = gradient_tree(n, root, use_ptr, users)
    found = common_dominators(tree, leaves)
    return sorted(v for v in found if not is_leaf[v])


def gradient_tree(n: int, root: int, use_ptr: Sequence[int], users: Sequence[int]
                  ) -> DominatorTree:
    """The dominator tree of the gradient flow from ``root`` (the reversed graph), for ids in
    topological order; a node is reached exactly when the root depends on it."""
    return dag_dominator_tree(n, range(root, -1, -1), use_ptr, users)


def gradient_dominators(g: Any, root: Hashable, leaves: Sequence[Hashable]) -> list[Any]:
    """Nodes other than ``root`` that every path from every leaf to ``root`` passes through.

    ``g`` is a networkx DiGraph (edges input -> user). Gradients flow from the root back to the
    leaves; these are the nodes all of it goes through: in the dominator tree of the reversed
    graph (rooted at ``root``), the nodes whose subtree holds every leaf of ``leaves`` that
    reaches the root, leaves themselves left out. Sorted. Near-linear on any DAG shape.
    """
    reverse = g.reverse(copy=False)
    idom = immediate_dominators(reverse, root)
    index = {node: i for i, node in enumerate(idom)}
    nodes = list(idom)
    tree = DominatorTree(len(nodes), index[root])
    for node in nodes:  # reached in a topological order: each parent is placed before its child
        if node != root:
            tree.add(index[node], index[idom[node]])
    leaf_set = set(leaves)
    targets = [index[leaf] for leaf in leaves if leaf in index]
    return sorted(nodes[v] for v in common_dominators(tree, targets)
                  if nodes[v] not in leaf_set)
