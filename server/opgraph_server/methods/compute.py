"""Computing on a graph: ``graph.eval``, ``graph.backward``, ``graph.grads``,
``graph.gradcheck``."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import opgraph
from opgraph.core import Value, topological_order
from opgraph.errors import GradRuleError, GraphLimitError, NoGradGraphError
from opgraph.graph import Graph
from opgraph_server.dispatch import Call, method
from opgraph_server.errors import RpcError
from opgraph_server.params import kind, settle

if TYPE_CHECKING:
    from opgraph_server.store import Entry


@method("graph.eval", ("graph", "expression"), ("bindings",), options=("label", "keep"))
async def graph_eval(call: Call, graph: Any, expression: Any, bindings: Any = None,
                     label: Any = "", keep: Any = True) -> dict[str, Any]:
    """Parse an expression into nodes (registered ops only; never Python's eval).

    The new nodes join the shared graph (a new version, seen by every client); with
    ``keep`` false the expression is evaluated on copies and the graph is left as it was.
    """
    from opgraph import expr

    entry = call.entry(graph)
    expression = call.text(expression, "expression", max_length=expr.MAX_LENGTH)
    bindings = {} if bindings in (None, []) else bindings  # Neovim sends {} as []
    if not isinstance(bindings, dict) or not all(isinstance(k, str) for k in bindings):
        raise call.invalid(f"bindings must be a map of names, got {kind(bindings)}")
    label = call.text(label, "label", max_length=10_000)
    keep = call.flag(keep, "keep")
    if not keep and label:
        raise call.invalid("a label names a new node of the graph; with keep false "
                           "nothing is added to it")
    # Parsing a long expression, and looking names up among the labels of a big graph, take
    # a while: then in a worker thread.
    size = max(len(entry.graph.nodes), 20 * len(expression))
    if not keep:
        async with entry.lock.read():
            g = entry.graph

            def evaluate() -> float:
                resolved = _bindings(call, g, expression, bindings)
                copies = {name: Value(v.data, v.label) if isinstance(v, Value) else v
                          for name, v in resolved.items()}
                return float(expr.build(expression, copies)[0].data)

            data = evaluate() if call.small(size) else await call.in_thread(evaluate)
            return {"root": None, "data": data, "leaves": {}, "version": g.version}
    async with entry.lock.write():
        g = entry.graph
        mark = g.checkpoint()

        def build() -> tuple[Value, dict[str, Value]]:
            resolved = _bindings(call, g, expression, bindings)
            root, leaves = expr.build(expression, resolved, graph=g)
            settle(g.nodes[mark[0]:], "graph.eval")
            if label:
                if root.id is not None and root.id < mark[0]:
                    raise call.invalid(
                        f"the expression {expression!r} is the existing node {root.id}; "
                        "a label names a new node only")
                root.label = label
            return root, leaves

        try:
            root, leaves = await call.change(entry, size, build)
        except BaseException:
            if not call.host.stopping:  # (then a worker thread may still be building)
                g.rollback(mark)
            raise
        call.host.changed(entry)
        return {"root": root.id, "data": root.data,
                "leaves": {k: v.id for k, v in leaves.items()}, "version": g.version}


def _bindings(call: Call, g: Graph, expression: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers become new leaves; ``{"id": n}`` is an existing node; unbound names are looked
    up by label in the graph."""
    from opgraph import expr

    resolved: dict[str, Any] = {}
    for name, value in given.items():
        if isinstance(value, dict) and set(value) == {"id"}:
            resolved[name] = g.node(call.integer(value["id"], f"binding {name!r} id"))
        else:
            resolved[name] = call.data(value, f"binding {name!r}")
    for name in expr.parse(expression).names:
        if name not in resolved:
            found = g.find(name)
            if len(found) == 1:
                resolved[name] = found[0]
            elif found:
                ids = ", ".join(str(v.id) for v in found[:10])
                raise call.invalid(f"{name!r} labels {len(found)} nodes (ids {ids}); bind it "
                                   f"to one of them with {{{name!r}: {{\"id\": n}}}}")
    return resolved


@method("graph.backward", ("graph", "root"), options=("create_graph",))
async def graph_backward(call: Call, graph: Any, root: Any,
                         create_graph: Any = False) -> dict[str, Any]:
    """Zero the graph's gradients, then backpropagate from ``root``; with ``create_graph``,
    also add the gradient of ``root`` with respect to each leaf it reaches to the graph, as
    nodes (`_gradient_graph`)."""
    entry = call.entry(graph)
    root = call.integer(root, "root")
    if call.flag(create_graph, "create_graph"):
        async with entry.lock.write():
            reached, grad_ids, added = await _gradient_graph(call, entry, root, None)
            return {"root": root, "reached": len(reached), "grad_ids": grad_ids,
                    "added": added, "version": entry.graph.version}
    async with entry.lock.write():
        reached = await call.change(entry, len(entry.graph.nodes), entry.graph.backward,
                                    root)
        call.host.changed(entry)
        return {"root": root, "reached": len(reached), "version": entry.graph.version}


@method("graph.grads", ("graph", "root", "ids"), options=("create_graph",))
async def graph_grads(call: Call, graph: Any, root: Any, ids: Any,
                      create_graph: Any = False) -> dict[str, Any]:
    """Backpropagate from ``root`` and return the gradient of each of ``ids``; with
    ``create_graph``, also add the gradient of ``root`` with respect to each of ``ids`` to
    the graph, as nodes (`_gradient_graph`)."""
    entry = call.entry(graph)
    root = call.integer(root, "root")
    wanted = call.ids(ids)
    if call.flag(create_graph, "create_graph"):
        async with entry.lock.write():
            _, grad_ids, added = await _gradient_graph(call, entry, root, wanted)
            g = entry.graph
            return {"root": root, "grads": {str(i): g.nodes[i].grad for i in wanted},
                    "grad_ids": grad_ids, "added": added, "version": g.version}
    async with entry.lock.write():
        g = entry.graph
        for i in wanted:
            g.node(i)
        await call.change(entry, len(g.nodes), g.backward, root)
        call.host.changed(entry)
        return {"root": root, "grads": {str(i): g.nodes[i].grad for i in wanted},
                "version": g.version}


GRADIENT_NODES_PER_NODE = 4
"""About how many nodes the gradient graph of a node takes (a mul or two and an add per op
input): what a create_graph pass's size counts, so that a big one runs in a worker thread."""


async def _gradient_graph(call: Call, entry: Entry, root: int,
                          wanted: list[int] | None) -> tuple[list[Value], dict[str, int], int]:
    """``graph.backward``/``graph.grads`` with ``create_graph``, the write lock held: the
    gradient of ``root`` with respect to each of ``wanted`` (every leaf it reaches for None)
    built into the graph (`opgraph.grad`, ``create_graph=True``: nodes labelled ``d o/d x``),
    then the plain backward pass, so every ``grad`` is a float as without the option.

    Returns the nodes the pass reached, ``{str(id): id of its gradient node}`` and how many
    nodes were added. All or nothing: a failure (a rule, the node limit) leaves the graph, its
    version and its gradients as they were."""
    g = entry.graph
    node = g.node(root)
    for i in wanted or ():
        g.node(i)
    mark = g.checkpoint()
    try:
        reached, grad_ids = await call.change(
            entry, GRADIENT_NODES_PER_NODE * len(g.nodes), call.host.frozen,
            _build_gradient_graph, call, g, node, wanted)
    except BaseException:
        if not call.host.stopping:  # (then a worker thread may still be building)
            g.rollback(mark)
        raise
    call.host.changed(entry)
    return reached, grad_ids, len(g.nodes) - mark[0]


def _build_gradient_graph(call: Call, g: Graph, node: Value,
                          wanted: list[int] | None) -> tuple[list[Value], dict[str, int]]:
    start = len(g.nodes)
    if wanted is None:
        inputs = [v for v in topological_order(node) if v.is_leaf]
    else:
        inputs = [g.nodes[i] for i in dict.fromkeys(wanted)]
    where = f"{call.method}: create_graph"
    try:
        made = opgraph.grad(node, inputs, create_graph=True)
    except GraphLimitError:
        limit = g.max_nodes
        raise RpcError("limit_exceeded", f"{where}: the gradient graph of node {node.id} does "
                       f"not fit in graph {g.name!r}, which holds {start} nodes of its limit "
                       f"of {limit} (nothing was added)",
                       {"limit": "max_nodes", "max": limit}) from None
    except GradRuleError as exc:
        raise _rule_error(where, exc) from None
    settle(g.nodes[start:], call.method)
    reached = g.backward(node)  # (the floats, as without create_graph)
    return reached, {str(v.id): d.id for v, d in zip(inputs, made, strict=True)}


def _rule_error(where: str, exc: GradRuleError) -> RpcError:
    """``op_failed`` for a gradient rule that cannot build the gradient graph: an op without
    a graph rule (`opgraph.NoGradGraphError`), or one that raised; ``data`` names the op, its
    plugin and the node."""
    try:
        plugin: str | None = opgraph.lookup_op(exc.op).plugin
    except opgraph.OpgraphError:
        plugin = None
    reason = "no_grad_graph" if isinstance(exc, NoGradGraphError) else "grad_graph_failed"
    return RpcError("op_failed", f"{where}: {exc}",
                    {"op": exc.op, "plugin": plugin, "node": exc.node, "reason": reason})


@method("graph.gradcheck", ("graph", "root"),
        options=("eps", "sample", "seed", "leaves", "order"))
async def graph_gradcheck(call: Call, graph: Any, root: Any, eps: Any = None, sample: Any = None,
                          seed: Any = 0, leaves: Any = None, order: Any = 1) -> dict[str, Any]:
    """Analytic gradients of ``root`` against central finite differences, per leaf: every leaf
    ``root`` depends on, or those of ``leaves``, or ``sample`` of them drawn at random (from
    ``leaves`` when given), reproducibly for a ``seed``. With ``order`` 2, the leaves' rows of
    the Hessian by the ops' graph rules against finite differences of the gradient
    (`opgraph.higher.gradcheck_second_order`)."""
    entry = call.entry(graph)
    root = call.integer(root, "root")
    order = call.integer(order, "order")
    if order not in (1, 2):
        raise call.invalid(f"order must be 1 (gradients) or 2 (second derivatives), got {order}")
    eps = (1e-6 if order == 1 else 1e-5) if eps is None else call.number(eps, "eps")
    if not 0 < eps < 1:
        raise call.invalid("eps must be within (0, 1)")
    if sample is not None and call.integer(sample, "sample") < 1:
        raise call.invalid(f"sample must be at least 1, got {sample}")
    seed = call.integer(seed, "seed")
    wanted = None if leaves is None else call.ids(leaves, "leaves")
    if wanted == []:
        raise call.invalid("leaves must not be empty (leave it out to check every leaf)")
    limit = call.host.limits.max_gradcheck_leaves
    async with entry.lock.read():
        node = entry.graph.node(root)
        version = entry.graph.version
        # gradcheck zeroes, sets and restores grads as it goes: on the shared graph other
        # readers would see that half-done state, and two gradchecks at once could restore
        # each other's (leaving wrong grads). So it checks a private copy, taken under the lock.
        copy = await call.in_thread(_copy_for_gradcheck, entry.graph, node, limit, wanted,
                                    sample)
    if order == 2:
        copy.max_nodes = call.host.limits.max_nodes  # (the gradient graph is built in it)
        return await call.in_thread(_second_order, call, copy, root, version, eps, wanted,
                                    sample, seed)
    report = await call.in_thread(lambda: opgraph.gradcheck(
        copy.nodes[root], eps=eps, leaves=wanted, sample=sample, seed=seed))
    return {"ok": report.ok, "order": 1, "root": root, "version": version,
            "total_leaves": report.total_leaves, "chosen": report.chosen,
            "sample": report.sample, "seed": report.seed,
            "leaves": [_plain(leaf.__dict__) for leaf in report.leaves],
            "bad_ops": [_plain(b.__dict__) for b in report.bad_ops]}


def _second_order(call: Call, copy: Graph, root: int, version: int, eps: float,
                  wanted: list[int] | None, sample: int | None, seed: int) -> dict[str, Any]:
    """``graph.gradcheck`` with ``order`` 2 on the private ``copy``: the leaves chosen as
    `opgraph.gradcheck` chooses them (the same seed draws the same leaves), then
    `opgraph.higher.gradcheck_second_order` over them."""
    from opgraph.higher import gradcheck_second_order

    node = copy.nodes[root]
    every = [v for v in topological_order(node) if v.is_leaf]
    chosen, how = every, "all"
    if wanted is not None:
        given = set(wanted)
        chosen, how = [v for v in every if v.id in given], "given"
    if sample is not None and sample < len(chosen):
        picked = set(random.Random(seed).sample(range(len(chosen)), sample))
        chosen, how = [v for i, v in enumerate(chosen) if i in picked], "sample"
    where = f"{call.method}: order 2"
    try:
        report = gradcheck_second_order(node, chosen, eps=eps)
    except GraphLimitError:
        limit = copy.max_nodes
        raise RpcError("limit_exceeded", f"{where}: the gradient graph of node {root}, which "
                       f"the check builds on a copy of graph {copy.name!r} ({len(copy.nodes)} "
                       f"nodes), would pass the limit of {limit} nodes",
                       {"limit": "max_nodes", "max": limit}) from None
    except GradRuleError as exc:
        raise _rule_error(where, exc) from None
    return {"ok": report.ok, "order": 2, "root": root, "version": version,
            "total_leaves": len(every), "chosen": how,
            "sample": sample if how == "sample" else None,
            "seed": seed if how == "sample" else None, "eps": eps,
            "columns": [v.id for v in chosen],
            "leaves": [{"node": row.node, "label": row.label, "id": row.id,
                        "analytic": list(row.analytic), "numeric": list(row.numeric),
                        "error": row.error, "ok": row.ok} for row in report.leaves]}


def _copy_for_gradcheck(graph: Graph, node: Value, limit: int, wanted: list[int] | None,
                        sample: int | None) -> Graph:
    """A copy of ``graph`` (same ids) to run gradcheck on, after checking the leaves asked
    for and that at most ``limit`` of them are to be checked."""
    from opgraph import fileformat

    order = topological_order(node)
    if wanted is None:
        pool = sum(1 for v in order if v.is_leaf)
    else:
        reached = {v.id for v in order}
        for i in wanted:
            leaf = graph.node(i)  # (unknown_node)
            if not leaf.is_leaf:
                raise RpcError("not_a_leaf", f"graph.gradcheck: leaves: node {i} is computed "
                               f"by op {leaf.op!r}, not a leaf")
            if i not in reached:
                raise RpcError("invalid_params", f"graph.gradcheck: leaves: root {node.id} "
                               f"does not depend on leaf {i}")
        pool = len(set(wanted))
    checked = pool if sample is None else min(sample, pool)
    if checked > limit:
        raise RpcError("limit_exceeded", f"root {node.id} depends on {pool} leaves; "
                       f"gradcheck checks at most {limit} (pass sample: N to check N of them)",
                       {"limit": "max_gradcheck_leaves", "max": limit})
    return fileformat.from_document(fileformat.to_document(graph))

def _plain(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in record.items()}
