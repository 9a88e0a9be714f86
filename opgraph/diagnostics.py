"""Diagnostics: warnings about a graph, delivered by plugins in the language-server shape."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from opgraph.errors import OpgraphError
from opgraph.graph import as_graph
from opgraph.registry import PluginProblem, Registry, call_hook, default_registry

SEVERITIES = ("error", "warning", "info", "hint")


@dataclass(frozen=True)
class Diagnostic:
    """One finding: a stable ``code``, a ``severity``, the ``node`` id (or None) and a message.

    A finding about many nodes at once (a ReLU unit off for every sample) names one in ``node``,
    gives how many it stands for in ``count`` and some of the others in ``related``.
    """

    code: str
    severity: str
    node: int | None
    message: str
    plugin: str = ""
    count: int = 1
    related: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise OpgraphError(
                f"diagnostic {self.code!r}: severity must be one of {SEVERITIES}, "
                f"got {self.severity!r}"
            )
        if type(self.count) is not int or self.count < 1:
            raise OpgraphError(f"diagnostic {self.code!r}: count must be a positive int, "
                               f"got {self.count!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON and the wire (``count`` and ``related`` only when count > 1)."""
        data = {"code": self.code, "severity": self.severity, "node": self.node,
                "message": self.message, "plugin": self.plugin}
        if self.count > 1:
            data["count"] = self.count
            data["related"] = list(self.related)
        return data


@dataclass
class DiagnosticsResult:
    """The diagnostics of a graph, and the plugins that failed to produce theirs."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)


def run_diagnostics(graph: Any, registry: Registry | None = None) -> DiagnosticsResult:
    """Run every ``opgraph_diagnostics`` hook on ``graph`` (a `Graph` or a root `Value`).

    A plugin that raises, or returns something that is not a `Diagnostic`, is reported in
    ``problems`` by name; the others still run. Results are sorted by node, then code.
    """
    graph = as_graph(graph)
    if registry is None:  # not `registry or ...`: a registry with no ops is falsy
        registry = default_registry()
    result = DiagnosticsResult()
    for plugin, hook in registry.diagnostics_hooks():
        found, problem = call_hook(plugin, "opgraph_diagnostics", hook, Diagnostic, graph=graph)
        if problem is not None:
            result.problems.append(problem)  # what came before the bad item is kept
        result.diagnostics.extend(
            item if item.plugin else replace(item, plugin=plugin) for item in found)
    result.diagnostics.sort(key=lambda d: (-1 if d.node is None else d.node, d.code))
    return result
