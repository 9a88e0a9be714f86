"""The seed's neuron, shared by the test folders (``from neurons import ...``)."""

from __future__ import annotations

from opgraph import Value

NEURON_B = 6.8813735870195432


def seed_neuron_values() -> dict[str, Value]:
    """The seed's neuron (Manual Backprop Example 2), built as the seed builds it, after
    ``o.backward()``; the values by label."""
    x1 = Value(2.0, label="x1")
    x2 = Value(0.0, label="x2")
    w1 = Value(-3.0, label="w1")
    w2 = Value(1.0, label="w2")
    b = Value(NEURON_B, label="b")
    x1w1 = x1 * w1
    x1w1.label = "x1w1"
    x2w2 = x2 * w2
    x2w2.label = "x2w2"
    x1w1x2w2 = x1w1 + x2w2
    x1w1x2w2.label = "x1w1 + x2w2"
    n = x1w1x2w2 + b
    n.label = "n"
    o = n.tanh()
    o.label = "o"
    o.backward()
    return {v.label: v for v in (x1, x2, w1, w2, b, x1w1, x2w2, x1w1x2w2, n, o)}


def seed_neuron() -> Value:
    """The seed's neuron's output ``o``, after ``o.backward()``."""
    return seed_neuron_values()["o"]
