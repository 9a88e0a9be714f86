"""Diagnostics grouped by code and site, with counts, and capped: what a table or an editor
shows when a graph has thousands of findings.

The site of a diagnostic is where its node came from: the source line that created it
(``{"file": ..., "line": ...}``) when it was recorded, else the model part its label names
(``{"part": "layer0.neuron3"}`` for ``layer0.neuron3.act``, see `opgraph.nn`), else None (a
graph-level finding, or a node with neither).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opgraph.diagnostics import SEVERITIES, Diagnostic
from opgraph.structure import OptionError

Site = dict[str, Any] | None


def site_of(graph: Any, node: int | None) -> Site:
    """The site of ``node`` in ``graph`` (see the module's docstring)."""
    if node is None or not 0 <= node < len(graph.nodes):
        return None
    value = graph.nodes[node]
    loc = value.source
    if loc is not None:
        return {"file": loc[0], "line": loc[1]}
    part = value.label.rpartition(".")[0]
    return {"part": part} if part else None


def _site_key(site: Site) -> tuple:
    if site is None:
        return ()
    if "file" in site:
        return ("file", site["file"], site["line"])
    return ("part", site["part"])


def group_diagnostics(graph: Any, diagnostics: Iterable[Diagnostic | Mapping[str, Any]], *,
                      limit: int | None = None, per_group: int = 10) -> dict[str, Any]:
    """Diagnostics (objects or their dicts) grouped by ``(code, site)``.

    Returns ``{"total": how many diagnostics, "occurrences": how many nodes they stand for,
    "groups": [...], "counts": {"groups": how many groups}}``. Each group is ``{"code",
    "severity", "site", "count" (diagnostics in it), "occurrences" (the sum of their counts),
    "nodes" (the first ``per_group`` node ids), "message" (the first one's), "plugin"}``.
    Groups come most severe first, then biggest first, then by first node; with ``limit``,
    only the first ``limit`` groups are listed (``counts`` still says how many there are).
    """
    for name, value in (("limit", limit), ("per_group", per_group)):
        if value is not None and (type(value) is not int or value < 0):
            raise OptionError(f"{name} must be a non-negative int, got {value!r}")
    groups: dict[tuple, dict[str, Any]] = {}
    total = occurrences = 0
    for d in diagnostics:
        item = d.to_dict() if isinstance(d, Diagnostic) else d
        node = item.get("node")
        count = item.get("count", 1)
        site = site_of(graph, node)
        key = (item["code"], _site_key(site))
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                "code": item["code"], "severity": item["severity"], "site": site, "count": 0,
                "occurrences": 0, "nodes": [], "message": item["message"],
                "plugin": item.get("plugin", ""),
            }
        group["count"] += 1
        group["occurrences"] += count
        if node is not None and len(group["nodes"]) < per_group:
            group["nodes"].append(node)
        total += 1
        occurrences += count
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    ordered = sorted(groups.values(), key=lambda g: (
        rank.get(g["severity"], len(rank)), -g["count"], g["nodes"][0] if g["nodes"] else -1,
        g["code"]))
    listed = ordered if limit is None else ordered[:limit]
    return {"total": total, "occurrences": occurrences, "groups": listed,
            "counts": {"groups": len(ordered)}}
