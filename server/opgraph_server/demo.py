"""The demo graph: the seed's neuron, built line by line so each node knows its source line.

Open this file in Neovim and run ``:OpgraphShow demo`` to see values and gradients here.
"""

from __future__ import annotations

import opgraph
from opgraph import Graph, Value


def neuron(name: str = "demo") -> Graph:
    """``o = tanh(x1*w1 + x2*w2 + b)`` with the seed's numbers, backpropagated."""
    with opgraph.track_source():
        x1 = Value(2.0, label="x1")
        x2 = Value(0.0, label="x2")
        w1 = Value(-3.0, label="w1")
        w2 = Value(1.0, label="w2")
        b = Value(6.8813735870195432, label="b")
        x1w1 = x1 * w1; x1w1.label = "x1*w1"  # noqa: E702
        x2w2 = x2 * w2; x2w2.label = "x2*w2"  # noqa: E702
        x1w1x2w2 = x1w1 + x2w2; x1w1x2w2.label = "x1*w1 + x2*w2"  # noqa: E702
        n = x1w1x2w2 + b; n.label = "n"  # noqa: E702
        o = n.tanh(); o.label = "o"  # noqa: E702
    graph = Graph.capture(o, name)
    graph.backward(o)
    return graph
