"""opgraph.aggregate.aggregates on a new version that changed only values (a training step
published again, a leaf set): only the values are read again, and every answer equals one
computed from scratch; a version that changed labels or nodes is read whole."""

from __future__ import annotations

from scale_graphs import moons_step

from opgraph import Graph
from opgraph.aggregate import Aggregates, aggregates


def small_graph() -> Graph:
    g = Graph("g")
    x = g.leaf(2.0, "layer.x")
    w = g.leaf(-3.0, "layer.w")
    y = g.apply("mul", [x, w], label="layer.y")
    z = g.apply("tanh", [y], label="out.z")
    g.backward(z)
    return g


def answers(agg: Aggregates) -> tuple:
    return (agg.summary(), agg.query(by="part"), agg.query(part="layer", by="op"),
            agg.query(by="op", members=5))


def test_a_values_only_version_reads_the_values_alone() -> None:
    g, *_ = moons_step(points=8)
    first = aggregates(g)
    period = {i: first.period(i) for i in range(len(first.lines))}  # (computed once, kept)
    data = [v.data + 0.25 for v in g.nodes]
    grad = [v.grad * -2.0 for v in g.nodes]
    g.assign(data, grad)
    again = aggregates(g)
    assert again is not first and again.version == g.version
    # The structure's arrays are shared; the values are the new ones.
    assert again.line_of is first.line_of and again.path_of is first.path_of
    assert again._periods is first._periods and period
    assert list(again.data) == data and list(again.grad) == grad
    assert answers(again) == answers(Aggregates.of(g))
    assert answers(again) != answers(first)


def test_a_leaf_set_is_summarised_with_its_new_values() -> None:
    g = small_graph()
    before = aggregates(g).summary()
    g.set(0, 5.0)  # x: y and z recomputed
    after = aggregates(g)
    assert after.summary() == Aggregates.of(g).summary() != before
    assert after.summary()["total"]["data"]["max"] == 5.0


def test_a_relabelled_node_is_read_again() -> None:
    g = small_graph()
    assert [p["part"] for p in aggregates(g).summary()["parts"]] == ["layer", "out", "layer.w",
                                                                    "layer.x", "layer.y",
                                                                    "out.z"]
    g.nodes[3].label = "head.z"  # written directly: no new version by itself
    g.forward()  # a new version, the same structure
    parts = [p["part"] for p in aggregates(g).summary()["parts"]]
    assert "head" in parts and "out" not in parts
    assert aggregates(g).summary() == Aggregates.of(g).summary()


def test_a_grown_graph_is_read_again() -> None:
    g = small_graph()
    first = aggregates(g)
    g.apply("relu", [g.nodes[3]], label="out.r")
    grown = aggregates(g)
    assert grown.n == first.n + 1
    assert grown.summary() == Aggregates.of(g).summary()
