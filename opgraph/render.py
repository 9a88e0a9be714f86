"""Rendering graphs to SVG, PNG or DOT: whole, around one node, or summarised.

Two steps, so that a server holds a graph's lock only for the first:

1. `plan` reads the graph and writes the DOT source of the picture (a `Picture`);
2. `layout` (or `layout_async`) runs graphviz's ``dot`` on that source in a subprocess, which
   is killed when its time limit passes (or, for `layout_async`, when the task is cancelled).

`render` does both. A graph is drawn whole only when ``dot`` can lay it out quickly: with at
most ``max_nodes`` nodes, and a *layout size* of at most `MAX_LAYOUT` (see `layout_size`: dot's
time grows with the nodes it places, counting one for every rank a long edge crosses, which is
what makes a 200-node chain with skip edges take dot longer than a 2,000-node layer). Beyond
either, it is drawn as a summary, and the `Picture` says why. A summary shows structure
instead of a hairball: by model part when labels name parts (`opgraph.nn`'s
``layer0.neuron3.w1``: one box per layer, with its node count, ops, data and gradients, the
arrows counting the uses between them; ``part=`` draws one part's inside), else one box per
(generation, op) with counts (a layer of 16 tanh), or per op when that is still too big. Each
is computed from the graph's arrays (`opgraph.structure`, `opgraph.aggregate`) in linear time.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import graphviz
import numpy as np

from opgraph.analysis import as_graph
from opgraph.core import Value
from opgraph.draw import FORMATS, draw_dot
from opgraph.graph import Graph
from opgraph.structure import Structure, structure

DEFAULT_MAX_NODES = 400
"""Nodes of a graph drawn whole by default; more are summarised."""
MAX_LAYOUT = 12_000
"""The largest `layout_size` drawn whole (or around a node). Measured on a 2-core machine
(``python bench/server.py --dot``): random DAGs, tangled DAGs, MLPs and chains with skip edges
up to 2,000 nodes that are within it took ``dot`` at most 3.2 s (one beyond it, 44 s), against
the server's default time limit of 60 s."""
QUICK_LAYOUT_FROM = 500
"""From this `layout_size` on, ``dot`` is told to stop its network-simplex passes early
(`QUICK_LAYOUT`): big pictures lay out several times faster, small ones are laid out exactly
as graphviz would by default."""
QUICK_LAYOUT = ("-Gnslimit=1", "-Gnslimit1=1")
SEVERITY_COLOURS = {"error": "#f4a6a6", "warning": "#ffd27f", "info": "#cde4ff", "hint": "#e8e8e8"}
_RANK = {"error": 0, "warning": 1, "info": 2, "hint": 3}


