"""Two neurons, published to an opgraph server so Neovim shows their values beside this code.

The first is the seed's neuron, o = tanh(x1*w1 + x2*w2 + b). The second has large weights, so
its tanh saturates (|q| > 0.99) and passes almost no gradient back: the server's default
diagnostics flag it as ``saturated-tanh``. Every node is built under ``opgraph.track_source()``,
so it records the file and line that made it; that is how the editor knows where to put it.

Try it:

    opgraph serve &                                   # a server on tcp://127.0.0.1:7450
    nvim examples/neuron_live.py                      # then  :OpgraphShow neurons
    python examples/neuron_live.py --publish tcp://127.0.0.1:7450
    python examples/neuron_live.py --publish tcp://127.0.0.1:7450 --scale 0.5

The second publish replaces the graph with other numbers, and the annotations in Neovim change
by themselves: now the first neuron saturates, and the warning moves to its line. Without
``--publish`` the script prints its nodes.
"""

from __future__ import annotations

import argparse

import opgraph
from opgraph import Value

DEFAULT_URL = "tcp://127.0.0.1:7450"


def build(scale: float = 1.0) -> Value:
    """Both neurons, summed into one output; ``scale`` multiplies their inputs."""
    with opgraph.track_source():
        # The seed's neuron: with scale 1, o = tanh(0.8814) = 0.7071.
        # (With --scale 0.5, n = 3.88 and o = 0.9991 saturates in its turn.)
        x1 = Value(2.0 * scale, label="x1")
        x2 = Value(0.0, label="x2")
        w1 = Value(-3.0, label="w1")
        w2 = Value(1.0, label="w2")
        b = Value(6.8813735870195432, label="b")
        # The next line makes four nodes: x1*w1, x2*w2, their sum, and n.
        n = x1 * w1 + x2 * w2 + b
        n.label = "n"
        o = n.tanh()
        o.label = "o"

        # A neuron with large weights: with scale 1, q = tanh(4.5) = 0.9998 is saturated,
        # so d q / d m = 1 - q**2 is almost 0 and little gradient reaches y1, v1, ...
        # (With --scale 0.5, q = tanh(1.75) = 0.94 is not.)
        y1 = Value(1.0 * scale, label="y1")
        y2 = Value(0.5 * scale, label="y2")
        v1 = Value(4.0, label="v1")
        v2 = Value(3.0, label="v2")
        c = Value(-1.0, label="c")
        m = y1 * v1 + y2 * v2 + c
        m.label = "m"
        q = m.tanh()
        q.label = "q"

        # One output, so one publish carries both neurons; d out / d o = d out / d q = 1.
        out = o + q
        out.label = "out"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publish", metavar="URL", nargs="?", const=DEFAULT_URL,
                        help=f"publish the graph to this server (default {DEFAULT_URL})")
    parser.add_argument("--graph", default="neurons", help="the graph's name on the server")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the inputs by this, to publish other numbers")
    args = parser.parse_args(argv)

    out = build(args.scale)
    out.backward()

    if args.publish is None:
        for node in opgraph.topological_order(out):
            line = node.source[1] if node.source else "-"
            print(f"line {line:>3}  {node.label or node.op:<6} data {node.data:< 10.4g} "
                  f"grad {node.grad:< 10.4g}")
        return 0

    from opgraph_client import Client, ClientError

    try:
        with Client(args.publish) as client:
            result = client.publish(args.graph, out)
    except (ClientError, OSError) as exc:
        parser.exit(1, f"neuron_live: {exc}\n")
    print(f"published graph {result['name']!r}: {result['nodes']} nodes, "
          f"version {result['version']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
