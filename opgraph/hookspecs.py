"""The hooks a plugin implements. Plugin authors: start here.

A plugin is any importable module (or object) with functions marked ``@opgraph.hookimpl``. It
is found through the entry-point group ``opgraph`` of an installed distribution::

    # pyproject.toml of your package
    [project.entry-points.opgraph]
    softplus = "my_ops.softplus"

and opgraph's own default ops are registered exactly that way. There are two hooks, both called
once when opgraph builds its op table and never per applied op.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from opgraph.diagnostics import Diagnostic
    from opgraph.graph import Graph
    from opgraph.opdef import OpDef

PROJECT_NAME = "opgraph"
ENTRY_POINT_GROUP = "opgraph"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Mark a plugin's hook functions with this: ``@opgraph.hookimpl``."""


@hookspec
def opgraph_register_ops() -> Iterable[OpDef]:  # type: ignore[empty-body]
    """Return the op definitions this plugin provides.

    Each is an :class:`opgraph.OpDef`; for example::

        @hookimpl
        def opgraph_register_ops():
            return [OpDef("softplus", 1, forward=_softplus, grad=_softplus_grad,
                          doc="log(1 + exp(x))")]

    ``forward(*inputs, **attrs)`` gets the inputs' data (floats) and returns the output;
    ``grad(*inputs, out, **attrs)`` gets the same inputs and the output, and returns the
    partial derivative of the output with respect to each input, one number per input.

    For gradients of gradients (``opgraph.grad(..., create_graph=True)``, ``hessian``), give
    the rule in graph form too: ``grad_graph(*inputs, out, **attrs)`` gets the input and output
    `Value` nodes instead of their data and returns the same partials built from ops over them,
    so that they can be differentiated again; a plain number stands for a partial that is
    constant near the point::

        def _softplus_grad_graph(x, out):
            return (1.0 / (1.0 + (-x).exp()),)   # sigmoid(x), as a graph

        OpDef("softplus", 1, forward=_softplus, grad=_softplus_grad,
              grad_graph=_softplus_grad_graph)

    Without it the op works as before, and ``create_graph=True`` over it raises
    `opgraph.NoGradGraphError` naming the op and this plugin. Before its first use each graph
    rule is checked against its float rule at two points of the op's domain; one that raises
    or disagrees is refused (a warning names the op and the plugin), and ``opgraph ops check``
    checks both rules against each other and the second derivatives against finite
    differences of ``grad``.

    Op names are global: two plugins defining one name is an error that names both. An
    exception raised here, or an item that is not an ``OpDef``, is reported with this plugin's
    name and its ops are left out; the other plugins still load.
    """


@hookspec
def opgraph_diagnostics(graph: Graph) -> Iterable[Diagnostic]:  # type: ignore[empty-body]
    """Return diagnostics about ``graph``: things worth a warning, as a language server has them.

    Each is an :class:`opgraph.Diagnostic` with a ``code`` (a short stable name such as
    ``"saturated-tanh"``), a ``severity`` (``"error"``, ``"warning"``, ``"info"``, ``"hint"``),
    the id of the ``node`` it is about (or None for the whole graph) and a ``message``.
    Read ``graph`` only; do not change it. A plugin that raises is reported by name and the
    other diagnostic plugins still run.
    """
