"""The layering of the server and the client, read from their source (as tests/core/test_layers
does for opgraph): they use the engine core's public surface only.

Imports are read with `ast`, function-level ones included; those under ``if TYPE_CHECKING:``
never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

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
