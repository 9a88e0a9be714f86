"""Diagnostics at the scale of the moons step: ``dead-relu`` judges a unit over the batch
(by label, else by its place in a source line's calls, else alone) and is reported once with
the count; diagnostics grouped by code and site, capped with totals; plugins still work."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from scale_graphs import MOONS, moons_line, moons_step

import opgraph
from opgraph import Graph, OpgraphError
from opgraph.diagnostic_groups import group_diagnostics, site_of
from opgraph.diagnostics import Diagnostic, run_diagnostics
from opgraph.nn import Neuron
from opgraph.registry import build_registry
from opgraph.structure import OptionError


def dead(graph: Graph) -> list[Diagnostic]:
    return [d for d in run_diagnostics(graph).diagnostics if d.code == "dead-relu"]


def plain_dead_units(graph: Graph, key) -> dict:
    """Units (by ``key(node)``) whose every ReLU has an input <= 0: {unit: [ids]}."""
    units = defaultdict(list)
    for v in graph.nodes:
        if v.op == "relu":
            units[key(v)].append(v)
    return {k: [v.id for v in vs] for k, vs in units.items()
            if all(v.inputs[0].data <= 0 for v in vs)}


@pytest.fixture(scope="module", params=[42, 7])
def moons(request):
    return moons_step(seed=request.param)


def test_dead_relu_is_reported_once_per_unit_on_the_moons_step(moons) -> None:
    graph, *_ = moons
    off = sum(1 for v in graph.nodes if v.op == "relu" and v.inputs[0].data <= 0)
    assert off > 1_000  # ReLUs off for some sample: normal, and no longer each a finding
    expected = plain_dead_units(graph, lambda v: v.label)
    found = dead(graph)
    assert 1 <= len(found) == len(expected) < 10
    assert {d.node: d.count for d in found} == {ids[0]: len(ids) for ids in expected.values()}
    for d in found:
        unit = graph.nodes[d.node].label
        assert d.count == 100 and unit.endswith(".act")  # one neuron, every sample
        assert list(d.related) == expected[unit][1:11]
        assert f"relu {unit!r} is inactive for all 100 of its nodes" in d.message
        assert d.to_dict()["count"] == 100


def test_without_labels_a_unit_is_a_place_in_the_calls_of_a_line() -> None:
    graph, *_ = moons_step(seed=7)
    labelled = {graph.nodes[d.node].label: d for d in dead(graph)}
    for v in graph.nodes:
        v.label = ""
    graph.version += 1  # (labels are not versioned: say that the graph changed)
    scores_line = moons_line("scores = [model(x)")
    found = [d for d in dead(graph) if graph.nodes[d.node].source[1] == scores_line]
    # the same units as with labels: the k-th ReLU of each call of model(x) is one neuron
    assert sorted((d.node, d.count) for d in found) == sorted(
        (d.node, d.count) for u, d in labelled.items() if u.startswith("layer"))
    assert all("examples/moons.py:" in d.message and " position " in d.message for d in found)


def test_without_labels_or_sources_each_relu_is_its_own_unit() -> None:
    graph, *_ = moons_step(points=10, seed=42, track=False)
    for v in graph.nodes:
        v.label = ""
    expected = plain_dead_units(graph, lambda v: v.id)
    found = dead(graph)
    assert len(found) == len(expected) > 10
    assert all(d.count == 1 and "input" in d.message for d in found)


def test_a_unit_on_for_one_sample_is_not_dead() -> None:
    g = Graph("batch")
    neuron = Neuron(1, seed=0, name="n")
    neuron.w[0].data = 1.0
    xs = [g.leaf(x) for x in (-3.0, -2.0, -1.0)]
    outs = [neuron([x]) for x in xs]
    (d,) = dead(g)
    assert (d.node, d.count, d.related) == (outs[0].id, 3, (outs[1].id, outs[2].id))
    neuron([g.leaf(0.5)])  # one more sample, for which it is on
    assert dead(g) == []


# --- grouping ------------------------------------------------------------------------------------


def saturated_line(count: int) -> tuple[Graph, int]:
    """``count`` saturated tanh nodes made on one line, and that line."""
    g = Graph("sat")
    with opgraph.track_source():
        xs = [g.leaf(5.0 + i) for i in range(count)]
        for x in xs:
            x.tanh()  # every tanh here saturates
    return g, next(v.source[1] for v in g.nodes if v.op == "tanh")


def test_diagnostics_are_grouped_by_code_and_site_with_counts() -> None:
    g, line = saturated_line(25)
    spare = g.leaf(math.nan, "p.spare")  # unused, not finite: two more codes, one site each
    grouped = group_diagnostics(g, run_diagnostics(g).diagnostics, per_group=3)
    assert grouped["total"] == 27 and grouped["occurrences"] == 27
    # errors first, then warnings, then hints
    assert [(r["code"], r["site"], r["count"]) for r in grouped["groups"]] == [
        ("non-finite-value", {"part": "p"}, 1),
        ("saturated-tanh", {"file": __file__, "line": line}, 25),
        ("unused-leaf", {"part": "p"}, 1)]
    tanh = grouped["groups"][1]
    assert tanh["nodes"] == [v.id for v in g.nodes if v.op == "tanh"][:3]
    assert "is saturated" in tanh["message"] and tanh["plugin"] == "diagnostics"
    assert site_of(g, spare.id) == {"part": "p"}
    capped = group_diagnostics(g, run_diagnostics(g).diagnostics, limit=1)
    assert len(capped["groups"]) == 1 and capped["counts"] == {"groups": 3}
    assert capped["total"] == 27


def test_groups_order_errors_first_and_count_occurrences() -> None:
    g = Graph("g")
    a = g.leaf(1.0, "a")
    found = [Diagnostic("x", "hint", a.id, "m"), Diagnostic("y", "error", None, "m"),
             Diagnostic("x", "hint", a.id, "m", count=5, related=(1, 2))]
    grouped = group_diagnostics(g, [d.to_dict() for d in found])  # dicts work too
    assert [(r["code"], r["severity"], r["count"], r["occurrences"], r["site"])
            for r in grouped["groups"]] == [("y", "error", 1, 1, None),
                                            ("x", "hint", 2, 6, None)]
    assert grouped["occurrences"] == 7
    with pytest.raises(OptionError, match="limit must be a non-negative int"):
        group_diagnostics(g, found, limit=-2)


def test_count_and_related_are_kept_through_plugins(diagnostics_plugin) -> None:
    finding = Diagnostic("many", "info", 0, "m", count=4, related=(1, 2, 3))
    registry = build_registry(plugins=[("third_party", diagnostics_plugin(lambda g: [finding]))],
                              entry_points=False)
    g = Graph("p")
    g.leaf(1.0)
    (d,) = run_diagnostics(g, registry=registry).diagnostics
    assert (d.plugin, d.count, d.related) == ("third_party", 4, (1, 2, 3))
    assert d.to_dict() == {"code": "many", "severity": "info", "node": 0, "message": "m",
                           "plugin": "third_party", "count": 4, "related": [1, 2, 3]}
    with pytest.raises(OpgraphError, match="count must be a positive int"):
        Diagnostic("bad", "info", 0, "m", count=0)


def test_the_moons_scores_line_is_one_group(moons) -> None:
    graph, *_ = moons
    grouped = group_diagnostics(graph, run_diagnostics(graph).diagnostics)
    (row,) = [r for r in grouped["groups"] if r["code"] == "dead-relu"]
    assert row["site"] == {"file": str(MOONS), "line": moons_line("scores = [model(x)")}
    assert row["occurrences"] == 100 * row["count"]
