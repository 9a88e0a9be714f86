"""Graphs whose analyses are known by hand, shared by the analysis, diagnostics and render tests."""

from __future__ import annotations

import types

import pytest

from opgraph import Graph, Value, hookimpl

NEURON_B = 6.8813735870195432


def seed_neuron() -> dict[str, Value]:
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


def hand_graph() -> Graph:
    """A graph drawn on paper first (ids in brackets)::

        a[0] ------------------------------------------+
        b[1] -> exp -> d[3] -+                          +-> add -> h[6]
        c[2] ----------------+-> mul -> e[4] -> tanh -> f[5]
        c[2] -+
        u[7] -+-> mul -> k[8]

    Outputs h and k; the longest path b d e f h is the only one of five nodes.
    """
    g = Graph("hand")
    a = g.leaf(1.0, "a")
    b = g.leaf(0.5, "b")
    c = g.leaf(-0.25, "c")
    d = b.exp()
    d.label = "d"
    e = d * c
    e.label = "e"
    f = e.tanh()
    f.label = "f"
    h = a + f
    h.label = "h"
    u = g.leaf(7.0, "u")
    k = c * u
    k.label = "k"
    assert [v.label for v in g.nodes] == ["a", "b", "c", "d", "e", "f", "h", "u", "k"]
    return g


def diagnostics_plugin(func) -> types.SimpleNamespace:
    """A plugin object whose ``opgraph_diagnostics`` hook is ``func(graph)``."""

    @hookimpl
    def opgraph_diagnostics(graph):
        return func(graph)

    return types.SimpleNamespace(opgraph_diagnostics=opgraph_diagnostics)


@pytest.fixture
def neuron() -> dict[str, Value]:
    return seed_neuron()


@pytest.fixture
def hand() -> Graph:
    return hand_graph()


@pytest.fixture(name="diagnostics_plugin")
def _diagnostics_plugin():
    """``diagnostics_plugin(func)``: a plugin object whose hook returns ``func(graph)``."""
    return diagnostics_plugin
