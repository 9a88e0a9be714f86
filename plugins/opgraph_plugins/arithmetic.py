"""Arithmetic ops: add, sub, mul, div, neg, pow (value exponent) and pow_const (constant one)."""

from __future__ import annotations

import math
import operator

from opgraph import OpDef, hookimpl


def _add_grad(a, b, out):
    return (1.0, 1.0)


def _sub_grad(a, b, out):
    return (1.0, -1.0)


def _mul_grad(a, b, out):
    return (b, a)


def _div_grad(a, b, out):
    return (1.0 / b, -out / b)


def _neg_grad(a, out):
    return (-1.0,)


def _pow(x, y):
    out = float(x) ** y  # floats: an int base must not start a huge exact integer power
    if isinstance(out, complex):
        raise ValueError(f"negative base {x!r} to the non-integer power {y!r}")
    return out


def _pow_grad(x, y, out):
    # d/dy x**y = x**y * log(x): defined for x > 0, and 0 where the output is 0.
    if out == 0:
        dy = 0.0
    elif x > 0:
        dy = out * math.log(x)
    else:
        dy = math.nan
    # d/dx x**0 is 0 everywhere; y * x**(y - 1) would divide by zero at x == 0
    return (0.0 if y == 0 else y * x ** (y - 1), dy)


def _pow_const(x, exponent):
    out = float(x) ** exponent
    if isinstance(out, complex):
        raise ValueError(f"negative base {x!r} to the non-integer power {exponent!r}")
    return out


def _pow_const_grad(x, out, exponent):
    if exponent == 0:  # a constant: 0 everywhere, where the formula divides by zero at x == 0
        return (0.0,)
    return (exponent * x ** (exponent - 1),)


# Graph rules: the same partials as Values built from ops over the input and output Values, so
# that they can be differentiated again (create_graph=True). A number is a locally constant
# partial. Each gives the float rule's numbers, special cases included.


def _add_grad_graph(a, b, out):
    return (1.0, 1.0)


def _sub_grad_graph(a, b, out):
    return (1.0, -1.0)


def _mul_grad_graph(a, b, out):
    return (b, a)


def _div_grad_graph(a, b, out):
    return (1.0 / b, -out / b)


def _neg_grad_graph(a, out):
    return (-1.0,)


def _pow_grad_graph(x, y, out):
    # 0 at x = y = 0, as the float rule gives, where the formula would divide by zero
    dx = 0.0 if y.data == 0 and x.data == 0 else y * x ** (y - 1.0)
    if out.data == 0:
        dy = 0.0
    elif x.data > 0:
        dy = out * x.log()
    else:
        dy = math.nan
    return (dx, dy)


def _pow_const_grad_graph(x, out, exponent):
    if exponent == 0:
        return (0.0,)
    if exponent == 1:
        return (1.0,)
    return (exponent * x ** (exponent - 1),)


# Vectorised kernels for the compiled executor: the same rules over numpy arrays. A gradient
# may be a plain number where it does not depend on the inputs; it is broadcast.


def _np():
    import numpy  # imported on first use: plain Value arithmetic never needs numpy

    return numpy


def _vdiv_grad(a, b, out):
    return (1.0 / b, -out / b)


def _vpow(x, y):
    np = _np()
    with np.errstate(all="ignore"):  # NaN and inf are results here, as in the scalar rule
        return np.power(x, y)


def _vpow_grad(x, y, out):
    np = _np()
    with np.errstate(all="ignore"):
        # As the scalar rule: y * x**(y-1) is 0 where y is 0 (even at x = 0), and d/dy is 0
        # where the output is 0 and out * log(x) for x > 0.
        dx = np.where(y == 0, 0.0, y * np.power(x, y - 1))
        dy = np.where(out == 0, 0.0, out * np.log(np.where(x > 0, x, np.nan)))
    return (dx, dy)


def _vpow_const(x, exponent):
    np = _np()
    with np.errstate(all="ignore"):
        return np.power(x, exponent)


def _vpow_const_grad(x, out, exponent):
    np = _np()
    if exponent == 0:
        return (0.0,)
    with np.errstate(all="ignore"):
        return (exponent * np.power(x, exponent - 1),)


@hookimpl
def opgraph_register_ops():
    """The arithmetic ops behind ``+ - * / **`` and unary minus."""
    return [
        # The forward rules are Python's own operators (C functions: the cheapest call there
        # is); they, and the gradient rules of add, sub, mul and neg, work on arrays unchanged.
        OpDef("add", 2, operator.add, _add_grad, symbol="+", doc="a + b",
              vforward=operator.add, vgrad=_add_grad, grad_graph=_add_grad_graph),
        OpDef("sub", 2, operator.sub, _sub_grad, symbol="-", doc="a - b",
              vforward=operator.sub, vgrad=_sub_grad, grad_graph=_sub_grad_graph),
        OpDef("mul", 2, operator.mul, _mul_grad, symbol="*", doc="a * b",
              vforward=operator.mul, vgrad=_mul_grad, grad_graph=_mul_grad_graph),
        OpDef("div", 2, operator.truediv, _div_grad, symbol="/", doc="a / b",
              domain=((-3.0, 3.0), (0.5, 3.0)), vforward=operator.truediv, vgrad=_vdiv_grad,
              grad_graph=_div_grad_graph),
        OpDef("neg", 1, operator.neg, _neg_grad, symbol="neg", doc="-a",
              vforward=operator.neg, vgrad=_neg_grad, grad_graph=_neg_grad_graph),
        OpDef("pow", 2, _pow, _pow_grad, symbol="**", doc="x ** y, with y a value",
              domain=((0.2, 3.0), (-2.0, 2.0)), vforward=_vpow, vgrad=_vpow_grad,
              grad_graph=_pow_grad_graph),
        OpDef("pow_const", 1, _pow_const, _pow_const_grad, symbol="**{exponent}",
              doc="x ** exponent, with a constant exponent", attrs=("exponent",),
              domain=((0.2, 3.0),), sample_attrs={"exponent": 2.5},
              vforward=_vpow_const, vgrad=_vpow_const_grad, grad_graph=_pow_const_grad_graph),
    ]
