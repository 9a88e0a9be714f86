"""opgraph: a scalar autograd engine whose ops are plugins, and a service for looking inside it.

Start with `Value` (micrograd's API), `Graph` (nodes with ids, as the server holds them),
`draw_dot`, `gradcheck`; `grad`, `hessian` and `hvp` for gradients of gradients; write ops
with `OpDef` and `hookimpl` (see `opgraph.hookspecs`).
"""

from opgraph.core import (
    Value,
    apply,
    backward,
    lookup_op,
    set_source_tracking,
    topological_order,
    track_source,
)
from opgraph.draw import draw_dot
from opgraph.errors import (
    ArityError,
    AttributeSpecError,
    ExpressionError,
    ForwardError,
    GradRuleError,
    GraphError,
    GraphFileError,
    GraphLimitError,
    GraphMismatchError,
    InputTypeError,
    NodeNotFoundError,
    NoGradGraphError,
    NotALeafError,
    OpDefError,
    OpgraphError,
    OpgraphPluginWarning,
    PluginConflictError,
    PluginError,
    RuleError,
    UnknownOpError,
)
from opgraph.fileformat import load, save
from opgraph.gcpolicy import gc_paused
from opgraph.gradcheck import check_op, gradcheck
from opgraph.graph import Graph
from opgraph.higher import grad, hessian, hvp
from opgraph.hookspecs import hookimpl
from opgraph.opdef import OpDef
from opgraph.registry import build_registry, default_registry

__version__ = "0.1.0"

__all__ = [
    "ArityError",
    "AttributeSpecError",
    "ExpressionError",
    "ForwardError",
    "GradRuleError",
    "Graph",
    "GraphError",
    "GraphFileError",
    "GraphLimitError",
    "GraphMismatchError",
    "InputTypeError",
    "NoGradGraphError",
    "NodeNotFoundError",
    "NotALeafError",
    "OpDef",
    "OpDefError",
    "OpgraphError",
    "OpgraphPluginWarning",
    "PluginConflictError",
    "PluginError",
    "RuleError",
    "UnknownOpError",
    "Value",
    "__version__",
    "apply",
    "backward",
    "build_registry",
    "check_op",
    "default_registry",
    "draw_dot",
    "gc_paused",
    "grad",
    "gradcheck",
    "hessian",
    "hookimpl",
    "hvp",
    "load",
    "lookup_op",
    "save",
    "set_source_tracking",
    "topological_order",
    "track_source",
]
