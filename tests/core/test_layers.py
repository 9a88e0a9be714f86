"""The layering of the core, read from the source: who imports whom, and who touches what.

Imports are read with `ast`, function-level ones included (an import inside a function is a
dependency all the same; it only runs later). Imports under ``if TYPE_CHECKING:`` never run
and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

import opgraph

PACKAGE = Path(opgraph.__file__).resolve().parent
# The layers that must not import each other in a cycle (the core counts as one).
LAYERED = ("opgraph.core", "opgraph.registry", "opgraph.graph", "opgraph.analysis",
           "opgraph.diagnostics", "opgraph.gcpolicy", "opgraph.errors", "opgraph.opdef",
           "opgraph.hookspecs")
# The engine's own fields of a `Value`: only the core reads or writes them.
CORE_FIELDS = {"_inputs", "_opdef", "_attrs", "_graph", "_id", "_loc"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """Every opgraph module ``module`` imports, at any level of its code."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    type_only = {
        id(inner) for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                   "typing.TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:  # `from opgraph import graph` imports opgraph.graph
                sub = f"{base}.{alias.name}"
                names.add(sub if sub in MODULES else base)
    return {n for n in names if n in MODULES}


def _layer(module: str) -> str:
    return "opgraph.core" if module.startswith("opgraph.core.") else module


def _graph(collapse_core: bool) -> nx.DiGraph:
    g = nx.DiGraph()
    for module, path in MODULES.items():
        g.add_node(module)
        for target in _imports(module, path):
            if target != module:
                g.add_edge(module, target)
    if collapse_core:
        g = nx.relabel_nodes(g, _layer, copy=True)
        g.remove_edges_from(nx.selfloop_edges(g))
    return g


def test_no_import_cycles_between_core_registry_graph_analysis_and_diagnostics():
    # (opgraph/__init__ imports everything: importing the package itself from one of these
    # layers would be a cycle through it, and is found as one.)
    g = _graph(collapse_core=True)
    layers = g.subgraph([*LAYERED, "opgraph"])
    assert list(nx.simple_cycles(layers)) == []


def test_no_import_cycles_inside_the_core():
    g = _graph(collapse_core=False)
    core = g.subgraph([m for m in MODULES if m.startswith("opgraph.core")])
    assert list(nx.simple_cycles(core)) == []


def test_the_core_imports_nothing_above_it():
    allowed = {"opgraph.core", "opgraph.errors", "opgraph.opdef", "opgraph.gcpolicy"}
    g = _graph(collapse_core=True)
    assert set(g.successors("opgraph.core")) <= allowed


def test_the_cycle_check_sees_function_level_imports(tmp_path, monkeypatch):
    """(The check itself: an import inside a function counts.)"""
    path = tmp_path / "late.py"
    path.write_text("from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    import opgraph.graph\n"
                    "def f():\n    from opgraph.analysis import analyze\n")
    assert _imports("opgraph.late", path) == {"opgraph.analysis"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("opgraph.core")))
def test_no_module_outside_the_core_touches_its_private_names(module):
    tree = ast.parse(MODULES[module].read_text())
    touched = sorted({
        f"line {node.lineno}: .{node.attr}" for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and (
            node.attr in CORE_FIELDS
            or (node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in ("core", "engine")))
    } | {
        f"line {node.lineno}: {node.module}.{alias.name}" for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opgraph.core")
        for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")
    })
    assert touched == []
