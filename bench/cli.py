"""The CLI's views at training scale: ``python bench/cli.py`` (``--quick`` skips the longest).

Graphs: one training step of examples/moons.py (65,818 nodes, after backward) and the
200,000-node accumulation file (``acc = acc + w[i % 1000] * x``, 1,002 leaves), both written
with `opgraph.save` to a temporary folder.

Printed, for each graph:

- in this process: loading the file; ``analyze`` (diagnostics included); the picture (`plan`,
  and ``dot`` laying it out: the bar of issue 12 is under 2 s for the moons graph); gradcheck
  per leaf, as it is (each leaf re-evaluates the nodes it affects) and as it was (two forward
  passes over the whole graph per leaf), and a sample of 50 leaves;
- each command run as a user runs it (``python -m opgraph ...``, a new process, the file
  loaded each time): its wall time, and the lines and widest line of what it printed.

In-process times are CPU times (other work on the machine does not count), the best of
``--repeat`` runs; ``dot``'s layouts and the commands are timed by the wall clock too (the
commands once). No figure here is checked by a test; the tests check what the commands print.
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the graphs the tests use

import opgraph  # noqa: E402
from opgraph import core  # noqa: E402
from opgraph.analysis import analyze  # noqa: E402
from opgraph.render import layout, plan  # noqa: E402


def best(fn: Callable[[], object], repeat: int,
         clock: Callable[[], float] = time.process_time) -> tuple[float, object]:
    """The least time of ``repeat`` calls of ``fn`` (with a collection before each), by
    ``clock``: this process's CPU time by default, so that other work on the machine does not
    count (``dot`` runs in a subprocess: its layouts are timed by the wall clock)."""
    times, result = [], None
    for _ in range(repeat):
        gc.collect()
        start = clock()
        result = fn()
        times.append(clock() - start)
    return min(times), result


def forget(graph) -> None:
    """Drop every cache a graph holds, so a view starts from nothing."""
    for key in ("_nx_cache", "_structure_cache", "_aggregates_cache"):
        graph.__dict__.pop(key, None)


def files(folder: Path) -> dict[str, Path]:
    from scale_graphs import accumulation, moons_step

    moons = moons_step(track=True)[0]
    acc = accumulation(200_000)
    acc.backward(acc.nodes[-1])
    return {"moons": opgraph.save(moons, folder / "moons.opg"),
            "acc": opgraph.save(acc, folder / "acc.opg")}


def plain_leaf(order: list, root, leaf, eps: float = 1e-6) -> float:
    """One leaf checked as gradcheck did before: two forward passes over the whole order."""
    up = core.evaluate(order, {leaf: leaf.data + eps})[root]
    down = core.evaluate(order, {leaf: leaf.data - eps})[root]
    return (up - down) / (2 * eps)


def in_process(name: str, path: Path, repeat: int, quick: bool) -> None:
    t, graph = best(lambda: opgraph.load(path), 1)
    print(f"{name}: {len(graph.nodes):,} nodes")
    print(f"  load the file                 {t:8.3f} s")

    def fresh_analysis():
        forget(graph)
        return analyze(graph)

    t, _ = best(fresh_analysis, repeat)
    print(f"  analyze (diagnostics too)     {t:8.3f} s")

    def fresh_plan():
        forget(graph)
        return plan(graph, format="png")

    t_plan, picture = best(fresh_plan, repeat)
    t_dot, data = best(lambda: layout(picture), repeat, time.perf_counter)
    print(f"  picture: plan                 {t_plan:8.3f} s   ({picture.drawn} by "
          f"{picture.summary}, {len(data):,} bytes of PNG)")
    print(f"  picture: dot                  {t_dot:8.3f} s   (plan + dot "
          f"{t_plan + t_dot:.3f} s)")
    if any(v.label.startswith("layer1.") for v in graph.nodes):
        t, inside = best(lambda: plan(graph, format="png", part="layer1"), repeat)
        t_dot, _ = best(lambda: layout(inside), repeat, time.perf_counter)
        print(f"  picture: --part layer1        {t + t_dot:8.3f} s")
    t, _ = best(lambda: layout(plan(graph, format="svg", around=len(graph.nodes) // 2,
                                    depth=2)), repeat, time.perf_counter)
    print(f"  picture: --around N --depth 2 {t:8.3f} s")

    root = graph.nodes[-1]
    order = core.topological_order(root)
    leaves = [v for v in order if v.is_leaf]
    sample = leaves[:: max(1, len(leaves) // 20)][:20]
    start = time.process_time()
    for leaf in sample:
        plain_leaf(order, root, leaf)
    before = (time.process_time() - start) / len(sample)
    t50, report = best(lambda: opgraph.gradcheck(root, sample=50), 1)
    t1, _ = best(lambda: opgraph.gradcheck(root, sample=1), 2)
    per_leaf = max(t50 - t1, 0.0) / 49
    print(f"  gradcheck, fixed cost         {t1:8.3f} s   (backward, every op node's rule)")
    print(f"  gradcheck, per leaf           {per_leaf:8.4f} s   (as it was: {before:.4f} s; "
          f"{before / per_leaf:.1f}x)")
    print(f"  gradcheck --sample 50         {t50:8.3f} s   ({len(report.leaves)} of "
          f"{report.total_leaves} leaves)")
    print(f"  gradcheck of every leaf       {t1 + per_leaf * len(leaves):8.1f} s   "
          f"(estimated from the sample; as it was: {before * len(leaves):.1f} s)")
    if not quick and name == "moons":
        t, report = best(lambda: opgraph.gradcheck(root), 1)
        print(f"  gradcheck of every leaf       {t:8.1f} s   (measured, {len(report.leaves)} "
              "leaves)")


COMMANDS = [
    ["analyze", "{file}"],
    ["analyze", "{file}", "--json"],
    ["render", "{file}", "-o", "{out}.png"],
    ["gradcheck", "{file}", "--sample", "20"],
    ["ops"],
]


def commands(name: str, path: Path, folder: Path) -> None:
    print(f"{name}: each command in a new process (wall time, and CPU time of it and its dot)")
    for template in COMMANDS:
        args = [a.format(file=path, out=folder / name) for a in template]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "opgraph", *args], capture_output=True,
                              text=True, check=False)
        spent = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        lines = done.stdout.splitlines()
        widest = max(map(len, lines), default=0)
        shown = " ".join(template).replace("{file}", f"{name}.opg").replace("{out}", name)
        print(f"  opgraph {shown:<36} {spent:6.2f} s (CPU {cpu:5.2f} s)  exit "
              f"{done.returncode}  {len(lines):>7,} lines, widest {widest:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="skip the gradcheck of every leaf of the moons graph")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        made = files(folder)
        for name, path in made.items():
            in_process(name, path, args.repeat, args.quick)
        for name, path in made.items():
            commands(name, path, folder)


if __name__ == "__main__":
    main()
