"""What a Hessian-vector product costs next to a backward pass: ``python bench/higher.py``.

For each graph: one float backward pass (``root.backward()``), the gradient as nodes
(``opgraph.grad(root, inputs, create_graph=True)``), a Hessian-vector product
(``opgraph.hvp``: that, then one float pass over the gradient graph seeded with the vector) and,
where the inputs are few, the whole Hessian (one float pass per input). Times are medians of
``--repeat`` runs in this process; "x backward" is each time over the backward pass's; "graph"
is how many nodes the gradient graph adds.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable

from opgraph import Value, grad, hessian, hvp, topological_order
from opgraph.core.higher import topological_order as walk  # (of several roots)


def neuron() -> tuple[Value, list[Value]]:
    """The seed's neuron: tanh(x1*w1 + x2*w2 + b), five inputs."""
    xs = [Value(2.0), Value(0.0), Value(-3.0), Value(1.0), Value(6.8813735870195432)]
    x1, x2, w1, w2, b = xs
    return (x1 * w1 + x2 * w2 + b).tanh(), xs


def chain(n: int) -> Callable[[], tuple[Value, list[Value]]]:
    """W2's chain: x = tanh(x*w + b), n times, with shared w and b; inputs x0, w, b."""

    def make() -> tuple[Value, list[Value]]:
        w, b, x0 = Value(0.5), Value(0.1), Value(0.3)
        x = x0
        for _ in range(n):
            x = (x * w + b).tanh()
        return x, [x0, w, b]

    return make


def moons_loss() -> tuple[Value, list[Value]]:
    """W3's loss: MLP(2, [16, 16, 1]) on 100 moons points, max-margin loss and L2; the
    inputs are the model's 337 parameters."""
    from opgraph.datasets import make_moons
    from opgraph.nn import MLP

    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    X, y = make_moons(100, noise=0.1, seed=0)
    scores = [model(list(map(Value, row))) for row in X]
    losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores, strict=True)]
    total = sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in model.parameters())
    return total, model.parameters()


def median_time(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.3g} us" if seconds < 1e-3 else (
        f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s")


def row(label: str, make: Callable[[], tuple[Value, list[Value]]], repeat: int,
        with_hessian: bool) -> None:
    root, inputs = make()
    nodes = len(topological_order(root))
    vector = [random.uniform(-1, 1) for _ in inputs]

    def backward() -> None:
        root.backward()

    base = median_time(backward, repeat)
    first = grad(root, inputs, create_graph=True)
    added = len(set(walk(first)) - set(topological_order(root)))
    del first
    graph_time = median_time(lambda: grad(root, inputs, create_graph=True), repeat)
    hvp_time = median_time(lambda: hvp(root, inputs, vector), repeat)
    cells = [f"{label:30}", f"{nodes:>9,}", f"{added:>9,}", f"{fmt(base):>10}",
             f"{fmt(graph_time):>10} {graph_time / base:5.1f}x",
             f"{fmt(hvp_time):>10} {hvp_time / base:5.1f}x"]
    if with_hessian:
        h = median_time(lambda: hessian(root, inputs), repeat)
        cells.append(f"{fmt(h):>10} {h / base:5.1f}x")
    else:
        cells.append(f"{'-':>17}")
    print("  ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement")
    args = parser.parse_args()
    random.seed(0)
    header = "  ".join([f"{'graph':30}", f"{'nodes':>9}", f"{'grad graph':>9}",
                        f"{'backward':>10}", f"{'grad, create_graph':>17}",
                        f"{'hvp':>17}", f"{'hessian':>17}"])
    print(header)
    print("-" * len(header))
    row("seed neuron (5 inputs)", neuron, max(args.repeat, 200), True)
    row("chain N=1,000 (3 inputs)", chain(1_000), args.repeat, True)
    row("chain N=100,000 (3 inputs)", chain(100_000), max(1, args.repeat // 2), False)
    row("moons loss (337 parameters)", moons_loss, args.repeat, False)
    print("\n(x: times the backward pass. A Hessian-vector product costs about the same "
          "whatever the number of inputs; the Hessian, a float pass over the gradient graph per "
          "input.)")


if __name__ == "__main__":
    main()
