"""The graphs that the views are tested on at scale (``from scale_graphs import ...``): the moons
training step of examples/moons.py (about 66,000 nodes) and long accumulation chains."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import opgraph
from opgraph import Graph, Value
from opgraph.datasets import make_moons
from opgraph.nn import MLP

ROOT = Path(__file__).resolve().parents[1]
MOONS = ROOT / "examples" / "moons.py"


def moons_module() -> ModuleType:
    """examples/moons.py, imported as a module (once)."""
    name = "moons_example"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, MOONS)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


def moons_step(points: int = 100, seed: int = 42, *, track: bool = True
               ) -> tuple[Graph, Value, list[Value], MLP]:
    """One step's graph of the moons demo, built and differentiated as examples/moons.py does
    (source lines recorded when ``track``): ``(graph, loss, scores, model)``."""
    moons = moons_module()
    xs, ys = make_moons(points, noise=0.1, seed=seed)
    model = MLP(2, [16, 16, 1], seed=seed)
    with opgraph.track_source(track), opgraph.gc_paused():
        loss, scores = moons.build_loss(model, xs, ys)
        model.zero_grad()
        loss.backward()
        graph = Graph.capture(loss, "moons")
    return graph, loss, scores, model


def moons_line(text: str) -> int:
    """The line of examples/moons.py holding ``text`` (exactly one)."""
    lines = [i for i, line in enumerate(MOONS.read_text().splitlines(), 1) if text in line]
    assert len(lines) == 1, (text, lines)
    return lines[0]


def accumulation(nodes: int, shared: int = 1_000, *, track: bool = False) -> Graph:
    """``acc = acc + w[i % shared] * x`` until the graph holds ``nodes`` nodes (``shared`` + 2
    leaves first, then two nodes a term): a long chain over shared leaves, all its terms made
    on one source line when ``track``."""
    g = Graph("acc")
    ws = [g.leaf(0.001 * (i % 97) - 0.05, f"w{i}") for i in range(shared)]
    x = g.leaf(0.5, "x")
    acc = g.leaf(0.0, "acc0")
    terms = (nodes - shared - 2) // 2
    with opgraph.track_source(track), opgraph.gc_paused():
        for i in range(terms):
            acc = acc + ws[i % shared] * x  # the line every term comes from
    return g
