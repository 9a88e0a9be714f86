"""Activation ops: tanh, sigmoid, relu, and step (relu's slope)."""

from __future__ import annotations

import math

from opgraph import OpDef, hookimpl


def _tanh(x):
    # micrograd's formula, (e^2x - 1) / (e^2x + 1), so results match it to the last bit (the
    # seed's neuron gives 0.7071067811865476); expm1 near 0 where that formula loses digits,
    # and the limit past 20, where e^2x would overflow and tanh is 1.0 in double precision.
    if x > 20.0:
        return 1.0
    if x < -20.0:
        return -1.0
    if -0.5 < x < 0.5:
        e = math.expm1(2.0 * x)
        return e / (e + 2.0)
    e = math.exp(2.0 * x)
    return (e - 1.0) / (e + 1.0)


def _tanh_grad(x, out):
    return (1.0 - out * out,)


def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)  # never overflows for x < 0
    return e / (1.0 + e)


def _sigmoid_grad(x, out):
    return (out * (1.0 - out),)


def _relu(x):
    return x if x > 0 else 0.0


def _relu_grad(x, out):
    return (1.0 if out > 0 else 0.0,)


# Graph rules (create_graph=True): the partials as Values built from ops over the output, so
# that they can be differentiated again; relu's step is a constant.


def _tanh_grad_graph(x, out):
    return (1.0 - out * out,)


def _sigmoid_grad_graph(x, out):
    return (out * (1.0 - out),)


def _relu_grad_graph(x, out):
    # relu's slope as a node (not the number it is now), so that a gradient graph recomputed
    # at other inputs (Graph.set) takes the right side of the kink
    return (x.step(),)


def _step(x):
    return 1.0 if x > 0 else 0.0


def _step_grad(x, out):
    return (0.0,)


def _step_grad_graph(x, out):
    return (0.0,)


def _np():
    import numpy  # imported on first use: plain Value arithmetic never needs numpy

    return numpy


def _vtanh(x):
    return _np().tanh(x)


def _vsigmoid(x):
    np = _np()
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _vrelu(x):
    return _np().where(x > 0, x, 0.0)  # as the scalar rule: NaN gives 0


def _vrelu_grad(x, out):
    return ((out > 0).astype(float),)


def _vstep(x):
    return (x > 0).astype(float)  # as the scalar rule: NaN gives 0


@hookimpl
def opgraph_register_ops():
    """tanh, sigmoid and relu, numerically stable at any input, and step, relu's slope."""
    return [
        OpDef("tanh", 1, _tanh, _tanh_grad, doc="hyperbolic tangent",
              vforward=_vtanh, vgrad=_tanh_grad, grad_graph=_tanh_grad_graph),
        OpDef("sigmoid", 1, _sigmoid, _sigmoid_grad, doc="1 / (1 + e ** -x)",
              vforward=_vsigmoid, vgrad=_sigmoid_grad, grad_graph=_sigmoid_grad_graph),
        OpDef("relu", 1, _relu, _relu_grad, doc="max(0, x)", vforward=_vrelu, vgrad=_vrelu_grad,
              grad_graph=_relu_grad_graph),
        # (checks sample one side of the jump at 0: finite differences across it mean nothing)
        OpDef("step", 1, _step, _step_grad, doc="1 where x > 0, else 0 (relu's slope)",
              domain=((0.1, 3.0),), vforward=_vstep, vgrad=_step_grad,
              grad_graph=_step_grad_graph),
    ]
