"""Diagnostics: each default one on a graph made for it, none on the healthy neuron, and plugins
that fail reported by name while the others still run."""

from __future__ import annotations

import math

import pytest

from opgraph import Graph, OpgraphError, Value
from opgraph.diagnostics import Diagnostic, run_diagnostics
from opgraph.registry import build_registry


def found(graph_or_value) -> list[tuple[str, str, int | None]]:
    """(code, severity, node) of every diagnostic, in the order run_diagnostics gives them."""
    return [(d.code, d.severity, d.node) for d in run_diagnostics(graph_or_value).diagnostics]


def test_healthy_seed_neuron_has_no_diagnostics(neuron: dict[str, Value]) -> None:
    # w2's gradient is exactly 0 (x2 = 0): zero is not "vanishing", only tiny non-zero is
    assert neuron["w2"].grad == 0.0
    result = run_diagnostics(neuron["o"])
    assert result.diagnostics == [] and result.problems == []


def test_healthy_graph_before_backward_has_no_gradient_diagnostics() -> None:
    g = Graph("fresh")
    x = g.leaf(1e-9, "x")
    (x * 3.0).tanh()
    assert found(g) == []  # every grad is 0: no backward pass yet, nothing to judge


@pytest.mark.parametrize(("data", "saturated"), [(5.0, True), (-5.0, True), (2.0, False),
                                                 (2.7, True), (0.0, False)])
def test_saturated_tanh(data: float, saturated: bool) -> None:
    # |tanh| > 0.99 from |x| > 2.647
    g = Graph("t")
    x = g.leaf(data, "x")
    t = x.tanh()
    t.label = "t"
    g.backward(t)
    expected = [("saturated-tanh", "warning", t.id)] if saturated else []
    assert found(g) == expected
    if saturated:
        (d,) = run_diagnostics(g).diagnostics
        assert "'t'" in d.message and d.plugin == "diagnostics"


@pytest.mark.parametrize(("data", "saturated"), [(10.0, True), (-10.0, True), (4.0, False),
                                                 (-4.0, False), (4.7, True)])
def test_saturated_sigmoid(data: float, saturated: bool) -> None:
    # sigmoid outside (0.01, 0.99) from |x| > 4.595
    g = Graph("s")
    x = g.leaf(data, "x")
    s = x.sigmoid()
    g.backward(s)
    expected = [("saturated-sigmoid", "warning", s.id)] if saturated else []
    assert found(g) == expected


@pytest.mark.parametrize(("data", "dead"), [(-1.0, True), (0.0, True), (0.5, False)])
def test_dead_relu(data: float, dead: bool) -> None:
    g = Graph("r")
    x = g.leaf(data, "x")
    y = g.leaf(2.0, "y")
    r = (x * y).relu()
    g.backward(r)
    assert found(g) == ([("dead-relu", "warning", r.id)] if dead else [])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_data(bad: float) -> None:
    g = Graph("nan")
    x = g.leaf(bad, "x")
    y = g.leaf(1.0, "y")
    z = x + y
    assert found(g) == [("non-finite-value", "error", x.id),
                        ("non-finite-value", "error", z.id)]


def test_nan_through_activations_is_non_finite_not_saturated() -> None:
    g = Graph("nan")
    x = g.leaf(math.nan, "x")
    nodes = [x.tanh(), x.sigmoid()]
    assert found(g) == [("non-finite-value", "error", v.id) for v in [x, *nodes]]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_grad(bad: float) -> None:
    g = Graph("grad")
    x = g.leaf(1.0, "x")
    y = x * 2.0
    g.backward(y)
    x.grad = bad
    assert found(g) == [("non-finite-grad", "error", x.id)]


def test_vanishing_leaf_gradient() -> None:
    g = Graph("vanish")
    x = g.leaf(1.0, "x")
    y = x * 1e-9  # dy/dx = 1e-9; dy/d(the constant) = 1
    g.backward(y)
    assert found(g) == [("vanishing-gradient", "warning", x.id)]


def test_exploding_leaf_gradient() -> None:
    g = Graph("explode")
    x = g.leaf(1.0, "x")
    y = x * 1e7
    g.backward(y)
    assert found(g) == [("exploding-gradient", "warning", x.id)]


