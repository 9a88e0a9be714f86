"""The engine core: `Value`, the op table, applying ops, and the forward and backward passes.

Modules, bottom up (each imports only those before it):

- `source`: the source-location switch (`track_source`), the engine's one process-wide flag;
- `rules`: calling an op's rules and what counts as their failure (shared with
  `opgraph.compiled`), and how messages name a node (`describe`);
- `passes`: the passes written plainly, the reference (`topological_order`, `backward_over`,
  `recompute`, `evaluate`);
- `fast`: the fast path, all of it (`Value`'s operators, `Value.backward` and the
  `backward_over` exported here), held to the reference by the differential tests;
- `value`: `Value`, and applying an op the reference way (`apply_op`, `new_node`);
- `higher`: gradients as values, for gradients of gradients: the reverse pass that builds
  its result from the ops' graph rules (``create_graph=True``), each checked on first use;
- `optable`: the op table, installed by the registry alone, and the op methods bound to it.

Layers above (graph, analysis, compiled, file format, server) use the names exported here and
`Value`'s public properties, never the engine's underscored fields.
"""

from opgraph.core.fast import backward_over
from opgraph.core.optable import apply, install, lookup, ops
from opgraph.core.passes import (
    dependents,
    evaluate,
    free_values,
    recompute,
    remember_walks,
    structure_order,
    topological_order,
)
from opgraph.core.rules import describe, is_partial, is_real, result_problem
from opgraph.core.source import SourceLocation, set_source_tracking, track_source
from opgraph.core.value import (
    GraphValue,
    Owner,
    Value,
    apply_checked,
    apply_op,
    backward,
    check_application,
    check_attrs,
    check_data,
    compute,
    copy_node,
    new_node,
    place,
    set_source,
)

lookup_op = lookup

__all__ = [
    "GraphValue",
    "Owner",
    "SourceLocation",
    "Value",
    "apply",
    "apply_checked",
    "apply_op",
    "backward",
    "backward_over",
    "check_application",
    "check_attrs",
    "check_data",
    "compute",
    "copy_node",
    "dependents",
    "describe",
    "evaluate",
    "free_values",
    "install",
    "is_partial",
    "is_real",
    "lookup",
    "lookup_op",
    "new_node",
    "ops",
    "place",
    "recompute",
    "remember_walks",
    "result_problem",
    "set_source",
    "set_source_tracking",
    "structure_order",
    "topological_order",
    "track_source",
]