def format_from_suffix(path: str, default: str = "svg") -> str:
    """``svg``, ``png`` or ``dot`` from a file name's suffix (``default`` when it has none)."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    if not suffix:
        return default
    if suffix == "gv":
        return "dot"
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the picture format from {path!r}: use .svg, .png or .dot")
    return suffix


MAX_FAN = 10
"""Most inputs, and most users, of one node that a neighbourhood picture walks to: a value
used 99,499 times (the ``x`` of a long accumulation) would otherwise bring all its users into
every neighbourhood that reaches it. The others are counted in a note next to it."""


def capped_neighbourhood(graph: Graph, center: int, depth: int, fan: int = MAX_FAN
                         ) -> tuple[list[int], dict[int, tuple[int, int]]]:
    """The ids within ``depth`` edges of ``center`` (in id order), walking from each node to
    at most ``fan`` of its inputs and ``fan`` of its users (those nearest ``center`` by id),
    and ``{node: (inputs left out, users left out)}`` for the nodes that had more.

    Without nodes of more than ``fan`` inputs or users on the way, these are the ids of
    `opgraph.analysis.neighbourhood`."""
    graph.node(center)
    if type(depth) is not int or depth < 0:
        raise ValueError(f"depth must be a non-negative int, got {depth!r}")
    s = structure(graph)
    use_ptr, users = s.users()
    indptr, inputs = s.indptr, s.inputs
    seen = {center}
    hidden: dict[int, tuple[int, int]] = {}
    frontier = [center]
    for _ in range(depth):
        found = []
        for v in frontier:
            ins = inputs[indptr[v]:indptr[v + 1]]
            outs = users[use_ptr[v]:use_ptr[v + 1]]
            lost = [0, 0]
            for k, near in enumerate((ins, outs)):
                distinct = np.unique(near)
                if len(distinct) > fan:
                    lost[k] = len(distinct) - fan
                    distinct = distinct[np.argsort(np.abs(distinct - center), kind="stable")
                                        [:fan]]
                for u in distinct.tolist():
                    if u not in seen:
                        seen.add(u)
                        found.append(u)
            if lost != [0, 0]:
                hidden[v] = (lost[0], lost[1])
        if not found:
            break
        frontier = found
    return sorted(seen), hidden


def _mark_hidden(dot: graphviz.Digraph, graph: Graph,
                 hidden: dict[int, tuple[int, int]]) -> None:
    """A note next to each node whose inputs or users a neighbourhood left out."""
    for node, (ins, outs) in hidden.items():
        if ins:
            dot.node(f"n{node}_more_in", label=f"\u2026 {ins:,} more inputs", shape="plaintext",
                     fontcolor="#555555")
            dot.edge(f"n{node}_more_in", f"n{node}_op", style="dashed", color="#999999")
        if outs:
            dot.node(f"n{node}_more_out", label=f"\u2026 {outs:,} more users",
                     shape="plaintext", fontcolor="#555555")
            dot.edge(f"n{node}", f"n{node}_more_out", style="dashed", color="#999999")


def _highlights(graph: Graph) -> dict[Value, tuple[str, str]]:
    from opgraph.diagnostics import run_diagnostics

    by_node: dict[int, list] = defaultdict(list)
    for d in run_diagnostics(graph).diagnostics:
        if d.node is not None:
            by_node[d.node].append(d)
    marks = {}
    for node_id, found in by_node.items():
        worst = min(found, key=lambda d: _RANK[d.severity])
        tooltip = "; ".join(f"{d.code}: {d.message}" for d in found)
        marks[graph.nodes[node_id]] = (SEVERITY_COLOURS[worst.severity], tooltip)
    return marks


SUMMARY_BY = ("auto", "part", "op")
"""How a summary groups nodes: ``part`` by model part (the dotted prefixes of labels that
`opgraph.nn` gives), ``op`` by generation and op, ``auto`` by part when labels name parts for at
least half of the nodes, else by generation and op."""
MAX_BOXES = 40
"""Most boxes a summary by part draws: it groups at the deepest level of parts within it."""
MAX_LINKS = 80
"""Most arrows between boxes a summary by part draws (16 neurons each fed by 16 others are
256 arrows: a hairball; the layers they are in, three)."""


@dataclass
class _Box:
    key: str
    ids: np.ndarray
    outside: bool = False
    title: str = ""
    children: list[str] = field(default_factory=list)


def summary_dot(graph: Graph, format: str = "svg", rankdir: str = "LR",
                max_nodes: int = DEFAULT_MAX_NODES, by: str = "auto",
                part: str | None = None) -> graphviz.Digraph:
    """The summary of a big graph as a ``Digraph``: by model part or by generation and op
    (``by``, see `SUMMARY_BY`); with ``part``, the inside of that part (see `part_summary`).

    By generation and op: one box per (topological generation, op), labelled with its count,
    edges with counts. A leaf is placed in the generation just before its first use (so
    constants deep in a graph do not all hang off generation 0). When that summary would
    itself be too big for ``dot`` (more than ``max_nodes`` or `MAX_LAYOUT` boxes plus the ranks
    its edges span, as a deep chain or a value reused at every step gives), it falls back to
    one box per op.
    """
    return _summary(graph, format, rankdir, max_nodes, by, part)[0]


def summary_kind(graph: Graph, by: str = "auto", part: str | None = None) -> str:
    """``"part"`` or ``"op"``: how `summary_dot` groups ``graph`` for ``by`` and ``part``
    (a ``ValueError`` names a ``by`` or a ``part`` that cannot be used)."""
    if by not in SUMMARY_BY:
        raise ValueError(f"by must be one of {', '.join(SUMMARY_BY)}, got {by!r}")
    if part is not None:
        if by == "op":
            raise ValueError("a part's inside is summarised by part: give by='part' (or "
                             "'auto') with part")
        return "part"
    if by == "op" or not len(graph.nodes):
        return "op"
    in_parts = int((_node_parts(graph)[0] >= 0).sum())
    if by == "part":
        if not in_parts:
            raise ValueError(f"graph {graph.name!r} has no model parts (no label names one, "
                             "as layer0.neuron3.w1 does): summarise it by op")
        return "part"
    return "part" if in_parts * 2 >= len(graph.nodes) else "op"


def _summary(graph: Graph, format: str, rankdir: str, max_nodes: int, by: str,
             part: str | None) -> tuple[graphviz.Digraph, str]:
    """``(digraph, how it is grouped: 'model part', 'generation and op' or 'op')``."""
    kind = summary_kind(graph, by, part)
    if kind == "part":
        return _part_summary(graph, format, rankdir, part), "model part"
    return _op_summary(graph, format, rankdir, max_nodes)


def _digraph(graph: Graph, format: str, rankdir: str, title: str) -> graphviz.Digraph:
    return graphviz.Digraph(format="svg" if format == "dot" else format, graph_attr={
        "rankdir": rankdir, "label": f"{graph.name or 'graph'}: {len(graph.nodes)} nodes, "
                                     f"summarised by {title}", "labelloc": "t"})


def _op_summary(graph: Graph, format: str, rankdir: str,
                max_nodes: int) -> tuple[graphviz.Digraph, str]:
    """The summary by generation and op (or by op alone), from the graph's arrays."""
    s = structure(graph)
    n = s.n
    keys = [*s.op_names, "leaf"]
    op_of = np.where(s.is_leaf, len(keys) - 1, s.op_code).astype(np.int64)
    if s.topological:
        gen = s.levels().copy()
        if len(s.inputs):  # a leaf just before its first use
            first_use = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(first_use, s.inputs, gen[s.owner])
            moved = s.is_leaf & (first_use < np.iinfo(np.int64).max)
            gen[moved] = first_use[moved] - 1
    else:  # (a corrupt import with a cycle has no generations)
        gen = None
    # the distinct edges (a * a is one), as (input, user)
    pair = np.unique(s.owner * max(n, 1) + s.inputs) if len(s.inputs) else np.zeros(0, np.int64)
    user, inp = np.divmod(pair, max(n, 1))
    width = len(keys)
    by_op = gen is None
    if gen is not None:
        group = gen * width + op_of
        found, first = np.unique(group, return_index=True)
        links, link_counts = np.unique(group[inp] * (found.max() + 1) + group[user],
                                       return_counts=True)
        a, b = np.divmod(links, found.max() + 1)
        spanned = int(np.maximum(0, np.abs(b // width - a // width) - 1).sum())
        by_op = len(found) + spanned > min(max_nodes, MAX_LAYOUT)
    title = "op" if by_op else "generation and op"
    dot = _digraph(graph, format, rankdir, title)
    if by_op:
        counts = np.bincount(op_of, minlength=width)
        order = np.unique(op_of, return_index=True)[1]
        for k in op_of[np.sort(order)].tolist():
            op = keys[k]
            where = ""
            if gen is not None:
                members = gen[op_of == k]
                lo, hi = int(members.min()), int(members.max())
                where = f"\\ngeneration {lo}" if lo == hi else f"\\ngenerations {lo}-{hi}"
            dot.node(f"op_{op}", label=f"{op} \u00d7{counts[k]}{where}",
                     shape="box" if op == "leaf" else "ellipse")
        links, link_counts = np.unique(op_of[inp] * width + op_of[user], return_counts=True)
        for link, count in zip(links.tolist(), link_counts.tolist(), strict=True):
            a, b = divmod(link, width)
            dot.edge(f"op_{keys[a]}", f"op_{keys[b]}", label=str(count) if count > 1 else "")
        return dot, title
    sizes = np.bincount(np.searchsorted(found, group), minlength=len(found))
    for g_, size in sorted(zip(found.tolist(), sizes.tolist(), strict=True),
                           key=lambda item: (item[0] // width, int(first[np.searchsorted(
                               found, item[0])]))):
        generation, k = divmod(g_, width)
        dot.node(f"g{generation}_{keys[k]}",
                 label=f"{keys[k]} \u00d7{size}\\ngeneration {generation}",
                 shape="box" if keys[k] == "leaf" else "ellipse")
    for link, count in zip(links.tolist(), link_counts.tolist(), strict=True):
        a, b = divmod(link, found.max() + 1)
        dot.edge(f"g{a // width}_{keys[a % width]}", f"g{b // width}_{keys[b % width]}",
                 label=str(count) if count > 1 else "")
    return dot, title


