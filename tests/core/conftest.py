"""Fixtures shared by the core tests: installing extra op plugins, building real distributions."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from pathlib import Path

import pytest

from opgraph import hookimpl, registry


@pytest.fixture
def install_ops():
    """``install_ops(*plugins)`` makes a registry of the installed plugins plus ``plugins``
    (``(name, plugin)`` pairs) the process-wide one; the previous registry comes back after."""
    previous = registry.set_default_registry(registry.default_registry())

    def install(*plugins, entry_points: bool = True) -> registry.Registry:
        built = registry.build_registry(plugins=plugins, entry_points=entry_points)
        registry.set_default_registry(built)
        return built

    yield install
    registry.set_default_registry(previous)


def _ops_plugin(*opdefs) -> types.SimpleNamespace:
    """A plugin object whose ``opgraph_register_ops`` hook returns ``opdefs``."""

    @hookimpl
    def opgraph_register_ops():
        return list(opdefs)

    return types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops)


@pytest.fixture
def ops_plugin():
    """``ops_plugin(*opdefs)``: a plugin object delivering those op definitions."""
    return _ops_plugin


@pytest.fixture
def make_dist(tmp_path, monkeypatch):
    """``make_dist(name, entry_points, modules)`` writes an installed distribution into a folder
    on ``sys.path``: ``<name>-0.1.dist-info/`` with METADATA and entry_points.txt declaring
    ``entry_points`` (entry-point name -> module) in the group ``opgraph``, and each module
    (module name -> source). The modules are unloaded again afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    written: list[str] = []

    def make(name: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
        info = site / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n"
        )
        lines = ["[opgraph]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            written.append(module)
        return info

    yield make
    for module in written:
        sys.modules.pop(module, None)


def _dot_layout(dot) -> dict:
    """Lay ``dot`` (a graphviz Digraph) out with the real ``dot`` program; returns
    ``{"records": [labels of record nodes], "ops": [labels of other nodes],
    "edges": [(tail label, head label)], "graph": graph attributes}``."""
    laid_out = json.loads(dot.pipe(format="json0", encoding="utf-8"))
    objects = laid_out.get("objects", [])
    records = [o["label"] for o in objects if o.get("shape") == "record"]
    ops = [o["label"] for o in objects if o.get("shape") != "record"]
    edges = [
        (objects[e["tail"]]["label"], objects[e["head"]]["label"])
        for e in laid_out.get("edges", [])
    ]
    return {"records": records, "ops": ops, "edges": edges, "graph": laid_out}


@pytest.fixture
def dot_layout():
    """``dot_layout(digraph)``: the picture as the real ``dot`` program lays it out."""
    return _dot_layout
