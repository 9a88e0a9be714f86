"""micrograd's moons demo on opgraph: a small MLP learns to separate two half moons.

The same steps as micrograd's ``demo.ipynb``: 100 points on two interleaving half circles,
an ``MLP(2, [16, 16, 1])``, the max-margin (SVM) loss plus 1e-4 L2 regularisation, and 100
steps of plain SGD with the learning rate going from 1.0 down to 0.1. It reaches 100% training
accuracy, then writes the loss curve and the decision boundary as PNGs.

    python examples/moons.py                     # eager: the graph is rebuilt every step
    python examples/moons.py --compiled          # compiled once, re-run in numpy every step
    python examples/moons.py --out plots/        # where the PNGs go (default: here)

Watch it train from an editor: start a server, open this file in Neovim (``:OpgraphShow
moons``) and publish the loss graph every step. Every node carries the line of this file that
created it, so values and gradients appear beside the code:

    opgraph serve &
    python examples/moons.py --publish tcp://127.0.0.1:7450 --points 20
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opgraph_client import Client, ClientError, ServerError

import opgraph
from opgraph import Value
from opgraph.compiled import compile_graph
from opgraph.datasets import make_moons
from opgraph.nn import MLP, SGD, l2, svm_loss

DEFAULT_URL = "tcp://127.0.0.1:7450"
DEFAULT_SEED = 42  # reaches 100% accuracy on 100 points by step 30 (any seed of 1 to 9 does)
ALPHA = 1e-4  # strength of the L2 regularisation

Point = tuple[float, float]


@dataclass
class Result:
    """What `train` returns: the trained model, its data and how training went."""

    model: MLP
    points: list[Point]
    labels: list[int]
    losses: list[float] = field(default_factory=list)  # per step, before that step's update
    accuracies: list[float] = field(default_factory=list)  # likewise, as micrograd prints them
    accuracy: float = 0.0  # of the trained model, after the last update
    published: int = 0  # how many times the graph was sent to a server


def learning_rate(step: int, steps: int) -> float:
    """micrograd's schedule, ``1.0 - 0.9 * k / 100``, stretched over ``steps`` steps."""
    return 1.0 - 0.9 * step / steps


def build_loss(model: MLP, points: Sequence[Point], labels: Sequence[int]
               ) -> tuple[Value, list[Value]]:
    """The demo's loss graph over all points: ``(total loss, the score of each point)``."""
    inputs = [[Value(x), Value(y)] for x, y in points]  # the points are leaves too
    scores = [model(x) for x in inputs]  # one forward pass of the MLP per point
    data_loss = svm_loss(scores, labels)  # mean of relu(1 - label * score)
    reg_loss = l2(model.parameters(), ALPHA)  # ALPHA * sum of the squared parameters
    return data_loss + reg_loss, scores


