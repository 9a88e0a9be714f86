"""Exponential ops: exp and log."""

from __future__ import annotations

import math

from opgraph import OpDef, hookimpl


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:  # past e^709: infinite, which the non-finite diagnostic reports
        return math.inf


def _exp_grad(x, out):
    return (out,)


def _log(x):
    if x == 0:
        return -math.inf
    if x < 0:
        raise ValueError(f"log of a negative number ({x!r})")
    return math.log(x)


def _log_grad(x, out):
    return (math.inf if x == 0 else 1.0 / x,)


def _exp_grad_graph(x, out):
    return (out,)


def _log_grad_graph(x, out):
    return (math.inf if x.data == 0 else 1.0 / x,)


def _np():
    import numpy  # imported on first use: plain Value arithmetic never needs numpy

    return numpy


def _vexp(x):
    np = _np()
    with np.errstate(over="ignore"):
        return np.exp(x)


def _vlog(x):
    np = _np()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x)


def _vlog_grad(x, out):
    np = _np()
    with np.errstate(divide="ignore"):
        return (1.0 / x,)


@hookimpl
def opgraph_register_ops():
    """exp and log."""
    return [
        OpDef("exp", 1, _exp, _exp_grad, doc="e ** x", vforward=_vexp, vgrad=_exp_grad,
              grad_graph=_exp_grad_graph),
        OpDef("log", 1, _log, _log_grad, doc="natural logarithm of x (x >= 0)",
              domain=((0.1, 5.0),), vforward=_vlog, vgrad=_vlog_grad,
              grad_graph=_log_grad_graph),
    ]
