"""The analyses of `opgraph.analysis.analyze` in linear time, on a graph's arrays.

`analysis.analyze` uses these for every graph whose ids are a topological order (every `Graph`
built through the API is), and networkx's algorithms otherwise (a corrupt import with a cycle).
Each analysis gives what the networkx one gives; where several answers are right (the critical
path, when several paths are longest) the rule is stated in `opgraph.structure.critical_path`.

Costs: reading the graph into arrays once per structure, then numpy passes, a level sweep and
the dominator tree (`opgraph.dominators`), each linear or O(edges * log depth).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from opgraph.dominators import common_dominators, gradient_tree
from opgraph.structure import OptionError, Structure, ancestors, critical_path, descendants

Progress = Callable[[int, int], None]

# The report's lists that `cap` shortens (and `counts_of` counts). ``widths`` stays whole: it
# is one number per generation (``depth`` of them), and ``width`` is its maximum.
LISTS = ("leaves", "outputs", "critical_path", "unused", "dominators", "cycles",
         "diagnostics", "diagnostic_groups")
STEPS = 6  # progress steps of `report_fields`


def default_root(s: Structure) -> int | None:
    """The most recent computed output (a node no other node uses), else the most recent
    output; None for an empty graph. (A leaf added last must not make the rest "unused".)"""
    outputs = np.flatnonzero(s.use_counts() == 0)
    if not len(outputs):
        return None
    computed = outputs[~s.is_leaf[outputs]]
    return int((computed if len(computed) else outputs)[-1])


def report_fields(s: Structure, root: int | None, *, node: int | None = None,
                  leaf: int | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """The fields of an `AnalysisReport` (diagnostics aside) for a topologically ordered
    structure. ``node`` and ``leaf`` must be valid ids (checked by the caller)."""
    if not s.topological:
        raise ValueError("report_fields needs node ids in topological order")
    tick = _ticker(progress, step_count(node, leaf))
    n = s.n
    names = s.op_names
    op_counts = np.bincount(s.op_code[~s.is_leaf], minlength=len(names))
    ops = dict(sorted((names[i], int(c)) for i, c in enumerate(op_counts) if c))
    leaves = np.flatnonzero(s.is_leaf)
    outputs = np.flatnonzero(s.use_counts() == 0)
    tick()
    levels = s.levels()
    widths = np.bincount(levels).tolist() if n else []
    tick()
    path = critical_path(s)
    tick()
    in_deg, out_deg = s.distinct_degrees()
    fan_in = _extreme(in_deg)
    fan_out = _extreme(out_deg)
    tick()
    unused: list[int] = []
    dominators: list[int] = []
    if root is not None:
        use_ptr, users = s.users()
        tree = gradient_tree(n, root, use_ptr.tolist(), users.tolist())
        tick()
        reached = np.asarray(tree.parent) != -1
        unused = np.flatnonzero(~reached).tolist()
        is_leaf = s.is_leaf
        dominators = sorted(v for v in common_dominators(tree, leaves.tolist())
                            if not is_leaf[v])
    else:
        tick()
    tick()
    fields: dict[str, Any] = {
        "nodes": n,
        "edges": len(s.inputs),
        "root": root,
        "leaves": leaves.tolist(),
        "outputs": outputs.tolist(),
        "ops": ops,
        "depth": len(widths),
        "widths": widths,
        "critical_path": path,
        "max_fan_in": fan_in,
        "max_fan_out": fan_out,
        "unused": unused,
        "dominators": dominators,
        "cycles": [],
    }
    if node is not None:
        above = ancestors(s, node)
        above[node] = False
        fields["influences"] = {str(node): np.flatnonzero(above & (s.arity == 0)).tolist()}
        tick()
    if leaf is not None:
        below = descendants(s, leaf)
        below[leaf] = False
        fields["affects"] = {str(leaf): np.flatnonzero(below).tolist()}
        tick()
    return fields


def step_count(node: int | None = None, leaf: int | None = None) -> int:
    """How many times `report_fields` calls ``progress``."""
    return STEPS + (node is not None) + (leaf is not None)


def _extreme(degrees: np.ndarray) -> dict[str, int] | None:
    """The first node of the highest degree, as the report gives it."""
    if not len(degrees):
        return None
    i = int(np.argmax(degrees))
    return {"node": i, "count": int(degrees[i])}


def _ticker(progress: Progress | None, total: int) -> Callable[[], None]:
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(min(done, total), total)

    return tick


def counts_of(data: dict[str, Any]) -> dict[str, int]:
    """How many items each of the report's lists holds (and each influences/affects entry)."""
    counts = {key: len(data[key]) for key in LISTS if key in data}
    for key in ("influences", "affects"):
        for node, ids in (data.get(key) or {}).items():
            counts[f"{key}.{node}"] = len(ids)
    return counts


def check_limit(limit: object) -> None:
    """Refuse a ``limit`` that is not a non-negative int (None is no limit)."""
    if limit is not None and (type(limit) is not int or limit < 0):
        raise OptionError(f"limit must be a non-negative int, got {limit!r}")


def cap(data: dict[str, Any], limit: int) -> dict[str, Any]:
    """``data`` with each long list cut to its first ``limit`` items (counts in
    ``data['counts']``, from `counts_of`, say how many there were)."""
    check_limit(limit)
    for key in LISTS:
        if key in data and len(data[key]) > limit:
            data[key] = data[key][:limit]
    for key in ("influences", "affects"):
        found = data.get(key)
        if found:
            data[key] = {node: ids[:limit] for node, ids in found.items()}
    return data