def test_gradients_just_inside_the_bounds_are_fine() -> None:
    g = Graph("ok")
    x = g.leaf(1.0, "x")
    w = g.leaf(1.0, "w")
    y = x * 2e-6 + w * 5e5
    g.backward(y)
    assert found(g) == []


def test_unused_leaf() -> None:
    g = Graph("unused")
    x = g.leaf(0.5, "x")
    spare = g.leaf(3.0, "spare")
    x.tanh()
    (d,) = run_diagnostics(g).diagnostics
    assert (d.code, d.severity, d.node) == ("unused-leaf", "hint", spare.id)
    assert "'spare'" in d.message


def test_a_lone_leaf_is_not_unused() -> None:
    g = Graph("one")
    g.leaf(1.0, "x")
    assert found(g) == []


def test_several_findings_are_sorted_by_node_then_code() -> None:
    g = Graph("many")
    spare = g.leaf(1.0, "spare")
    x = g.leaf(math.inf, "x")
    t = x.tanh()  # tanh(inf) = 1: saturated; its input is not finite
    assert found(g) == [("unused-leaf", "hint", spare.id),
                        ("non-finite-value", "error", x.id),
                        ("saturated-tanh", "warning", t.id)]


def test_diagnostic_to_dict_and_severity_check() -> None:
    d = Diagnostic("x-code", "info", 3, "a message")
    assert d.to_dict() == {"code": "x-code", "severity": "info", "node": 3,
                           "message": "a message", "plugin": ""}
    with pytest.raises(OpgraphError, match="severity must be one of"):
        Diagnostic("x-code", "fatal", 3, "a message")


# --- diagnostic plugins --------------------------------------------------------------------------


def saturated_graph() -> tuple[Graph, Value]:
    g = Graph("sat")
    x = g.leaf(5.0, "x")
    t = x.tanh()
    return g, t


def test_a_plugin_that_raises_is_reported_by_name_and_the_others_run(diagnostics_plugin) -> None:
    def boom(graph):
        raise RuntimeError("the plugin broke")

    def counter(graph):
        return [Diagnostic("node-count", "info", None, f"{len(graph.nodes)} nodes")]

    registry = build_registry(plugins=[("broken_diagnostics", diagnostics_plugin(boom)),
                                       ("counting", diagnostics_plugin(counter))])
    g, t = saturated_graph()
    result = run_diagnostics(g, registry=registry)
    assert [(p.plugin, p.message) for p in result.problems] == [
        ("broken_diagnostics", "opgraph_diagnostics failed: RuntimeError: the plugin broke")]
    assert "broken_diagnostics" in str(result.problems[0])
    # the default diagnostics and the other plugin still ran
    assert [(d.code, d.node, d.plugin) for d in result.diagnostics] == [
        ("node-count", None, "counting"), ("saturated-tanh", t.id, "diagnostics")]


def test_a_plugin_returning_something_else_is_reported(diagnostics_plugin) -> None:
    registry = build_registry(plugins=[
        ("sloppy", diagnostics_plugin(lambda graph: [{"code": "not-a-diagnostic"}]))])
    g, _ = saturated_graph()
    result = run_diagnostics(g, registry=registry)
    assert len(result.problems) == 1
    assert result.problems[0].plugin == "sloppy"
    assert "returned dict, not a Diagnostic" in result.problems[0].message
    assert [d.code for d in result.diagnostics] == ["saturated-tanh"]


def test_a_registry_of_diagnostics_only_is_used_as_given(diagnostics_plugin) -> None:
    """A registry with no ops (so ``len() == 0``) is still the one to use."""
    mine = diagnostics_plugin(lambda graph: [Diagnostic("mine", "hint", 0, "hello")])
    registry = build_registry(plugins=[("mine", mine)], entry_points=False)
    assert len(registry) == 0
    g, _ = saturated_graph()
    result = run_diagnostics(g, registry=registry)
    assert [(d.code, d.plugin) for d in result.diagnostics] == [("mine", "mine")]


def test_a_plugin_can_keep_its_own_plugin_name(diagnostics_plugin) -> None:
    tagged = diagnostics_plugin(lambda graph: [Diagnostic("tag", "hint", None, "m", "someone")])
    registry = build_registry(plugins=[("tagger", tagged)], entry_points=False)
    g, _ = saturated_graph()
    assert run_diagnostics(g, registry=registry).diagnostics[0].plugin == "someone"