def _node_parts(graph: Graph) -> tuple[np.ndarray, list[list[str]]]:
    """``(part of each node, the parts' components)``: a node labelled with a dotted name is
    in the part of that name (``layer0.neuron3.w1``, inside ``layer0.neuron3`` and
    ``layer0``), an unlabelled one in the part it inherits from the nodes it feeds (see
    `opgraph.aggregate`: a neuron's products and partial sums are in ``layer0.neuron3``), any
    other node in none (-1)."""
    from opgraph.aggregate import aggregates

    agg = aggregates(graph)
    pieces = [p.split(".") for p in agg.paths]
    dotted = np.array([len(p) > 1 for p in pieces] + [False])
    path = agg.path_of  # (-1 reads the final False)
    part = np.where(~agg.labelled | dotted[path], path, -1)
    return part, pieces


def _part_summary(graph: Graph, format: str, rankdir: str,
                  inside: str | None) -> graphviz.Digraph:
    """The summary by model part: one box per part at the deepest level that keeps within
    `MAX_BOXES` boxes and `MAX_LINKS` arrows; nodes in no part by source line, else by op.
    With ``inside``, only that part's nodes, one level down or deeper, and the nodes next to
    them (dashed boxes, by top-level part)."""
    from opgraph.aggregate import aggregates

    s = structure(graph)
    agg = aggregates(graph)
    part, pieces = _node_parts(graph)
    base = 0 if inside is None else len(inside.split("."))
    members = np.ones(s.n, dtype=bool)
    if inside is not None:
        prefix = inside.split(".")
        within = np.array([p[:base] == prefix for p in pieces] + [False])
        members = within[part]
        if not members.any():
            known = sorted({".".join(p[:base]) for p in pieces if len(p) >= base},
                           key=_natural_key)
            more = ", ..." if len(known) > 8 else ""
            hint = f" (parts at that depth: {', '.join(known[:8])}{more})" if known else ""
            raise ValueError(f"graph {graph.name!r} has no node in part {inside!r}{hint}")
    levels = max((len(p) for p in pieces), default=0)
    chosen = None
    for level in range(max(levels, base + 1), base, -1):
        keys, names = _keys_at(graph, agg, s, part, pieces, level, members, base)
        boxes = len(names)
        links = _links(s, keys)
        if (boxes <= MAX_BOXES and len(links[0]) <= MAX_LINKS) or level == base + 1:
            chosen = (level, keys, names, links)
            break
    level, keys, names, (link_keys, link_counts) = chosen  # type: ignore[misc]
    if len(names) > MAX_BOXES:  # too many even one level down: the smallest merged by op
        keys, names = _merge_small(s, keys, names, members)
        link_keys, link_counts = _links(s, keys)
    title = "model part" if inside is None else f"model part (inside {inside})"
    dot = _digraph(graph, format, rankdir, title)
    marks = _box_marks(graph, keys, len(names))
    levels_of = s.levels() if s.topological else None
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys[keys >= 0], minlength=len(names))
    starts = np.concatenate(([0], np.cumsum(counts)))
    offset = int((keys < 0).sum())
    for k, (name, outside) in enumerate(names):
        ids = order[offset + starts[k]:offset + starts[k + 1]]
        label = _box_label(graph, agg, s, name, ids, pieces, part, level, levels_of,
                           outside, marks.get(k))
        attrs = {"shape": "box", "style": "rounded"}
        if outside:
            attrs = {"shape": "box", "style": "dashed", "fontcolor": "#555555"}
        if k in marks and not outside:
            colour, tooltip, _ = marks[k]
            attrs.update(style="rounded,filled", fillcolor=colour, tooltip=tooltip)
        dot.node(f"p{k}", label=label, **attrs)
    k = len(names)
    for link, count in zip(link_keys.tolist(), link_counts.tolist(), strict=True):
        a, b = divmod(link, k)
        dot.edge(f"p{a}", f"p{b}", label=f"{count:,}")
    return dot


