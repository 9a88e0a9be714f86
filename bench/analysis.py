"""Analyses and summaries at scale, against networkx: ``python bench/analysis.py``.

For each graph, the bar of issue 12: the whole ``analyze`` (diagnostics included, nothing
cached) takes at most 5x what networkx takes to build and topologically sort the same graph.
Printed: that ratio, the time of each analysis, and the aggregates (`opgraph.aggregate`):
reading the graph, the summary, a drill-down, the diagnostics.

Graphs: the 200,000-node accumulation file (``acc = acc + w[i % 1000] * x``, 1,001 shared
leaves; written with `opgraph.save` and read back), a 1,000,000-node graph of the same shape,
and the moons training step of examples/moons.py (about 66,000 nodes). ``--quick`` skips the
1,000,000-node graph. Times are the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import networkx as nx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the graphs the tests use

import opgraph  # noqa: E402
from opgraph import analysis  # noqa: E402
from opgraph.aggregate import Aggregates  # noqa: E402
from opgraph.diagnostic_groups import group_diagnostics  # noqa: E402
from opgraph.diagnostics import run_diagnostics  # noqa: E402
from opgraph.structure import build_structure  # noqa: E402

STEPS = ["ops, leaves, outputs", "levels (depth, widths)", "critical path", "fan-in/out",
         "dominator tree (unused)", "dominators"]


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """The least time of ``repeat`` calls of ``fn`` (with a collection before each)."""
    times, result = [], None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def forget(graph) -> None:
    """Drop every cache a graph holds, so an analysis starts from nothing."""
    for key in ("_nx_cache", "_structure_cache", "_aggregates_cache"):
        graph.__dict__.pop(key, None)


def networkx_baseline(graph, repeat: int) -> float:
    """networkx building the graph's DiGraph (as `analysis.to_networkx` does) and sorting it."""
    def run():
        forget(graph)
        g = analysis.to_networkx(graph)
        list(nx.topological_sort(g))
        forget(graph)
    return best(run, repeat)[0]


def analyze_fresh(graph, repeat: int) -> float:
    def run():
        forget(graph)
        analysis.analyze(graph)
    return best(run, repeat)[0]


def analysis_steps(graph, repeat: int) -> list[tuple[str, float]]:
    """Each analysis's own time (the structure built first, then each step of analyze)."""
    build, s = best(lambda: build_structure(graph.nodes), repeat)
    forget(graph)
    graph.__dict__["_structure_cache"] = (len(graph.nodes), graph.nodes[-1], s)
    marks: list[float] = []
    start = time.perf_counter()
    analysis.analyze(graph, diagnostics=False,
                     progress=lambda done, total: marks.append(time.perf_counter()))
    rows = [("reading the graph into arrays", build)]
    rows += [(name, b - a) for name, a, b in zip(STEPS, [start, *marks], marks, strict=False)]
    diag, found = best(lambda: run_diagnostics(graph).diagnostics, repeat)
    rows.append((f"diagnostics ({len(found)} found)", diag))
    rows.append(("grouping them", best(lambda: group_diagnostics(graph, found), repeat)[0]))
    return rows


def aggregate_rows(graph, repeat: int, line: tuple[str, int] | None) -> list[tuple[str, float]]:
    forget(graph)
    read, agg = best(lambda: Aggregates.of(graph), repeat)
    rows = [("aggregates: reading the graph", read),
            ("aggregates: summary (every line, part, op)", best(agg.summary, repeat)[0])]
    if line is not None:
        rows.append(("aggregates: the biggest line by call (50 shown)",
                     best(lambda: agg.query(line=line, by="call"), repeat)[0]))
        rows.append(("aggregates: one call of it by part",
                     best(lambda: agg.query(line=line, call=0, by="part"), repeat)[0]))
    return rows


def report(title: str, graph, repeat: int, *, line: tuple[str, int] | None = None) -> dict:
    print(f"\n{title}: {len(graph):,} nodes")
    base = networkx_baseline(graph, repeat)
    whole = analyze_fresh(graph, repeat)
    print(f"  networkx build + topological sort  {base:8.3f} s")
    print(f"  analyze, everything, from nothing  {whole:8.3f} s   ratio {whole / base:.2f} "
          "(the bar: 5)")
    for name, seconds in analysis_steps(graph, repeat) + aggregate_rows(graph, repeat, line):
        print(f"    {name:48} {seconds * 1e3:9.1f} ms")
    return {"graph": title, "nodes": len(graph), "networkx": base, "analyze": whole,
            "ratio": whole / base}


def dominators_against_networkx(sizes: list[int]) -> None:
    """The dominator computation alone, ours against networkx's, on chains small enough for
    networkx to finish: its time grows with the square of the size, ours in proportion."""
    from scale_graphs import accumulation

    from opgraph.dominators import gradient_dominators

    print("\ndominators of an accumulation chain (1,001 shared leaves), on networkx's graph:")
    for nodes in sizes:
        graph = accumulation(nodes)
        g = analysis.to_networkx(graph)
        root = len(graph) - 1
        leaves = [v.id for v in graph.leaves]
        start = time.perf_counter()
        nx.immediate_dominators(g.reverse(copy=False), root)
        theirs = time.perf_counter() - start
        start = time.perf_counter()
        gradient_dominators(g, root, leaves)
        ours = time.perf_counter() - start
        print(f"  {nodes:7,} nodes: networkx immediate_dominators {theirs:6.2f} s, "
              f"opgraph.dominators {ours:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best)")
    parser.add_argument("--quick", action="store_true", help="skip the 1,000,000-node graph")
    args = parser.parse_args()
    from scale_graphs import MOONS, accumulation, moons_line, moons_step

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "accumulation.opg"
        opgraph.save(accumulation(200_000), path)
        graph = opgraph.load(path)
        results.append(report("the 200,000-node accumulation file", graph, args.repeat))
        del graph
    moons, *_ = moons_step()
    results.append(report("the moons step", moons, args.repeat,
                          line=(str(MOONS), moons_line("scores = [model(x)"))))
    del moons
    if not args.quick:
        graph = accumulation(1_000_000, track=True)
        line = graph.nodes[-1].source
        results.append(report("a 1,000,000-node accumulation chain", graph, args.repeat,
                              line=line))
        del graph
    dominators_against_networkx([10_000, 20_000, 40_000])
    print()
    for r in results:
        print(f"{r['graph']:38} ratio {r['ratio']:.2f} ({r['analyze']:.2f} s against "
              f"{r['networkx']:.2f} s)")


if __name__ == "__main__":
    main()
