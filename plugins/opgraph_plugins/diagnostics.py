"""The default diagnostics: saturated activations, dead ReLUs, non-finite numbers, vanishing
and exploding leaf gradients, unused leaves."""

from __future__ import annotations

import math

from opgraph import hookimpl
from opgraph.diagnostics import Diagnostic

SATURATION = 0.99  # |tanh| above this passes back less than 2% of the gradient
SIGMOID_SATURATION = 0.01  # sigmoid within this of 0 or 1
VANISHING = 1e-6
EXPLODING = 1e6


def _name(value) -> str:
    return f"{value.label!r} (id {value.id})" if value.label else f"node {value.id}"


def _activations(graph):
    for v in graph.nodes:
        op = v.op
        if op == "tanh" and abs(v.data) > SATURATION:
            yield Diagnostic(
                "saturated-tanh", "warning", v.id,
                f"tanh at {_name(v)} is saturated: output {v.data:.6g}, local gradient "
                f"{1 - v.data * v.data:.3g}")
        elif op == "sigmoid" and math.isfinite(v.data) and not (
                SIGMOID_SATURATION < v.data < 1 - SIGMOID_SATURATION):
            yield Diagnostic(
                "saturated-sigmoid", "warning", v.id,
                f"sigmoid at {_name(v)} is saturated: output {v.data:.6g}, local gradient "
                f"{v.data * (1 - v.data):.3g}")
        elif op == "relu" and v.inputs[0].data <= 0:
            yield Diagnostic(
                "dead-relu", "warning", v.id,
                f"relu at {_name(v)} is inactive: input {v.inputs[0].data:.6g} <= 0, "
                "no gradient flows through it")


def _non_finite(graph):
    for v in graph.nodes:
        if not math.isfinite(v.data):
            yield Diagnostic("non-finite-value", "error", v.id,
                             f"{_name(v)} has data {v.data}")
        if not math.isfinite(v.grad):
            yield Diagnostic("non-finite-grad", "error", v.id,
                             f"{_name(v)} has grad {v.grad}")


def _leaf_gradients(graph):
    leaves = [v for v in graph.nodes if v.is_leaf]
    if not any(v.grad for v in graph.nodes):
        return  # no backward pass yet: nothing to judge
    for v in leaves:
        g = abs(v.grad)
        if 0 < g < VANISHING:
            yield Diagnostic("vanishing-gradient", "warning", v.id,
                             f"gradient at leaf {_name(v)} is vanishing: {v.grad:.3g}")
        elif math.isfinite(g) and g > EXPLODING:
            yield Diagnostic("exploding-gradient", "warning", v.id,
                             f"gradient at leaf {_name(v)} is exploding: {v.grad:.3g}")


def _unused_leaves(graph):
    if len(graph.nodes) < 2:
        return
    used = {id(i) for v in graph.nodes for i in v.inputs}
    for v in graph.nodes:
        if v.is_leaf and id(v) not in used:
            yield Diagnostic("unused-leaf", "hint", v.id,
                             f"leaf {_name(v)} is not used by any op")


@hookimpl
def opgraph_diagnostics(graph):
    """Every default diagnostic of ``graph``."""
    return [
        *_activations(graph),
        *_non_finite(graph),
        *_leaf_gradients(graph),
        *_unused_leaves(graph),
    ]
