"""Benchmarks against micrograd, side by side in one run: ``make bench`` (or python bench/run.py).

Each measurement runs in a fresh process (so one engine's garbage never slows the other),
``--repeat`` times; the table shows medians, the spread (min-max) and the ratio
micrograd / opgraph (above 1: opgraph is faster).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (row label, workload, argument, engines)
ROWS = [
    ("W1 seed neuron x20,000", "w1", None, ("micrograd", "opgraph")),
    ("W2 deep chain N=1,000", "w2", 1_000, ("micrograd", "opgraph")),
    ("W2 deep chain N=100,000", "w2", 100_000, ("micrograd", "opgraph")),
    ("W2 deep chain N=1,000,000", "w2", 1_000_000, ("micrograd", "opgraph")),
    ("W2 deep chain N=100,000 (compiled)", "w2", 100_000, ("micrograd", "compiled")),
    ("W3 moons step (eager)", "w3", None, ("micrograd", "opgraph")),
    ("W3 moons step (eager, gc off)", "w3_gc_off", None, ("micrograd", "opgraph")),
    ("W3 moons step (compiled)", "w3", None, ("micrograd", "compiled")),
    ("W4 wide sum of 200,000 products", "w4", None, ("micrograd", "opgraph")),
    ("W4 wide sum (compiled)", "w4", None, ("micrograd", "compiled")),
]


def run_once(engine: str, workload: str, arg: int | None) -> dict:
    """One fresh-process run of ``workload`` by ``engine``: what workloads.py prints."""
    cmd = [sys.executable, str(HERE / "workloads.py"), engine, workload]
    if arg is not None:
        cmd.append(str(arg))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(engine: str, workload: str, arg: int | None, repeat: int) -> dict:
    """Median seconds, spread and peak memory of ``repeat`` fresh-process runs."""
    runs = []
    for _ in range(repeat):
        runs.append(run_once(engine, workload, arg))
        if "error" in runs[-1]:
            break
    return summary(runs)


def measure_alternating(engines: Sequence[str], workload: str, arg: int | None,
                        repeat: int) -> list[dict]:
    """`measure` of each of ``engines``, their runs taken in turn (one of each, ``repeat``
    times), so that a machine loaded by something else weighs on each alike."""
    runs: list[list[dict]] = [[] for _ in engines]
    for _ in range(repeat):
        for engine, done in zip(engines, runs, strict=True):
            if not done or "error" not in done[-1]:
                done.append(run_once(engine, workload, arg))
    return [summary(done) for done in runs]


def summary(runs: list[dict]) -> dict:
    """Median seconds, spread and peak memory of ``runs`` (the error of the last if it
    failed)."""
    if "error" in runs[-1]:
        return {"error": runs[-1]["error"], "rss": runs[-1]["peak_rss_mb"]}
    seconds = [r["seconds"] for r in runs]
    result = {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
              "rss": max(r["peak_rss_mb"] for r in runs)}
    if "compile_seconds" in runs[0]:  # the compiled runs: compiling against networkx's sort
        result["compile_ratio"] = statistics.median(
            r["compile_seconds"] / r["networkx_seconds"] for r in runs)
        result["compile"] = statistics.median(r["compile_seconds"] for r in runs)
        result["networkx"] = statistics.median(r["networkx_seconds"] for r in runs)
    return result


def fmt_time(result: dict) -> str:
    if "error" in result:
        return f"fails: {result['error']}"
    m = result["median"]
    unit, scale = ("ms", 1e3) if m < 1 else ("s", 1)
    return (f"{m * scale:.3g} {unit} ({result['min'] * scale:.3g}-"
            f"{result['max'] * scale:.3g})")


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def print_torch_floor(compiled: dict | None, torch: dict | None) -> None:
    """The W3 step in PyTorch on tensors, the floor for the compiled executor (if installed;
    its runs alternate with the compiled executor's)."""
    if torch is None:
        print("PyTorch is not installed here: `.venv/bin/pip install torch` (a CPU build) adds "
              "the W3 step on tensors, the floor for the compiled executor.")
        return
    if "error" in torch:
        print(f"PyTorch's W3 step failed: {torch['error']}")
        return
    version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    line = (f"PyTorch {version} on tensors, one thread, the same W3 step (the floor; its runs "
            f"alternate with the compiled executor's): {fmt_time(torch)}, peak RSS "
            f"{torch['rss']:.0f} MB")
    if compiled and "median" in compiled and "median" in torch:
        line += (f"; the compiled executor takes {compiled['median'] / torch['median']:.2f}x "
                 f"that")
    print(line)


def print_compile_times(results: list[dict]) -> None:
    """What compiling took, against networkx building and sorting the same graph in the same
    process (the target: at most 1.5x)."""
    for r in results:
        b = r["opgraph"]
        if "compile" in b:
            print(f"compile_graph, {r['workload'].split(' (')[0]}: {b['compile']:.3g} s; "
                  f"networkx builds and sorts the same graph in {b['networkx']:.3g} s "
                  f"(ratio {b['compile_ratio']:.2f}, median of the runs' ratios)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process runs per cell")
    parser.add_argument("--only", help="run only rows whose label contains this text")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.platform()}")
    print("times: median of", args.repeat, "fresh-process runs (min-max); ratio = "
          "micrograd / opgraph; memory: peak RSS of the process, MB\n")
    header = f"{'workload':34} {'micrograd 0.1.0':>26} {'opgraph':>26} {'ratio':>7} {'RSS':>13}"
    print(header)
    print("-" * len(header))
    results = []
    torch = None
    for label, workload, arg, (ref, ours) in ROWS:
        if args.only and args.only not in label:
            continue
        a = measure(ref, workload, arg, args.repeat)
        if (ours, workload) == ("compiled", "w3") and has_torch():
            b, torch = measure_alternating([ours, "torch"], workload, arg, args.repeat)
        else:
            b = measure(ours, workload, arg, args.repeat)
        ratio = (f"{a['median'] / b['median']:.1f}x" if "median" in a and "median" in b
                 else "-")
        rss = f"{a['rss']:.0f}/{b['rss']:.0f}"
        print(f"{label:34} {fmt_time(a):>26} {fmt_time(b):>26} {ratio:>7} {rss:>13}",
              flush=True)
        results.append({"workload": label, "micrograd": a, "opgraph": b, "engine": ours})
    print("\nmicrograd runs at Python's default recursion limit, except W4, which needs "
          "sys.setrecursionlimit(10**7) for its recursive topological sort. \"gc off\": "
          "Python's cyclic garbage collector switched off during the step, in both engines.")
    print_compile_times(results)
    if any(label.startswith("W3") for label in (r["workload"] for r in results)):
        compiled = next((r["opgraph"] for r in results if r["engine"] == "compiled"
                         and r["workload"].startswith("W3")), None)
        if compiled is None and has_torch():
            torch = measure("torch", "w3", None, args.repeat)
        print_torch_floor(compiled, torch)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
