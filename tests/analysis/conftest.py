"""Graphs whose analyses are known by hand, shared by the analysis, diagnostics and render tests."""

from __future__ import annotations

import types

import pytest
from neurons import seed_neuron_values

from opgraph import Graph, Value, hookimpl

seed_neuron = seed_neuron_values


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