def accuracy(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The fraction of points on the right side: the sign of the score is the label's."""
    return sum((s > 0) == (y > 0) for s, y in zip(scores, labels, strict=True)) / len(labels)


def train(steps: int = 100, points: int = 100, seed: int = DEFAULT_SEED, *,
          compiled: bool = False, publish: str | None = None, graph: str = "moons",
          progress: bool = True) -> Result:
    """Train the demo's MLP; see the module's docstring.

    ``compiled`` builds the loss graph once and re-runs it with the compiled executor, which
    gives the same numbers as rebuilding it eagerly every step. ``publish`` is a server URL to
    send the loss graph to (as graph ``graph``) after each backward pass, with the source line
    of each node. ``progress`` shows a progress bar.
    """
    xs, ys = make_moons(points, noise=0.1, seed=seed)  # labels are -1 and 1

    with contextlib.ExitStack() as stack:
        client = None
        if publish is not None:
            client = stack.enter_context(Client(publish))
            # Record the file and line that creates each node, so an editor can show them.
            stack.enter_context(opgraph.track_source())
        bar = stack.enter_context(_progress_bar(steps, enabled=progress))

        model = MLP(2, [16, 16, 1], seed=seed)  # weights uniform in [-1, 1], biases 0
        optimizer = SGD(model.parameters())
        result = Result(model, xs, ys)

        def record(step: int, loss: float, scores: Sequence[float], root: Value) -> None:
            result.losses.append(loss)
            result.accuracies.append(accuracy(scores, ys))
            if client is not None:
                client.publish(graph, root)  # replaces the server's graph: a new version
                result.published += 1
            bar(step, loss, result.accuracies[-1])

        if not compiled:
            # Eager, exactly as micrograd: build the graph, backpropagate, update; repeat.
            for k in range(steps):
                # The graph has no reference cycles, but Python's cyclic collector would scan
                # its 66,000 new nodes again and again while they are made: pausing it
                # halves the time of a step here.
                with opgraph.gc_paused():
                    loss, scores = build_loss(model, xs, ys)
                    optimizer.zero_grad()  # parameters accumulate gradients across passes
                    loss.backward()
                record(k, loss.data, [s.data for s in scores], loss)
                optimizer.step(learning_rate(k, steps))
        else:
            # Compiled: the graph's structure is the same every step, only numbers change.
            # Build it once; each step recomputes the values and gradients in place (numpy).
            loss, scores = build_loss(model, xs, ys)
            run = compile_graph(loss)
            parameters = run.indices(model.parameters())
            for k in range(steps):
                value = run.forward()
                run.backward()  # fresh gradients every time: no zero_grad needed
                if client is not None:
                    run.write_back()  # data and gradients into the Values being published
                record(k, value, [run.data(s) for s in scores], loss)
                run.sgd_step(learning_rate(k, steps), parameters)
            run.write_back()  # the trained parameters back into the model's Values

    result.accuracy = accuracy([model(p).data for p in xs], ys)  # type: ignore[union-attr]
    return result


@contextlib.contextmanager
def _progress_bar(steps: int, enabled: bool) -> Iterator:
    """A rich progress bar with the loss and accuracy; yields ``update(step, loss, acc)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}  accuracy {task.fields[acc]:.0%}"),
               TimeElapsedColumn())
    with Progress(*columns, disable=not enabled) as progress:
        task = progress.add_task("training", total=steps, loss=float("nan"), acc=0.0)

        def update(step: int, loss: float, acc: float) -> None:
            progress.update(task, completed=step + 1, loss=loss, acc=acc)

        yield update


# --- pictures ----------------------------------------------------------------------------------


def plot_loss(result: Result, path: Path) -> Path:
    """The loss (and the accuracy) of each step, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display needed
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = range(len(result.losses))
    ax.plot(steps, result.losses, color="tab:blue")
    ax.set(xlabel="step", yscale="log", title="moons: training loss and accuracy")
    ax.set_ylabel("loss (log scale)", color="tab:blue")
    acc = ax.twinx()
    acc.plot(steps, result.accuracies, color="tab:orange")
    acc.set(ylim=(0, 1.05))
    acc.set_ylabel("training accuracy", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_boundary(result: Result, path: Path, resolution: int = 50) -> Path:
    """The points over the regions the trained model puts on either side, as a PNG."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = np.array(result.points)
    (x_min, y_min), (x_max, y_max) = points.min(axis=0) - 1, points.max(axis=0) + 1
    xx, yy = np.meshgrid(np.linspace(x_min, x_max, resolution),
                         np.linspace(y_min, y_max, resolution))
    # One plain forward pass per grid point; nothing here needs gradients.
    scores = np.array([result.model([x, y]).data  # type: ignore[union-attr]
                       for x, y in zip(xx.ravel().tolist(), yy.ravel().tolist(), strict=True)])

    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.contourf(xx, yy, scores.reshape(xx.shape) > 0, cmap="Spectral", alpha=0.8)
    ax.scatter(points[:, 0], points[:, 1], c=result.labels, s=30, cmap="Spectral",
               edgecolors="black", linewidths=0.5)
    ax.set(xlim=(x_min, x_max), ylim=(y_min, y_max),
           title=f"decision boundary (accuracy {result.accuracy:.0%})")
    fig.tight_layout()
    fig.savefig(path)
    return path


# --- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=_positive, default=100, help="SGD steps (100)")
    parser.add_argument("--points", type=_positive, default=100,
                        help="how many two-moons points to train on (100)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the data and the initial weights ({DEFAULT_SEED})")
    parser.add_argument("--compiled", action="store_true",
                        help="build the graph once and run it with the compiled executor")
    parser.add_argument("--publish", metavar="URL", nargs="?", const=DEFAULT_URL,
                        help=f"publish the loss graph to this server every step "
                             f"(default {DEFAULT_URL})")
    parser.add_argument("--graph", default="moons", help="the graph's name on the server")
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="folder for the PNGs (the current one)")
    args = parser.parse_args(argv)
    if args.points < 2:
        parser.error("--points must be at least 2")

    try:
        result = train(args.steps, args.points, args.seed, compiled=args.compiled,
                       publish=args.publish, graph=args.graph)
    except (ClientError, ServerError, OSError) as exc:
        parser.exit(1, f"moons: {exc}\n")
    print(f"after {args.steps} steps: loss {result.losses[-1]:.4f} (before the last update), "
          f"training accuracy {result.accuracy:.0%}")
    if result.published:
        print(f"published graph {args.graph!r} to {args.publish} {result.published} times")

    args.out.mkdir(parents=True, exist_ok=True)
    for picture in (plot_loss(result, args.out / "moons_loss.png"),
                    plot_boundary(result, args.out / "moons_boundary.png")):
        print(f"wrote {picture}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
