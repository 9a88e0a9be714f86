"""The layering of the server and the client, read from their source (as tests/core/test_layers
does for opgraph): they use the engine core's public surface only.

Imports are read with `ast`, function-level ones included; those under ``if TYPE_CHECKING:``
never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import opgraph_client
import opgraph_server
import pytest

SERVER = Path(opgraph_server.__file__).resolve().parent
CLIENT = Path(opgraph_client.__file__).resolve().parent
# The engine's own fields of a `Value`: only the core reads or writes them.
CORE_FIELDS = {"_inputs", "_opdef", "_attrs", "_graph", "_id", "_loc"}


def _modules(package: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = {**_modules(SERVER), **_modules(CLIENT)}


def _type_only(tree: ast.AST) -> set[int]:
    return {
        id(inner) for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                   "typing.TYPE_CHECKING")
        for inner in ast.walk(node)
    }


def private_uses(source: str) -> list[str]:
    """What ``source`` touches of opgraph's private names: a `Value`'s engine fields, an
    underscored name of ``core``/``engine``, an underscored name imported from opgraph."""
    tree = ast.parse(source)
    return sorted({
        f"line {node.lineno}: .{node.attr}" for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and (
            node.attr in CORE_FIELDS
            or (node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in ("core", "engine")))
    } | {
        f"line {node.lineno}: {node.module}.{alias.name}" for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "opgraph"
        for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")
    } | {
        f"line {node.lineno}: import {alias.name}" for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if (getattr(node, "module", None) or alias.name).startswith("opgraph.engine")
        or (getattr(node, "module", None) == "opgraph" and alias.name == "engine")
    })


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_server_or_client_module_touches_the_cores_private_names(module: str) -> None:
    assert private_uses(MODULES[module].read_text()) == []


@pytest.mark.parametrize(("source", "found"), [
    ("def f(v):\n    return v._opdef\n", ["line 2: ._opdef"]),
    ("from opgraph import engine\n", ["line 1: import engine"]),
    ("from opgraph.core.value import _new\n", ["line 1: opgraph.core.value._new"]),
    ("def f(core):\n    return core._table()\n", ["line 2: ._table"]),
    ("def f(v):\n    return v.opdef, v.source, v.id\n", []),
])
def test_the_private_name_check_itself(source: str, found: list[str]) -> None:
    assert private_uses(source) == found


def _imports(module: str, path: Path) -> set[str]:
    """Every server or client module ``module`` imports, at any level of its code."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_only(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # `from opgraph_server import store` imports the module
                sub = f"{base}.{alias.name}"
                names.add(sub if sub in MODULES else base)
    return {n for n in names if n in MODULES}


def _layer(module: str) -> str:
    """The methods package counts as one layer."""
    return "opgraph_server.methods" if module.startswith("opgraph_server.methods") else module


def _graph(collapse_methods: bool) -> nx.DiGraph:
    g = nx.DiGraph()
    for module, path in MODULES.items():
        g.add_node(module)
        for target in _imports(module, path):
            if target != module:
                g.add_edge(module, target)
    if collapse_methods:
        g = nx.relabel_nodes(g, _layer, copy=True)
        g.remove_edges_from(nx.selfloop_edges(g))
    return g


def test_no_import_cycles_in_the_server_and_client() -> None:
    assert list(nx.simple_cycles(_graph(collapse_methods=False))) == []


def test_no_import_cycle_between_server_and_methods() -> None:
    g = _graph(collapse_methods=True)
    assert list(nx.simple_cycles(g)) == []
    assert g.has_edge("opgraph_server.server", "opgraph_server.methods")
    assert not nx.has_path(g, "opgraph_server.methods", "opgraph_server.server")


def test_dispatch_knows_neither_the_server_nor_the_methods() -> None:
    below = nx.descendants(_graph(collapse_methods=True), "opgraph_server.dispatch")
    assert below.isdisjoint({"opgraph_server.server", "opgraph_server.methods"})


def test_the_client_depends_on_address_protocol_and_errors_only() -> None:
    g = _graph(collapse_methods=True)
    client = {m for m in g if m.startswith("opgraph_client")}
    reached = set().union(*(nx.descendants(g, m) for m in client)) - client
    assert reached <= {"opgraph_server.address", "opgraph_server.protocol",
                       "opgraph_server.errors"}


def test_the_import_reader_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    path = tmp_path / "late.py"
    path.write_text("from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    from opgraph_server.server import Server\n"
                    "def f():\n    from ..server import serve\n"
                    "    from opgraph_server import store\n")
    assert _imports("opgraph_server.methods.late", path) == {"opgraph_server.server",
                                                             "opgraph_server.store"}