def _keys_at(graph: Graph, agg, s: Structure, part: np.ndarray, pieces: list[list[str]],
             level: int, members: np.ndarray, base: int
             ) -> tuple[np.ndarray, list[tuple[str, bool]]]:
    """Each node's box at ``level`` (-1: not drawn) and the boxes' ``(name, outside)``.

    A node in a part deeper than ``level`` is in that part's prefix of ``level`` components;
    a shallower one in its part itself. A node in no part is in a box of its source line
    (``file:line``) or else of its op (``leaf``, ``add``, ...). With ``base`` > 0 (the inside
    of a part), the nodes next to the drawn ones are boxed by their top-level part, outside."""
    name_of_part = [".".join(p[:level]) for p in pieces]
    box: dict[tuple[str, bool], int] = {}
    names: list[tuple[str, bool]] = []

    def number(name: str, outside: bool) -> int:
        key = (name, outside)
        i = box.get(key)
        if i is None:
            i = box[key] = len(names)
            names.append(key)
        return i

    inner = np.array([number(name, False) for name in name_of_part] + [-1], dtype=np.int64)
    keys = np.where(members, inner[part], -1)
    loose = np.flatnonzero(members & (part < 0))
    if len(loose):
        ops = [*s.op_names, "leaf"]
        codes = np.where(s.is_leaf[loose], len(ops) - 1, s.op_code[loose])
        line = agg.line_of[loose]
        lines = agg.lines
        tags = {}
        for c, ln in set(zip(codes.tolist(), line.tolist(), strict=True)):
            if ln >= 0:
                file, number_ = lines[ln]
                tags[c, ln] = number(f"{_short(file)}:{number_}", False)
            else:
                tags[c, ln] = number(f"{ops[c]} (in no part)", False)
        keys[loose] = [tags[c, ln] for c, ln in zip(codes.tolist(), line.tolist(), strict=True)]
    if base:
        near = np.zeros(s.n, dtype=bool)
        drawn = members
        ins = s.inputs
        near[ins[drawn[s.owner]]] = True  # inputs of drawn nodes
        near[s.owner[drawn[ins]]] = True  # users of drawn nodes
        near &= ~drawn
        if near.any():
            top = np.array([number(p[0], True) for p in pieces] + [-1], dtype=np.int64)
            where = np.flatnonzero(near)
            outside = top[part[where]]
            ops = [*s.op_names, "leaf"]
            for j in np.flatnonzero(outside < 0).tolist():
                node = int(where[j])
                code = len(ops) - 1 if s.is_leaf[node] else int(s.op_code[node])
                outside[j] = number(f"{ops[code]} (in no part)", True)
            keys[where] = outside
    # the boxes some node is in: inside before outside, parts in their natural order (layer2
    # before layer10), then lines and ops
    used = sorted(np.unique(keys[keys >= 0]).tolist(), key=lambda i: (
        names[i][1], " " in names[i][0] or ":" in names[i][0], _natural_key(names[i][0])))
    renumber = np.full(len(names) + 1, -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    return renumber[keys], [names[i] for i in used]


def _links(s: Structure, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The arrows between boxes, as ``a * boxes + b``, and how many uses each stands for."""
    k = int(keys.max()) + 1 if len(keys) else 0
    a, b = keys[s.inputs], keys[s.owner]
    keep = (a >= 0) & (b >= 0) & (a != b)
    return np.unique(a[keep] * k + b[keep], return_counts=True)


def _merge_small(s: Structure, keys: np.ndarray, names: list[tuple[str, bool]],
                 members: np.ndarray) -> tuple[np.ndarray, list[tuple[str, bool]]]:
    """Keep the `MAX_BOXES` - 8 biggest boxes; the nodes of the others in one box per op."""
    counts = np.bincount(keys[keys >= 0], minlength=len(names))
    keep = np.argsort(-counts, kind="stable")[:MAX_BOXES - 8]
    keep.sort()
    renumber = np.full(len(names) + 1, -1, dtype=np.int64)
    renumber[keep] = np.arange(len(keep))
    new_names = [names[i] for i in keep.tolist()]
    merged = renumber[keys]
    rest = np.flatnonzero((keys >= 0) & (merged < 0))
    ops = [*s.op_names, "leaf"]
    codes = np.where(s.is_leaf[rest], len(ops) - 1, s.op_code[rest])
    for code in np.unique(codes).tolist():
        merged[rest[codes == code]] = len(new_names)
        new_names.append((f"{ops[code]} (in the {len(names) - len(keep):,} smaller parts)",
                          False))
    return merged, new_names


def _box_marks(graph: Graph, keys: np.ndarray, boxes: int
               ) -> dict[int, tuple[str, str, str]]:
    """``box -> (colour, tooltip, line)`` for the boxes holding diagnosed nodes."""
    from opgraph.diagnostics import run_diagnostics

    found: dict[int, dict[str, int]] = defaultdict(dict)
    worst: dict[int, int] = {}
    for d in run_diagnostics(graph).diagnostics:
        if d.node is None or keys[d.node] < 0:
            continue
        k = int(keys[d.node])
        found[k][d.code] = found[k].get(d.code, 0) + 1
        worst[k] = min(worst.get(k, 9), _RANK[d.severity])
    colours = list(SEVERITY_COLOURS.values())
    marks = {}
    for k, codes in found.items():
        text = ", ".join(f"{code} \u00d7{n:,}" for code, n in sorted(
            codes.items(), key=lambda item: (-item[1], item[0])))
        marks[k] = (colours[worst[k]], text, text)
    return marks


def _short(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _text(value: str) -> str:
    """User text for a graphviz label (a backslash is not an escape)."""
    return value.replace("\\", "\\\\")


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _box_label(graph: Graph, agg, s: Structure, name: str, ids: np.ndarray,
               pieces: list[list[str]], part: np.ndarray, level: int,
               levels_of: np.ndarray | None, outside: bool,
               mark: tuple[str, str, str] | None) -> str:
    stats = agg.stats(ids)
    lines = [_text(name)]
    below = sorted({pieces[p][level] for p in np.unique(part[ids]).tolist()
                    if p >= 0 and len(pieces[p]) > level and pieces[p][:level] ==
                    name.split(".")}, key=_natural_key)
    if below and not outside:
        lines.append(f"{len(below)} part{'s' if len(below) > 1 else ''}: {_run(below)}")
    count = stats["count"]
    leaves = stats["leaves"]
    ops = ", ".join(f"{n:,} {op}" for op, n in sorted(stats["ops"].items(),
                                                      key=lambda item: -item[1]))
    if leaves == count:
        lines.append(f"{count:,} lea{'f' if count == 1 else 'ves'}")
    else:
        lines.append(f"{count:,} node{'s' if count != 1 else ''}"
                     + (f" ({leaves:,} lea{'f' if leaves == 1 else 'ves'})" if leaves else ""))
        lines.append(ops)
    if outside:
        return "\\n".join(lines)
    if count == 1:
        node = graph.nodes[int(ids[0])]
        lines.append(f"data {_number(node.data)}, grad {_number(node.grad)}")
    else:
        data, grad = stats["data"], stats["grad"]
        if data is not None:
            lines.append(f"data {_number(data['min'])} to {_number(data['max'])}, mean "
                         f"{_number(data['mean'])}")
        zero = stats["zero_grad"]
        lines.append(f"grad norm {_number(stats['grad_norm'])}"
                     + (f", {zero:,} zero" if zero else ""))
        if grad is None and stats["nonfinite_grad"]:
            lines.append(f"{stats['nonfinite_grad']:,} grads not finite")
    computed = ids[~s.is_leaf[ids]]  # (leaves are all in generation 0: not said)
    if levels_of is not None and len(computed):
        where = levels_of[computed]
        lo, hi = int(where.min()), int(where.max())
        lines.append(f"generation {lo}" if lo == hi else f"generations {lo}-{hi}")
    if mark is not None:
        lines.append(mark[2])
    return "\\n".join(lines)


def _natural_key(text: str) -> list:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _run(names: list[str]) -> str:
    """Names as a short text: ``neuron0 … neuron15`` for a numbered run, else the first few."""
    import re

    match = [re.fullmatch(r"(.*?)(\d+)", n) for n in names]
    if len(names) > 2 and all(match) and len({m.group(1) for m in match}) == 1:  # type: ignore[union-attr]
        numbers = [int(m.group(2)) for m in match]  # type: ignore[union-attr]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return f"{_text(names[0])} \u2026 {_text(names[-1])}"
    shown = ", ".join(_text(n) for n in names[:4])
    return shown + (f", +{len(names) - 4}" if len(names) > 4 else "")


class LayoutError(RuntimeError):
    """``dot`` could not be run, or failed on the picture."""


class LayoutTimeout(TimeoutError):
    """``dot`` did not finish within its time limit (and was killed)."""


@dataclass(frozen=True)
class Picture:
    """What `plan` decided to draw, ready for `layout`: the DOT source and what it shows."""

    source: str
    """The DOT source, as the graphviz library writes it."""
    format: str
    """``svg``, ``png`` or ``dot``."""
    drawn: str
    """``graph`` (whole), ``neighbourhood`` (around a node) or ``summary``."""
    nodes: int
    """Values drawn (0 for a summary)."""
    total: int
    """Values in the graph."""
    size: int
    """The `layout_size` of what is drawn (of the summary, for a summary)."""
    reason: str = ""
    """Why the graph was summarised rather than drawn whole ("" when it was not)."""
    fallback: Picture | None = None
    """A summary to draw instead if ``dot`` runs out of time on this picture (see `plan`)."""
    summary: str = ""
    """How a summary groups the nodes: ``model part``, ``generation and op`` or ``op`` (""
    when the picture is no summary)."""

    @property
    def command(self) -> list[str]:
        """The ``dot`` command line that lays the picture out (the source goes to stdin)."""
        quick = QUICK_LAYOUT if self.size >= QUICK_LAYOUT_FROM else ()
        return ["dot", "-Kdot", f"-T{self.format}", *quick]

    def timed_out(self, spent: float) -> Picture:
        """The `fallback` summary, saying that ``dot`` did not lay this out in ``spent`` s."""
        if self.fallback is None:
            raise ValueError("this picture has no summary to fall back on")
        reason = (f"{self.total} nodes, which dot did not lay out within {spent:.3g} s "
                  f"(layout size {self.size})")
        return Picture(self.fallback.source, self.format, "summary", 0, self.total,
                       self.fallback.size, reason, summary=self.fallback.summary)

    def describe(self) -> dict[str, object]:
        """What was drawn, as plain data (``drawn``, ``nodes``, ``total``, ``reason``)."""
        return {"drawn": self.drawn, "nodes": self.nodes, "total": self.total,
                "reason": self.reason or None}


def layout_size(graph: Graph, nodes: Sequence[Value] | None = None) -> int:
    """An estimate of the work ``dot`` does on the picture of ``graph`` (or of ``nodes``, a
    neighbourhood): the nodes it places (a record per value, a small node per op) plus one
    for each rank an edge crosses, ranks being given by longest paths with each leaf moved
    next to its first use (as dot's ranking does). Linear in the nodes drawn."""
    shown = graph.nodes if nodes is None else nodes
    members = None if nodes is None else {id(v) for v in nodes}
    rank: dict[int, int] = {}  # id(value) -> rank of its record
    placed = 0
    for v in shown:
        placed += 1
        if v.opdef is None:
            rank[id(v)] = 0
            continue
        placed += 1
        op_rank = 0
        for i in v.inputs:
            if members is None or id(i) in members:
                op_rank = max(op_rank, rank[id(i)] + 1)
        rank[id(v)] = op_rank + 1
    first_use: dict[int, int] = {}
    for v in shown:
        if v.opdef is not None:
            op_rank = rank[id(v)] - 1
            for i in v.inputs:
                if i.opdef is None and (members is None or id(i) in members):
                    key = id(i)
                    first_use[key] = min(first_use.get(key, op_rank), op_rank)
    for key, op_rank in first_use.items():
        rank[key] = op_rank - 1
    crossed = 0
    for v in shown:
        if v.opdef is not None:
            op_rank = rank[id(v)] - 1
            for i in v.inputs:
                if members is None or id(i) in members:
                    crossed += max(0, op_rank - rank[id(i)] - 1)
    return placed + crossed


def _summary_size(dot: graphviz.Digraph) -> int:
    return sum(1 for line in dot.body if "label=" in line and "->" not in line)


def plan(
    target: Graph | Value,
    *,
    format: str = "svg",
    rankdir: str = "LR",
    around: int | None = None,
    depth: int = 2,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_layout: int = MAX_LAYOUT,
    diagnostics: bool = True,
    fallback: bool = False,
    by: str = "auto",
    part: str | None = None,
) -> Picture:
    """Decide what to draw and write its DOT source; reads the graph, runs no ``dot``.

    Whole when the graph has at most ``max_nodes`` nodes and a `layout_size` of at most
    ``max_layout``, else a summary (``reason`` says which limit), grouped as ``by`` says (see
    `SUMMARY_BY`: by default by model part when the labels name parts, else by generation and
    op). ``part`` draws the summary of that part's inside, whatever the graph's size.
    ``around`` draws the nodes within ``depth`` edges of that node; a neighbourhood over either
    limit is refused (``ValueError``: use a smaller depth). With ``fallback``, a big picture
    drawn whole carries the summary to draw instead should ``dot`` run out of time.
    """
    graph = as_graph(target)
    dot, drawn, nodes, size, reason, grouped = _choose(
        graph, format, rankdir, around, depth, max_nodes, max_layout, diagnostics, by, part)
    spare = None
    if fallback and drawn == "graph" and format != "dot" and size >= QUICK_LAYOUT_FROM:
        summary, how = _summary(graph, format, rankdir, max_nodes, by, None)
        spare = Picture(summary.source, format, "summary", 0, len(graph.nodes),
                        _summary_size(summary), "", summary=how)
    return Picture(dot.source, format, drawn, nodes, len(graph.nodes), size, reason, spare,
                   grouped)


def _choose(graph: Graph, format: str, rankdir: str, around: int | None, depth: int,
            max_nodes: int, max_layout: int, diagnostics: bool, by: str = "auto",
            part: str | None = None) -> tuple[graphviz.Digraph, str, int, int, str, str]:
    """``(digraph, drawn, values drawn, layout size, reason, how a summary groups)``: see
    `plan`."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if by not in SUMMARY_BY:  # (refused whatever is drawn)
        raise ValueError(f"by must be one of {', '.join(SUMMARY_BY)}, got {by!r}")
    total = len(graph.nodes)
    if around is not None:
        if part is not None:
            raise ValueError("give around (a neighbourhood) or part (a part's inside), not both")
        ids, hidden = capped_neighbourhood(graph, around, depth)
        nodes = [graph.nodes[i] for i in ids]
        where = f"the neighbourhood of node {around} to depth {depth}"
        if len(nodes) > max_nodes:
            raise ValueError(f"{where} has {len(nodes)} nodes, over the drawing limit of "
                             f"{max_nodes}: use a smaller depth")
        size = layout_size(graph, nodes)
        if size > max_layout:
            raise ValueError(f"{where} has {len(nodes)} nodes whose edges span too many ranks "
                             f"to lay out quickly (layout size {size}, over {max_layout}): use "
                             "a smaller depth")
        marks = _highlights(graph) if diagnostics else None
        dot = draw_dot(graph, format, rankdir, nodes=nodes, highlight=marks)
        _mark_hidden(dot, graph, hidden)
        return dot, "neighbourhood", len(nodes), size, "", ""
    reason = ""
    if part is not None:
        reason = f"the inside of part {part!r} was asked for"
    elif total > max_nodes:
        reason = f"{total} nodes, more than the {max_nodes} drawn whole"
    else:
        size = layout_size(graph)
        if size > max_layout:
            reason = (f"{total} nodes whose edges span too many ranks to lay out quickly "
                      f"(layout size {size}, over {max_layout})")
    if reason:
        dot, how = _summary(graph, format, rankdir, max_nodes, by, part)
        return dot, "summary", 0, _summary_size(dot), reason, how
    marks = _highlights(graph) if diagnostics else None
    return draw_dot(graph, format, rankdir, highlight=marks), "graph", total, size, "", ""


def graph_dot(
    target: Graph | Value,
    *,
    format: str = "svg",
    rankdir: str = "LR",
    around: int | None = None,
    depth: int = 2,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_layout: int = MAX_LAYOUT,
    diagnostics: bool = True,
    by: str = "auto",
    part: str | None = None,
) -> graphviz.Digraph:
    """The ``Digraph`` that `render` would draw (see `plan`)."""
    return _choose(as_graph(target), format, rankdir, around, depth, max_nodes, max_layout,
                   diagnostics, by, part)[0]


def _dot_failed(picture: Picture, code: int, stderr: bytes) -> LayoutError:
    lines = stderr.decode(errors="replace").strip().splitlines()
    detail = f": {lines[0]}" if lines else ""
    return LayoutError(f"graphviz's dot failed on the picture (exit status {code}){detail}")


_NO_DOT = ("graphviz's dot program is not installed or not on PATH (on Debian or Ubuntu: "
           "apt-get install graphviz)")


def layout(picture: Picture, timeout: float | None = None) -> bytes:
    """The picture laid out by ``dot`` (the DOT source itself for format ``dot``).

    ``dot`` runs as a subprocess, killed once ``timeout`` seconds pass (`LayoutTimeout`).
    """
    if picture.format == "dot":
        return picture.source.encode()
    try:
        done = subprocess.run(picture.command, input=picture.source.encode(),
                              capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise LayoutError(_NO_DOT) from None
    except subprocess.TimeoutExpired:  # (run has killed it)
        raise LayoutTimeout(f"dot did not lay the picture out within {timeout:g} s") from None
    if done.returncode:
        raise _dot_failed(picture, done.returncode, done.stderr)
    return done.stdout


async def layout_async(picture: Picture, timeout: float | None = None) -> bytes:
    """`layout` for asyncio: ``dot`` is killed when ``timeout`` passes or the task is
    cancelled, so no picture outlives the request that asked for it."""
    if picture.format == "dot":
        return picture.source.encode()
    try:
        proc = await asyncio.create_subprocess_exec(
            *picture.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise LayoutError(_NO_DOT) from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(picture.source.encode())
    except TimeoutError:
        raise LayoutTimeout(f"dot did not lay the picture out within {timeout:g} s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(BaseException):
                await asyncio.shield(proc.wait())
    if proc.returncode:
        raise _dot_failed(picture, proc.returncode, err)
    return out


def draw(
    target: Graph | Value,
    *,
    format: str = "svg",
    rankdir: str = "LR",
    around: int | None = None,
    depth: int = 2,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_layout: int = MAX_LAYOUT,
    diagnostics: bool = True,
    timeout: float | None = None,
    by: str = "auto",
    part: str | None = None,
) -> tuple[bytes, Picture]:
    """`plan` then `layout`: ``(picture bytes, what was drawn)``.

    With a ``timeout``, a big graph drawn whole gets half of it; should ``dot`` not finish,
    the graph is drawn as a summary in the rest (the `Picture` returned says so).
    """
    picture = plan(target, format=format, rankdir=rankdir, around=around, depth=depth,
                   max_nodes=max_nodes, max_layout=max_layout, diagnostics=diagnostics,
                   fallback=timeout is not None, by=by, part=part)
    if picture.fallback is None or timeout is None:
        return layout(picture, timeout), picture
    start = time.monotonic()
    try:
        return layout(picture, timeout / 2), picture
    except LayoutTimeout:
        spent = time.monotonic() - start
        summary = picture.timed_out(spent)
        return layout(summary, max(0.001, timeout - spent)), summary


def render(
    target: Graph | Value,
    *,
    format: str = "svg",
    rankdir: str = "LR",
    around: int | None = None,
    depth: int = 2,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_layout: int = MAX_LAYOUT,
    diagnostics: bool = True,
    timeout: float | None = None,
    by: str = "auto",
    part: str | None = None,
) -> bytes:
    """The picture as bytes: SVG, PNG, or DOT source (see `draw` and `plan`).

    ``around`` draws only the nodes within ``depth`` edges of that node id. A graph over
    ``max_nodes`` nodes (or too costly to lay out) is summarised rather than sent to ``dot``
    whole (by model part or by generation and op: ``by``; ``part`` draws a part's inside);
    a neighbourhood over them is refused. With ``diagnostics`` nodes with findings are
    coloured, the codes in their tooltips.
    """
    return draw(target, format=format, rankdir=rankdir, around=around, depth=depth,
                max_nodes=max_nodes, max_layout=max_layout, diagnostics=diagnostics,
                timeout=timeout, by=by, part=part)[0]
