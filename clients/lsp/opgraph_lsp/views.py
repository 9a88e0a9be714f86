"""What the editor shows for one source line of one graph: the hint's label, its tooltip and the
hover, made once when the line's data arrives (so answering a request is only a lookup).

A line that made a few nodes shows each as ``name = data ∇ grad``; a line that made more shows
its summary: how many nodes, the range of their data and the norm of their gradients.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GRAD = "∇"
FEW = 4
"""Lines with at most this many nodes show each node; lines with more show their summary."""


def num(x: Any, digits: int = 4) -> str:
    """A number as a person reads it: 4 significant digits, ``nan``, ``inf``, ``-inf``."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    text = f"{x:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def count_text(n: int) -> str:
    """``65818`` as ``65,818``."""
    return f"{n:,}"


@dataclass
class NodeInfo:
    """One node as the views show it (from a node record of ``node.get``)."""

    id: int
    op: str | None
    symbol: str
    inputs: list[int]
    data: float
    grad: float
    label: str
    attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> NodeInfo:
        """From a node record: ``{"id", "op", "symbol", "inputs", "data", "grad", "label"}``."""
        return cls(id=int(record["id"]), op=record.get("op"), symbol=record.get("symbol") or "",
                   inputs=[int(i) for i in record.get("inputs") or []],
                   data=record.get("data"), grad=record.get("grad"),
                   label=record.get("label") or "", attrs=dict(record.get("attrs") or {}))


def node_name(node: NodeInfo, known: Mapping[int, NodeInfo], depth: int = 2) -> str:
    """A node's label; else an expression of its inputs' names (``x1*w1``, ``x1*w1+x2*w2``,
    at most ``depth`` levels and 24 characters); else ``op#id``."""
    if node.label:
        return node.label
    if node.op is None:
        return f"#{node.id}"
    if depth <= 0 or not node.inputs:  # (no inputs: a node fetched only for its name)
        return f"{node.op}#{node.id}"
    parts = []
    for i in node.inputs:
        other = known.get(i)
        if other is None:
            parts.append(f"#{i}")
            continue
        name = node_name(other, known, depth - 1)
        if "#" in name and not other.label and other.op is not None:
            name = f"{other.op}#{other.id}"  # (not tanh(mul#4+mul#5): tanh(add#6))
        parts.append(name)
    symbol = node.symbol
    if len(parts) == 2 and symbol and not symbol[0].isalpha():
        name = f"{parts[0]}{symbol}{parts[1]}"
    else:
        name = f"{node.op}({', '.join(parts)})"
    return name if len(name) <= 24 else f"{node.op}#{node.id}"


@dataclass
class LineData:
    """What one graph knows about one source line: its nodes, or their summary.

    ``line`` is the 1-based line of the file as it was when the graph was built. ``nodes``
    holds every node of the line when there are at most `FEW`, else it is empty and ``stats``
    (the aggregate statistics: count, ops, data and grad min/mean/max, grad norm, zero and
    non-finite counts) describes them. ``names`` holds the names of those nodes' inputs.
    """

    graph: str
    version: int
    line: int
    count: int
    stats: dict[str, Any] | None
    nodes: list[NodeInfo] = field(default_factory=list)
    inputs: dict[int, NodeInfo] = field(default_factory=dict)
    period: int | None = None
    calls: int | None = None
    _label: str | None = None
    _tooltip: str | None = None

    @property
    def detailed(self) -> bool:
        """Whether the line's nodes are listed (a few) rather than summarised (many)."""
        return bool(self.nodes) and len(self.nodes) == self.count

    def _known(self) -> dict[int, NodeInfo]:
        return {**self.inputs, **{n.id: n for n in self.nodes}}

    def label(self, graph_prefix: bool = False) -> str:
        """The inlay hint: ``o = 0.7071 ∇ 1`` per node, or the line's summary."""
        if self._label is None:
            if self.detailed:
                known = self._known()
                self._label = " · ".join(
                    f"{node_name(n, known)} = {num(n.data)} {GRAD} {num(n.grad)}"
                    for n in self.nodes)
            else:
                self._label = summary_label(self.count, self.stats)
        return f"{self.graph}: {self._label}" if graph_prefix else self._label

    def tooltip(self) -> str:
        """Markdown: each node's op, inputs, data and grad (or the summary), graph, version."""
        if self._tooltip is None:
            self._tooltip = "\n".join(self.markdown())
        return self._tooltip

    def markdown(self) -> list[str]:
        """The lines of the Markdown that describes this line (hover and tooltip)."""
        head = (f"**opgraph** graph `{self.graph}` version {self.version} · "
                f"{count_text(self.count)} node{'s' if self.count != 1 else ''} on this line")
        out = [head, ""]
        if self.detailed:
            known = self._known()
            out += ["| node | op | inputs | data | grad |", "|---|---|---|---|---|"]
            for n in self.nodes:
                op = "leaf" if n.op is None else _code(n.op + _attrs(n.attrs))
                inputs = ", ".join(_code(node_name(known[i], known, 0)) if i in known
                                   else f"#{i}" for i in n.inputs) or "–"
                out.append(f"| {_code(node_name(n, known))} #{n.id} | {op} | {inputs} | "
                           f"{num(n.data, 6)} | {num(n.grad, 6)} |")
            return out
        s = self.stats or {}
        if self.period and self.calls:
            out.append(f"{count_text(self.calls)} calls of {count_text(self.period)} nodes each")
            out.append("")
        ops = s.get("ops") or {}
        if ops:
            listed = sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{_code(k)} {count_text(v)}" for k, v in listed[:8])
            more = f", … {len(listed) - 8} more" if len(listed) > 8 else ""
            out.append(f"ops: {shown}{more}" + (f"; leaves {count_text(s['leaves'])}"
                                                 if s.get("leaves") else ""))
            out.append("")
        out += ["| | min | mean | max |", "|---|---|---|---|"]
        for key in ("data", "grad"):
            d = s.get(key) or {}
            out.append(f"| {key} | {num(d.get('min'))} | {num(d.get('mean'))} | "
                       f"{num(d.get('max'))} |")
        out.append("")
        facts = [f"‖{GRAD}‖ {num(s.get('grad_norm'))}",
                 f"zero gradients {count_text(s.get('zero_grad') or 0)}"]
        bad_d, bad_g = s.get("nonfinite_data") or 0, s.get("nonfinite_grad") or 0
        if bad_d or bad_g:
            facts.append(f"non-finite data {count_text(bad_d)}, grad {count_text(bad_g)}")
        if s.get("first") is not None:
            facts.append(f"first node #{s['first']}")
        out.append(" · ".join(facts))
        return out


def summary_label(count: int, stats: Mapping[str, Any] | None) -> str:
    """``64,000 nodes · data [-1.2, 3.4] · ‖∇‖ 0.53`` (and the non-finite, if any)."""
    s = stats or {}
    parts = [f"{count_text(count)} nodes"]
    d = s.get("data")
    parts.append(f"data [{num(d['min'])}, {num(d['max'])}]" if d else "data –")
    parts.append(f"‖{GRAD}‖ {num(s.get('grad_norm'))}")
    bad = (s.get("nonfinite_data") or 0) + (s.get("nonfinite_grad") or 0)
    if bad:
        parts.append(f"{count_text(bad)} non-finite")
    return " · ".join(parts)


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _attrs(attrs: Mapping[str, Any]) -> str:
    if not attrs:
        return ""
    return "(" + ", ".join(f"{k}={num(v) if isinstance(v, float) else v}"
                           for k, v in sorted(attrs.items())) + ")"


# --- statistics computed here, when the server has no graph.aggregate -------------------------


class StatsAccumulator:
    """The aggregate statistics of a stream of node records (the same keys as the server's)."""

    def __init__(self) -> None:
        self.count = 0
        self.leaves = 0
        self.ops: dict[str, int] = {}
        self.data: list[float] = [0, math.inf, -math.inf, 0.0]  # finite count, min, max, sum
        self.grad: list[float] = [0, math.inf, -math.inf, 0.0]
        self.grad_sq = 0.0
        self.zero_grad = 0
        self.first: int | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        """Count one node record in."""
        self.count += 1
        op = record.get("op")
        if op is None:
            self.leaves += 1
        else:
            self.ops[op] = self.ops.get(op, 0) + 1
        for acc, x in ((self.data, record.get("data")), (self.grad, record.get("grad"))):
            if isinstance(x, int | float) and math.isfinite(x):
                acc[0] += 1
                acc[1] = min(acc[1], x)
                acc[2] = max(acc[2], x)
                acc[3] += x
        g = record.get("grad")
        if isinstance(g, int | float):
            if g == 0:
                self.zero_grad += 1
            elif math.isfinite(g):
                self.grad_sq += g * g
        node = record.get("id")
        if isinstance(node, int) and (self.first is None or node < self.first):
            self.first = node

    def stats(self) -> dict[str, Any]:
        """The statistics so far."""

        def summary(acc: list[float]) -> dict[str, float | None] | None:
            if not acc[0]:
                return None
            mean = acc[3] / acc[0]
            return {"min": acc[1], "mean": mean if math.isfinite(mean) else None, "max": acc[2]}

        norm = math.sqrt(self.grad_sq)
        return {"count": self.count, "leaves": self.leaves, "ops": dict(self.ops),
                "data": summary(self.data), "grad": summary(self.grad),
                "grad_norm": norm if math.isfinite(norm) else None,
                "zero_grad": self.zero_grad, "nonfinite_data": self.count - int(self.data[0]),
                "nonfinite_grad": self.count - int(self.grad[0]), "first": self.first}


def names_needed(nodes: Iterable[NodeInfo], known: Iterable[int]) -> list[int]:
    """The input ids of ``nodes`` not among ``known`` (to fetch for their names)."""
    have = set(known)
    out: list[int] = []
    for n in nodes:
        for i in n.inputs:
            if i not in have:
                have.add(i)
                out.append(i)
    return out


def sorted_lines(lines: Sequence[LineData]) -> list[LineData]:
    """By line number."""
    return sorted(lines, key=lambda d: d.line)
