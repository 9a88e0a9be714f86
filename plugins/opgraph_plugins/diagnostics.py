"""The default diagnostics: saturated activations, dead ReLUs, non-finite numbers, vanishing
and exploding leaf gradients, unused leaves.

Each check is one numpy pass over the graph's arrays (`opgraph.structure`); only the nodes it
flags cost Python time. ``dead-relu`` judges a unit, not a node: a ReLU that is off for one
sample is normal, one that is off for every sample of the batch passes no gradient to its
weights. The unit of a ReLU node is its label (`opgraph.nn` labels a neuron's ReLU the same in
every call), else its place in the calls of its source line, else the node alone (see
`opgraph.aggregate.units`); a dead unit is reported once, on its first node, with the count.
"""

from __future__ import annotations

import numpy as np

from opgraph import hookimpl
from opgraph.aggregate import units
from opgraph.diagnostics import Diagnostic
from opgraph.structure import structure, values

SATURATION = 0.99  # |tanh| above this passes back less than 2% of the gradient
SIGMOID_SATURATION = 0.01  # sigmoid within this of 0 or 1
VANISHING = 1e-6
EXPLODING = 1e6
RELATED = 10  # how many of a unit's other nodes a dead-relu finding lists


def _name(value) -> str:
    return f"{value.label!r} (id {value.id})" if value.label else f"node {value.id}"


def _op_nodes(s, name: str) -> np.ndarray:
    if name not in s.op_names:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(s.op_code == s.op_names.index(name))


def _activations(graph, s, data):
    nodes = graph.nodes
    tanh = _op_nodes(s, "tanh")
    for i in tanh[np.abs(data[tanh]) > SATURATION].tolist():
        v = nodes[i]
        yield Diagnostic(
            "saturated-tanh", "warning", i,
            f"tanh at {_name(v)} is saturated: output {v.data:.6g}, local gradient "
            f"{1 - v.data * v.data:.3g}")
    sigmoid = _op_nodes(s, "sigmoid")
    d = data[sigmoid]
    for i in sigmoid[np.isfinite(d) & ~((d > SIGMOID_SATURATION) & (d < 1 - SIGMOID_SATURATION))
                     ].tolist():
        v = nodes[i]
        yield Diagnostic(
            "saturated-sigmoid", "warning", i,
            f"sigmoid at {_name(v)} is saturated: output {v.data:.6g}, local gradient "
            f"{v.data * (1 - v.data):.3g}")
    yield from _dead_relus(graph, s, data)


def _dead_relus(graph, s, data):
    relu = _op_nodes(s, "relu")
    if not len(relu):
        return
    pre = data[s.inputs[s.indptr[relu]]]
    off = pre <= 0  # (NaN is neither on nor off: non-finite-value reports it)
    if not off.any():
        return
    unit, names = units(graph, relu)
    count = np.bincount(unit, minlength=len(names))
    on = np.bincount(unit, weights=~off, minlength=len(names))
    nodes = graph.nodes
    for u in np.flatnonzero((on == 0) & (count > 0)).tolist():
        members = relu[unit == u]
        first = nodes[int(members[0])]
        n = len(members)
        if n == 1:
            message = (f"relu at {_name(first)} is inactive: input {first.inputs[0].data:.6g} "
                       "<= 0, no gradient flows through it")
        else:
            message = (f"relu {names[u]!r} is inactive for all {n} of its nodes (every sample "
                       f"of the batch; largest input {float(pre[unit == u].max()):.6g} <= 0): "
                       "no gradient flows through it")
        yield Diagnostic("dead-relu", "warning", first.id, message, count=n,
                         related=tuple(members[1:RELATED + 1].tolist()))


def _non_finite(graph, data, grad):
    nodes = graph.nodes
    for i in np.flatnonzero(~np.isfinite(data)).tolist():
        yield Diagnostic("non-finite-value", "error", i, f"{_name(nodes[i])} has data "
                                                         f"{nodes[i].data}")
    for i in np.flatnonzero(~np.isfinite(grad)).tolist():
        yield Diagnostic("non-finite-grad", "error", i, f"{_name(nodes[i])} has grad "
                                                        f"{nodes[i].grad}")


def _leaf_gradients(graph, s, grad):
    if not (grad != 0).any():
        return  # no backward pass yet: nothing to judge
    nodes = graph.nodes
    g = np.abs(grad)
    leaf = s.is_leaf
    for i in np.flatnonzero(leaf & (g > 0) & (g < VANISHING)).tolist():
        yield Diagnostic("vanishing-gradient", "warning", i,
                         f"gradient at leaf {_name(nodes[i])} is vanishing: {nodes[i].grad:.3g}")
    for i in np.flatnonzero(leaf & np.isfinite(g) & (g > EXPLODING)).tolist():
        yield Diagnostic("exploding-gradient", "warning", i,
                         f"gradient at leaf {_name(nodes[i])} is exploding: {nodes[i].grad:.3g}")


def _unused_leaves(graph, s):
    if s.n < 2:
        return
    for i in np.flatnonzero(s.is_leaf & (s.use_counts() == 0)).tolist():
        yield Diagnostic("unused-leaf", "hint", i,
                         f"leaf {_name(graph.nodes[i])} is not used by any op")


@hookimpl
def opgraph_diagnostics(graph):
    """Every default diagnostic of ``graph``."""
    s = structure(graph)
    data, grad = values(graph)
    return [
        *_activations(graph, s, data),
        *_non_finite(graph, data, grad),
        *_leaf_gradients(graph, s, grad),
        *_unused_leaves(graph, s),
    ]
