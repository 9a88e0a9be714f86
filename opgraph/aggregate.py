"""Summaries of a graph by source line, by model part and by op, and drill-downs into them.

A line that made 64,000 nodes, or a model part that holds thousands, is shown as one summary:
how many nodes, of which ops, and the distribution of data and grad. `Aggregates.of(graph)`
reads the graph once (its arrays from `opgraph.structure`, every node's data, grad, label and
source) and computes the keys of every node in linear time; `summary()` gives the top-level
groups and `query()` any drill-down, each a few numpy passes over the nodes. Everything they
return is plain data (dicts, lists, str, int, float, None), ready for msgpack or JSON.

The groups:

- **line**: the ``(file, line)`` that created a node (recorded under `opgraph.track_source`).
  A line that ran once per sample, such as ``scores = [model(x) for x in X]``, made the same
  sequence of nodes again and again: its *period* is the length of that sequence (the smallest
  that repeats the ops, labels and wiring of the line's nodes, an input from an earlier call
  counting as one from elsewhere), its *calls* the repetitions.
  ``query(line=..., by="call")`` gives one group per call (per sample); ``by="position"`` one
  group per place in the sequence (the k-th node of every call: the last position of
  ``model(x)`` is the score of every sample); ``call=k`` keeps one call.
- **part**: the model part a label names: the dotted prefixes of a label (``layer0``,
  ``layer0.neuron3``, ``layer0.neuron3.act`` for the label ``layer0.neuron3.act``; see
  `opgraph.nn`). An unlabelled node belongs to the part of the nodes it feeds when they all
  share one (a neuron's products and partial sums feed its ``sum``: they are in
  ``layer0.neuron3``). ``by="part"`` lists the parts one level down.
- **op**: the op's name, or ``"(leaf)"`` for leaves.

The statistics of a group (`STAT_KEYS`): ``count``, ``leaves``, ``ops`` (a histogram of the
computed nodes), ``data`` and ``grad`` as ``{"min", "mean", "max"}`` over their finite values
(None when there are none), ``grad_norm`` (the L2 norm of the finite gradients),
``zero_grad`` (how many gradients are exactly 0), ``nonfinite_data`` and ``nonfinite_grad``,
and ``first`` (the smallest node id).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import numpy as np

from opgraph.structure import OptionError, Structure, intern, structure, values

LEAF = "(leaf)"  # the op key of leaves (op names are identifiers: no op has this name)
BY = ("line", "part", "op", "call", "position")
STAT_KEYS = ("count", "leaves", "ops", "data", "grad", "grad_norm", "zero_grad",
             "nonfinite_data", "nonfinite_grad", "first")
DEFAULT_LIMIT = 50
DEFAULT_MEMBERS = 20

_loc_of = attrgetter("_loc")
_label_of = attrgetter("label")


class Aggregates:
    """A graph's nodes keyed by line, part and op, with their data and gradients, read once.

    Build with `Aggregates.of` (or `aggregates`, cached per graph version). The arrays are
    per node: ``line_of`` (index into ``lines``, -1 without a source), ``path_of`` (index into
    ``paths``: the node's label, or the part it inherits; -1 for neither), ``labelled``.
    """

    def __init__(self, graph: Any) -> None:
        s = structure(graph)
        self.graph_name: str = graph.name
        self.version: int = graph.version
        self.n = s.n
        self.structure: Structure = s
        nodes = graph.nodes
        self.data, self.grad = values(graph)
        self.finite_data = np.isfinite(self.data)
        self.finite_grad = np.isfinite(self.grad)
        self.ids = np.arange(self.n, dtype=np.int64)
        self._read_lines(nodes)
        self._read_parts(nodes)
        self._periods: dict[int, int | None] = {}
        self._line_order: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def of(cls, graph: Any) -> Aggregates:
        """Read ``graph`` (a `Graph`) now."""
        return cls(graph)

    # --- reading ------------------------------------------------------------------------------

    def revalued(self, graph: Any) -> Aggregates | None:
        """These aggregates with ``graph``'s data and gradients read afresh, everything else
        (keys, parts, lines and their periods) shared, when ``graph`` still has the structure,
        labels and source lines they were read from (a new version that only changed values:
        a training step published again, a leaf set); None otherwise."""
        if structure(graph) is not self.structure:
            return None
        nodes = graph.nodes
        if list(map(_label_of, nodes)) != self._labels or list(map(_loc_of, nodes)) != self._locs:
            return None
        new = copy.copy(self)
        new.graph_name, new.version = graph.name, graph.version
        new.data, new.grad = values(graph)
        new.finite_data = np.isfinite(new.data)
        new.finite_grad = np.isfinite(new.grad)
        return new

    def _read_lines(self, nodes: list) -> None:
        self._locs = list(map(_loc_of, nodes))
        self.line_of, self.lines = intern(self._locs, None)

    def _read_parts(self, nodes: list) -> None:
        s = self.structure
        self._labels = list(map(_label_of, nodes))
        label_of, paths = intern(self._labels, "")
        path_index = {p: i for i, p in enumerate(paths)}

        def add(path: str) -> int:
            if not path:
                return -1
            i = path_index.get(path)
            if i is None:
                i = path_index[path] = len(paths)
                paths.append(path)
            return i

        own = np.array([add(label.rpartition(".")[0]) for label in list(paths)] or [-1],
                       dtype=np.int64)
        part = np.where(label_of >= 0, own[np.maximum(label_of, 0)], -1)
        if s.topological and (part >= 0).any():
            part = _inherit(s, label_of >= 0, part)
        self.labelled = label_of >= 0
        self.path_of = np.where(self.labelled, label_of, part)
        self.paths: list[str] = paths
        # every group is a dotted prefix of a path; prefix_of[d][p]: the group index of path p's
        # prefix of d + 1 components (-1 when p is shallower)
        groups: dict[str, int] = {}
        chains = []
        for p in paths:
            pieces = p.split(".")
            chains.append([groups.setdefault(".".join(pieces[:d + 1]), len(groups))
                           for d in range(len(pieces))])
        depth = max((len(c) for c in chains), default=0)
        self.prefix_of = [np.array([c[d] if d < len(c) else -1 for c in chains] or [-1],
                                   dtype=np.int64) for d in range(depth)]
        self.parts: list[str] = list(groups)

    # --- lines and their calls ----------------------------------------------------------------

    def _lines_sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(order, start, rank)``: node ids grouped by line (in id order within a line), where
        each line's run starts (line ``L`` is ``order[start[L]:start[L + 1]]``), and each node's
        rank within its line."""
        if self._line_order is None:
            keys = self.line_of + 1
            if len(self.lines) < 65535:
                keys = keys.astype(np.uint16)  # numpy sorts 16-bit keys by radix: linear
            order = np.argsort(keys, kind="stable")
            counts = np.bincount(self.line_of + 1, minlength=len(self.lines) + 1)
            start = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=start[1:])
            rank = np.empty(self.n, dtype=np.int64)
            rank[order] = np.arange(self.n) - np.repeat(start[:-1], counts)
            self._line_order = (order, start[1:], rank)  # (line L is group L + 1)
        return self._line_order

    def line_members(self, line: int) -> np.ndarray:
        """The ids of the nodes line ``line`` made, in order."""
        order, start, _ = self._lines_sorted()
        return order[start[line]:start[line + 1]]

    def period(self, line: int) -> int | None:
        """The length of the node sequence that line ``line`` repeats (once per call), if it
        made at least two identical runs of at least two nodes; None otherwise."""
        if line not in self._periods:
            self._periods[line] = self._find_period(line)
        return self._periods[line]

    def _find_period(self, line: int) -> int | None:
        ids = self.line_members(line)
        m = len(ids)
        if m < 4:
            return None
        s = self.structure
        _, _, rank = self._lines_sorted()
        arity = s.arity[ids]
        fixed = np.stack([s.op_code[ids], arity, self.path_of[ids]], axis=1)
        offsets = []
        for k in range(2):  # where the first two inputs come from: how far back on this line,
            has = arity > k  # -1 for another line, -2 for no such input
            offset = np.full(m, -2, dtype=np.int64)
            inp = s.inputs[s.indptr[ids[has]] + k]
            offset[has] = np.where(self.line_of[inp] == line, rank[ids[has]] - rank[inp], -1)
            offsets.append(offset)
        raw = np.stack(offsets, axis=1)
        place = np.arange(m)
        for p in _divisors(m):
            if p < 2 or p == m:
                continue
            head = min(m - p, 64)
            if not np.array_equal(fixed[p:p + head], fixed[:head]):
                continue
            # an input from an earlier call counts as one from elsewhere: the first call of a
            # loop that chains its calls (acc = acc + ...) reads its start from another line
            within = (place % p)[:, None]
            sig = np.concatenate([fixed, np.where(raw > within, -1, raw)], axis=1)
            if np.array_equal(sig[p:], sig[:-p]):
                return p
        return None

    # --- names ----------------------------------------------------------------------------------

    def name_of(self, node: int) -> str:
        """What a view calls a node: its label; else its op and the part it is in (``mul in
        layer0.neuron3``); else ``""`` (use the id)."""
        path = int(self.path_of[node])
        if path < 0:
            return ""
        if self.labelled[node]:
            return self.paths[path]
        code = int(self.structure.op_code[node])
        op = LEAF if code < 0 else self.structure.op_names[code]
        return f"{op} in {self.paths[path]}"

    # --- statistics -----------------------------------------------------------------------------

    def _reduce(self, ids: np.ndarray, gid: np.ndarray, k: int) -> _Stats:
        return _Stats(self, ids, gid, k)

    def stats(self, ids: np.ndarray | Sequence[int] | None = None) -> dict[str, Any]:
        """The statistics of the nodes ``ids`` (all of them by default)."""
        ids = self.ids if ids is None else np.asarray(ids, dtype=np.int64)
        return self._reduce(ids, np.zeros(len(ids), dtype=np.int64), 1).group(0)

    # --- the top level ------------------------------------------------------------------------

    def summary(self, *, limit: int | None = None, file: str | None = None) -> dict[str, Any]:
        """The whole graph's statistics, and one group per line (of ``file`` only, when given),
        per part and per op; each list cut to ``limit`` groups (``counts`` gives their number).

        Lines come in (file, line) order with their ``period`` and number of ``calls``; parts
        shallow first, then in natural order (``neuron2`` before ``neuron10``); ops biggest
        first.
        """
        _check_count("limit", limit)
        lines = list(range(len(self.lines)))
        if file is not None:
            lines = [i for i in lines if self.lines[i][0] == file]
        lines.sort(key=lambda i: self.lines[i])
        sourced = np.flatnonzero(self.line_of >= 0)
        by_line = self._reduce(sourced, self.line_of[sourced], len(self.lines)) if lines else None
        line_rows = []
        for i in lines[:limit]:
            period = self.period(i)
            count = int(by_line.count[i])  # type: ignore[union-attr]
            line_rows.append({"file": self.lines[i][0], "line": self.lines[i][1],
                              "period": period, "calls": count // period if period else None,
                              "stats": by_line.group(i)})  # type: ignore[union-attr]
        part_ids, part_gid = self._part_pairs()
        by_part = self._reduce(part_ids, part_gid, len(self.parts))
        order = sorted(range(len(self.parts)), key=lambda i: (
            self.parts[i].count("."), _natural(self.parts[i])))
        part_rows = [{"part": self.parts[i], "depth": self.parts[i].count(".") + 1,
                      "stats": by_part.group(i)} for i in order[:limit]]
        op_gid, op_keys = self._op_keys(self.ids)
        by_op = self._reduce(self.ids, op_gid, len(op_keys))
        op_order = sorted(range(len(op_keys)), key=lambda i: (-int(by_op.count[i]), op_keys[i]))
        op_order = [i for i in op_order if by_op.count[i]]
        op_rows = [{"op": op_keys[i], "stats": by_op.group(i)} for i in op_order[:limit]]
        return {
            "graph": self.graph_name, "version": self.version, "nodes": self.n,
            "total": self.stats(),
            "lines": line_rows, "parts": part_rows, "ops": op_rows,
            "counts": {"lines": len(lines), "parts": len(self.parts),
                       "ops": int((by_op.count > 0).sum())},
        }

    def _part_pairs(self, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(node, part group) for every part each node of ``ids`` is in."""
        ids = self.ids if ids is None else ids
        path = self.path_of[ids]
        has = path >= 0
        nodes, gids = [], []
        for level in self.prefix_of:
            g = np.full(len(ids), -1, dtype=np.int64)
            g[has] = level[path[has]]
            keep = g >= 0
            nodes.append(ids[keep])
            gids.append(g[keep])
        if not nodes:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(nodes), np.concatenate(gids)

    def _op_keys(self, ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
        codes = self.structure.op_code[ids]
        keys = [*self.structure.op_names, LEAF]
        return np.where(codes < 0, len(keys) - 1, codes).astype(np.int64), keys

    # --- drill-down ---------------------------------------------------------------------------

    def query(self, *, line: Any = None, part: str | None = None, op: str | None = None,
              call: int | None = None, position: int | None = None, by: str | None = None,
              limit: int | None = DEFAULT_LIMIT, members: int = DEFAULT_MEMBERS,
              ) -> dict[str, Any]:
        """The nodes that pass every filter given, their statistics and first ``members`` ids,
        and (with ``by``) their groups: ``"line"``, ``"part"`` (one level below ``part``, or
        the top level), ``"op"``, ``"call"`` or ``"position"`` (these two, and the filters
        ``call`` and ``position``, need a ``line`` with a period). ``line`` is ``{"file",
        "line"}`` or ``(file, line)``. At most ``limit`` groups are listed (``counts`` gives
        their number), each with its first ``members`` ids: ops biggest first, the others in
        their natural order (parts in no sub-part last, under the key None).
        """
        _check_count("limit", limit)
        _check_count("members", members)
        if by is not None and by not in BY:
            raise OptionError(f"by must be one of {', '.join(BY)}, got {by!r}")
        mask = np.ones(self.n, dtype=bool)
        echo: dict[str, Any] = {}
        line_index = period = None
        if line is not None:
            line_index = self._line_index(line)
            mask &= self.line_of == line_index
            echo["line"] = {"file": self.lines[line_index][0], "line": self.lines[line_index][1]}
            period = self.period(line_index)
        if part is not None:
            mask &= self._in_part(part)
            echo["part"] = part
        if op is not None:
            mask &= self._op_mask(op)
            echo["op"] = op
        needs_line = [name for name, value in (("call", call), ("position", position),
                                               ("by", by if by in ("call", "position") else None))
                      if value is not None]
        if needs_line and period is None:
            what = "a line" if line is None else f"line {echo['line']}, which has no period"
            raise OptionError(f"{', '.join(needs_line)} needs {what} (a line that made the "
                              "same nodes once per call)")
        rank = self._lines_sorted()[2] if period is not None else None
        if call is not None:
            mask &= rank // period == _check_index("call", call, self.period_calls(line_index))
            echo["call"] = call
        if position is not None:
            mask &= rank % period == _check_index("position", position, period)
            echo["position"] = position
        ids = np.flatnonzero(mask)
        result: dict[str, Any] = {
            "graph": self.graph_name, "version": self.version, "filters": echo,
            "stats": self.stats(ids), "members": ids[:members].tolist(),
        }
        if line_index is not None:
            result["period"] = period
            result["calls"] = self.period_calls(line_index)
        if by is not None:
            groups, total = self._groups(ids, by, part, period, rank, limit, members)
            result["by"] = by
            result["groups"] = groups
            result["counts"] = {"groups": total}
        return result

    def period_calls(self, line: int | None) -> int | None:
        """How many calls line ``line`` made (its node count over its period), if periodic."""
        if line is None:
            return None
        period = self.period(line)
        return len(self.line_members(line)) // period if period else None

    def _line_index(self, line: Any) -> int:
        if isinstance(line, dict):
            key = (line.get("file"), line.get("line"))
        elif isinstance(line, list | tuple) and len(line) == 2:
            key = (line[0], line[1])
        else:
            raise OptionError(f"line must be {{'file': ..., 'line': ...}} or (file, line), "
                              f"got {line!r}")
        try:
            return self.lines.index(key)  # type: ignore[arg-type]
        except ValueError:
            raise OptionError(f"no node of graph {self.graph_name!r} comes from "
                              f"{key[0]}:{key[1]}") from None

    def _in_part(self, part: str) -> np.ndarray:
        if not isinstance(part, str) or not part:
            raise OptionError(f"part must be a non-empty string, got {part!r}")
        inside = np.array([p == part or p.startswith(part + ".") for p in self.paths] + [False])
        return inside[self.path_of]  # (path -1 reads the final False)

    def _op_mask(self, op: str) -> np.ndarray:
        names = self.structure.op_names
        if op == LEAF:
            return self.structure.is_leaf.copy()
        if op not in names:
            return np.zeros(self.n, dtype=bool)
        return self.structure.op_code == names.index(op)

    def _groups(self, ids: np.ndarray, by: str, part: str | None, period: int | None,
                rank: np.ndarray | None, limit: int | None, members: int
                ) -> tuple[list[dict[str, Any]], int]:
        if by == "line":
            gid = self.line_of[ids]
            keep = gid >= 0
            ids, gid = ids[keep], gid[keep]
            keys = [{"file": f, "line": n} for f, n in self.lines]
            order_key = lambda i: self.lines[i]  # noqa: E731
        elif by == "op":
            gid, names = self._op_keys(ids)
            keys = names  # type: ignore[assignment]
            order_key = None
        elif by == "part":
            gid, keys = self._child_parts(ids, part)  # type: ignore[assignment]
            order_key = lambda i: (keys[i] is None, _natural(keys[i] or ""))  # noqa: E731
        elif by == "call":
            gid = rank[ids] // period
            keys = list(range(int(gid.max()) + 1 if len(gid) else 0))  # type: ignore[assignment]
            order_key = lambda i: i  # noqa: E731
        else:  # position
            gid = rank[ids] % period
            keys = list(range(period))  # type: ignore[assignment]
            order_key = lambda i: i  # noqa: E731
        k = len(keys)
        reduced = self._reduce(ids, gid, k)
        present = np.flatnonzero(reduced.count).tolist()  # (calls, positions: in order)
        if order_key is None:
            present.sort(key=lambda i: (-int(reduced.count[i]), str(keys[i])))
        elif by not in ("call", "position"):
            present.sort(key=order_key)
        listed = present if limit is None else present[:limit]
        firsts = _first_members(ids, gid, listed, members)
        rows = []
        for i in listed:
            row: dict[str, Any] = {"key": keys[i], "stats": reduced.group(i),
                                   "members": firsts[i]}
            if by == "position" and firsts[i]:
                row["name"] = self.name_of(firsts[i][0])
            rows.append(row)
        return rows, len(present)

    def _child_parts(self, ids: np.ndarray, part: str | None) -> tuple[np.ndarray, list]:
        """Group of each node of ``ids``: its part one level below ``part`` (or at the top);
        the last key, None, holds the nodes in ``part`` itself (or in no part)."""
        depth = 0 if part is None else part.count(".") + 1
        keys: list[str | None] = []
        index: dict[str, int] = {}
        child = np.empty(len(self.paths) + 1, dtype=np.int64)
        for i, p in enumerate(self.paths):
            pieces = p.split(".")
            if len(pieces) > depth:
                name = ".".join(pieces[:depth + 1])
                child[i] = index.setdefault(name, len(index))
            else:
                child[i] = -1
        keys = [*index, None]
        child[child == -1] = len(keys) - 1
        child[-1] = len(keys) - 1  # path -1: in no part
        return child[self.path_of[ids]], keys


class _Stats:
    """The statistics of ``k`` groups of nodes, computed in one vectorised pass."""

    def __init__(self, agg: Aggregates, ids: np.ndarray, gid: np.ndarray, k: int) -> None:
        self.agg = agg
        s = agg.structure
        d, g = agg.data[ids], agg.grad[ids]
        fd, fg = agg.finite_data[ids], agg.finite_grad[ids]
        self.count = np.bincount(gid, minlength=k)
        self.leaves = np.bincount(gid, weights=s.is_leaf[ids], minlength=k)
        gd, gg = gid[fd], gid[fg]
        dv, gv = d[fd], g[fg]
        self.finite_data = np.bincount(gd, minlength=k)
        self.finite_grad = np.bincount(gg, minlength=k)
        self.data_sum = np.bincount(gd, weights=dv, minlength=k)
        self.grad_sum = np.bincount(gg, weights=gv, minlength=k)
        self.data_min, self.data_max = _min_max(gd, dv, k)
        self.grad_min, self.grad_max = _min_max(gg, gv, k)
        scale = np.maximum(np.abs(self.grad_min), np.abs(self.grad_max))
        scale[~np.isfinite(scale) | (scale == 0)] = 1.0
        self.grad_sq = np.bincount(gg, weights=(gv / scale[gg]) ** 2, minlength=k)
        self.scale = scale
        self.zero_grad = np.bincount(gid, weights=g == 0, minlength=k)
        self.first = np.full(k, agg.n, dtype=np.int64)
        np.minimum.at(self.first, gid, ids)  # the smallest id of each group
        codes = s.op_code[ids]
        computed = codes >= 0
        nops = max(len(s.op_names), 1)
        self.ops = np.bincount(gid[computed] * nops + codes[computed],
                               minlength=k * nops).reshape(k, nops)

    def group(self, i: int) -> dict[str, Any]:
        """The statistics of group ``i`` as plain data (see `STAT_KEYS`)."""
        names = self.agg.structure.op_names
        count = int(self.count[i])
        fd, fg = int(self.finite_data[i]), int(self.finite_grad[i])
        return {
            "count": count,
            "leaves": int(self.leaves[i]),
            "ops": {names[c]: int(self.ops[i, c]) for c in np.flatnonzero(self.ops[i])},
            "data": _summary(fd, self.data_min[i], self.data_sum[i], self.data_max[i]),
            "grad": _summary(fg, self.grad_min[i], self.grad_sum[i], self.grad_max[i]),
            "grad_norm": _finite(float(self.scale[i]) * math.sqrt(float(self.grad_sq[i]))),
            "zero_grad": int(self.zero_grad[i]),
            "nonfinite_data": count - fd,
            "nonfinite_grad": count - fg,
            "first": int(self.first[i]) if count else None,  # (n when empty)
        }


def _min_max(gid: np.ndarray, v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    low = np.full(k, np.inf)
    high = np.full(k, -np.inf)
    np.minimum.at(low, gid, v)
    np.maximum.at(high, gid, v)
    return low, high


def _summary(n: int, low: float, total: float, high: float) -> dict[str, float | None] | None:
    if not n:
        return None
    return {"min": float(low), "mean": _finite(float(total) / n), "max": float(high)}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _first_members(ids: np.ndarray, gid: np.ndarray, groups: list[int], cap: int
                   ) -> dict[int, list[int]]:
    """The first ``cap`` ids of each group of ``groups`` (ids ascending)."""
    if not cap or not groups:
        return {i: [] for i in groups}
    wanted = np.zeros(int(gid.max()) + 1 if len(gid) else 1, dtype=bool)
    wanted[groups] = True
    keep = wanted[gid]
    sub_ids, sub_gid = ids[keep], gid[keep]
    order = np.argsort(sub_gid, kind="stable")
    sorted_gid = sub_gid[order]
    starts = np.searchsorted(sorted_gid, groups)
    out = {}
    for i, start in zip(groups, starts.tolist(), strict=True):
        run = order[start:start + cap]
        run = run[sorted_gid[start:start + cap] == i]
        out[i] = sub_ids[run].tolist()
    return out


def _divisors(m: int) -> list[int]:
    small, large = [], []
    d = 1
    while d * d <= m:
        if m % d == 0:
            small.append(d)
            if d * d != m:
                large.append(m // d)
        d += 1
    return small + large[::-1]


def _natural(text: str) -> list:
    """A sort key that puts ``neuron2`` before ``neuron10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _check_count(name: str, value: object) -> None:
    if value is not None and (type(value) is not int or value < 0):
        raise OptionError(f"{name} must be a non-negative int, got {value!r}")


def _check_index(name: str, value: object, bound: int | None) -> int:
    if type(value) is not int or not 0 <= value < (bound or 0):
        raise OptionError(f"{name} must be an int in 0..{(bound or 1) - 1}, got {value!r}")
    return value


def _inherit(s: Structure, labelled: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Give every unlabelled node whose users all sit in one part that part, users first."""
    use_ptr, users = s.users()
    n_users = np.diff(use_ptr)
    todo = np.flatnonzero(~labelled & (n_users > 0))[::-1]
    first = users[use_ptr[todo]].tolist()
    several = (n_users[todo] > 1).tolist()
    ptr, flat = use_ptr.tolist(), users.tolist()
    res = part.tolist()
    for v, u, more in zip(todo.tolist(), first, several, strict=True):
        p = res[u]
        if p < 0:
            continue
        if more:
            for w in flat[ptr[v] + 1:ptr[v + 1]]:
                if res[w] != p:
                    break
            else:
                res[v] = p
            continue
        res[v] = p
    return np.asarray(res, dtype=np.int64)


def aggregates(graph: Any) -> Aggregates:
    """`Aggregates.of(graph)`, cached on the graph for its current version and node count.

    A change through the `Graph` API bumps the version; writing a `Value`'s ``data`` or
    ``grad`` directly does not, so call `Aggregates.of` after such writes. A new version that
    changed only values reads only the values again (`Aggregates.revalued`).
    """
    key = (graph.version, len(graph.nodes))
    cached = graph.__dict__.get("_aggregates_cache")
    if cached is not None and cached[0] == key:
        return cached[1]
    agg = cached[1].revalued(graph) if cached is not None else None
    if agg is None:
        agg = Aggregates.of(graph)
    graph.__dict__["_aggregates_cache"] = (key, agg)
    return agg


def units(graph: Any, ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The unit each node of ``ids`` belongs to, for findings about a unit over a whole batch
    (a ReLU off for every sample): ``(unit index of each node, unit names)``.

    Nodes with the same label are one unit (`opgraph.nn` labels a neuron's ReLU
    ``layer0.neuron3.act`` in every call); else nodes made at the same place of the calls of
    one periodic source line (the third ReLU of every ``model(x)``), named ``file:line
    position p``; else each node is a unit of its own, named ``""``.
    """
    nodes = graph.nodes
    ids = np.asarray(ids, dtype=np.int64).tolist()
    agg = rank = None
    index: dict[tuple, int] = {}
    names: list[str] = []
    out = np.empty(len(ids), dtype=np.int64)
    for k, i in enumerate(ids):
        v = nodes[i]
        if v.label:
            key: tuple = ("label", v.label)
            name = v.label
        elif v.source is not None:
            if agg is None:
                agg = aggregates(graph)
                rank = agg._lines_sorted()[2]
            line = int(agg.line_of[i])
            period = agg.period(line)
            place = int(rank[i]) % period if period else int(rank[i])  # type: ignore[index]
            key = ("site", line, place)
            name = f"{v.source[0]}:{v.source[1]} position {place}"
        else:
            key = ("node", i)
            name = ""
        unit = index.get(key)
        if unit is None:
            unit = index[key] = len(names)
            names.append(name)
        out[k] = unit
    return out, names
