"""Analyses checked on graphs whose answers were worked out by hand."""

from __future__ import annotations

import json
import math

import networkx as nx
import pytest

from opgraph import Graph, NodeNotFoundError, Value
from opgraph.analysis import (
    analyze,
    gradient_dominators,
    neighbourhood,
    snapshot,
    to_networkx,
)

# --- a brute-force oracle for dominators -----------------------------------------------------


def dominators_by_paths(graph: Graph, root: int) -> list[int]:
    """Nodes strictly inside every simple path from every leaf that reaches ``root``."""
    g = to_networkx(graph)
    common: set[int] | None = None
    for leaf in (v.id for v in graph.leaves):
        for path in nx.all_simple_paths(g, leaf, root) if leaf != root else []:
            on_path = set(path[1:-1])
            common = on_path if common is None else common & on_path
    return sorted(common or ())


# --- the hand-made graph ---------------------------------------------------------------------


def test_counts_leaves_ops_depth_and_widths(hand: Graph) -> None:
    report = analyze(hand, root=6)
    assert report.nodes == 9
    assert report.edges == 8  # d:1, e:2, f:1, h:2, k:2
    assert report.root == 6
    assert report.leaves == [0, 1, 2, 7]
    assert report.outputs == [6, 8]
    assert report.ops == {"add": 1, "exp": 1, "mul": 2, "tanh": 1}
    # generation 0: the four leaves; 1: d and k; 2: e; 3: f; 4: h
    assert report.widths == [4, 2, 1, 1, 1]
    assert report.depth == 5
    assert report.width == 4
    assert report.cycles == []


def test_critical_path_is_the_one_longest_path(hand: Graph) -> None:
    assert analyze(hand, root=6).critical_path == [1, 3, 4, 5, 6]  # b d e f h


def test_unused_nodes_are_those_the_root_does_not_depend_on(hand: Graph) -> None:
    assert analyze(hand, root=6).unused == [7, 8]  # u and k
    assert analyze(hand, root=5).unused == [0, 6, 7, 8]
    # by default the root is the last output, k = c * u
    default = analyze(hand)
    assert default.root == 8
    assert default.unused == [0, 1, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        (6, []),  # a feeds h directly, so no node but h itself is on every path
        (5, [4]),  # b's and c's paths to f both pass through e
        (4, []),  # c feeds e directly
        (3, []),  # b -> d: the only leaf is next to the root
        (8, []),
    ],
)
def test_dominators_by_hand(hand: Graph, root: int, expected: list[int]) -> None:
    assert analyze(hand, root=root).dominators == expected
    assert dominators_by_paths(hand, root) == expected


def test_dominators_of_a_diamond() -> None:
    """x feeds both tanh and exp; their sum s feeds o. Every path from x passes s, not p or q."""
    g = Graph("diamond")
    x = g.leaf(0.5, "x")
    p = x.tanh()
    q = x.exp()
    s = p + q
    o = s.tanh()
    w = g.leaf(2.0, "w")
    out = o * w
    report = analyze(g, root=o)
    assert report.dominators == [s.id]
    assert report.unused == [w.id, out.id]
    # with w joining at the end, nothing but the root is common to x's and w's paths
    assert analyze(g, root=out).dominators == []
    for root in (o.id, out.id):
        assert analyze(g, root=root).dominators == dominators_by_paths(g, root)


def test_gradient_dominators_directly() -> None:
    g = nx.DiGraph([(0, 2), (1, 2), (2, 3), (3, 4), (0, 4)])
    assert gradient_dominators(g, 4, [0, 1]) == []  # 0 -> 4 skips everything
    assert gradient_dominators(g, 3, [0, 1]) == [2]
    assert gradient_dominators(g, 4, [1]) == [2, 3]
    assert gradient_dominators(g, 4, [1, 99]) == [2, 3]  # a leaf not in the graph's flow


def test_fan_in_and_fan_out_extremes() -> None:
    """x is used three times (the only fan-out above 1); s is the only node with two inputs."""
    g = Graph("fans")
    x = g.leaf(0.3, "x")
    y = g.leaf(0.7, "y")
    p = x.tanh()
    q = p.exp()
    s = q + y
    x.relu()
    x.sigmoid()
    report = analyze(g, root=s)
    assert report.max_fan_out == {"node": x.id, "count": 3}
    assert report.max_fan_in == {"node": s.id, "count": 2}


def test_a_value_used_twice_is_one_edge_pair_in_networkx_but_counted_twice() -> None:
    g = Graph("square")
    a = g.leaf(3.0, "a")
    sq = a * a
    report = analyze(g)
    assert report.edges == 2
    assert to_networkx(g).edges[a.id, sq.id]["count"] == 2
    assert report.max_fan_in == {"node": sq.id, "count": 1}  # one distinct input


@pytest.mark.parametrize(
    ("node", "leaves"),
    [(5, [1, 2]), (6, [0, 1, 2]), (8, [2, 7]), (3, [1]), (0, [])],
)
def test_leaves_that_influence_a_node(hand: Graph, node: int, leaves: list[int]) -> None:
    report = analyze(hand, node=node)
    assert report.influences == {str(node): leaves}


@pytest.mark.parametrize(
    ("leaf", "affected"),
    [(2, [4, 5, 6, 8]), (1, [3, 4, 5, 6]), (0, [6]), (7, [8])],
)
def test_nodes_a_leaf_affects(hand: Graph, leaf: int, affected: list[int]) -> None:
    assert analyze(hand, leaf=leaf).affects == {str(leaf): affected}


@pytest.mark.parametrize("option", ["node", "leaf", "root"])
def test_unknown_node_ids_are_refused(hand: Graph, option: str) -> None:
    with pytest.raises(NodeNotFoundError, match="no node 42"):
        analyze(hand, **{option: 42})


def test_a_root_from_another_graph_is_refused(hand: Graph) -> None:
    other = Graph("other")
    stranger = other.leaf(1.0, "s")
    with pytest.raises(NodeNotFoundError, match="not in graph 'hand'"):
        analyze(hand, root=stranger)


# --- the seed's neuron -----------------------------------------------------------------------


def test_seed_neuron(neuron: dict[str, Value]) -> None:
    o = neuron["o"]
    report = analyze(o)
    g = snapshot(o)  # the ids the report uses: positions in topological order
    label = {v.id: v.label for v in g.nodes}
    assert report.nodes == 10
    assert report.edges == 9
    assert label[report.root] == "o"
    assert sorted(label[i] for i in report.leaves) == ["b", "w1", "w2", "x1", "x2"]
    assert report.ops == {"add": 2, "mul": 2, "tanh": 1}
    assert report.widths == [5, 2, 1, 1, 1]
    assert report.depth == 5
    assert report.unused == []
    assert report.diagnostics == []  # a healthy neuron
    # n dominates the gradient path of every leaf: all of o's gradient reaches them through n
    assert [label[i] for i in report.dominators] == ["n"]
    assert report.dominators == dominators_by_paths(g, report.root)
    # the longest paths run leaf -> product -> sum -> n -> o; there are four, all of 5 nodes
    path = [label[i] for i in report.critical_path]
    assert path[2:] == ["x1w1 + x2w2", "n", "o"]
    assert (path[0], path[1]) in {("x1", "x1w1"), ("w1", "x1w1"), ("x2", "x2w2"),
                                  ("w2", "x2w2")}
    assert nx.is_path(to_networkx(g), report.critical_path)


def test_analysing_a_free_value_leaves_it_alone(neuron: dict[str, Value]) -> None:
    o = neuron["o"]
    analyze(o)
    assert o.graph is None and neuron["x1"].graph is None
    assert o.grad == 1.0 and neuron["x1"].grad == pytest.approx(-1.5)


def test_snapshot_copies_in_topological_order(neuron: dict[str, Value]) -> None:
    g = snapshot(neuron["o"], "copy")
    assert g.name == "copy" and len(g) == 10 and g.version == 0
    assert g.nodes[-1].label == "o"
    for v in g.nodes:
        original = neuron[v.label]
        assert (v.data, v.grad, v.op) == (original.data, original.grad, original.op)
        assert v is not original
        assert all(i.id < v.id for i in v.inputs)
    g.nodes[0].data = 99.0
    assert 99.0 not in [v.data for v in neuron.values()]


def test_a_value_of_a_graph_is_analysed_in_its_graph(hand: Graph) -> None:
    f = hand.nodes[5]
    report = analyze(f)
    assert report.nodes == 9
    assert report.root == 5
    assert report.dominators == [4]


# --- JSON, empty graphs, cycles ----------------------------------------------------------------


def test_report_to_dict_is_plain_json(hand: Graph) -> None:
    hand.set(2, 2.0)  # e = exp(.5) * 2 = 3.3: f = tanh(e) = 0.997 saturates
    hand.backward(6)
    report = analyze(hand, root=6, node=5, leaf=2)
    data = report.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    for key in ("nodes", "edges", "depth", "width", "widths", "critical_path", "ops",
                "leaves", "outputs", "unused", "dominators", "max_fan_in", "max_fan_out",
                "influences", "affects", "cycles", "diagnostics"):
        assert key in data
    assert data["width"] == 4
    assert [d["code"] for d in data["diagnostics"]] == ["saturated-tanh"]
    assert data["diagnostics"][0]["node"] == 5
    assert analyze(hand, diagnostics=False).diagnostics == []


def test_empty_graph() -> None:
    report = analyze(Graph("empty"))
    assert (report.nodes, report.edges, report.root, report.depth) == (0, 0, None, 0)
    assert report.critical_path == [] and report.widths == [] and report.width == 0
    assert report.max_fan_in is None and report.max_fan_out is None
    json.dumps(report.to_dict(), allow_nan=False)


def test_a_graph_with_a_cycle_is_reported_not_crashed_on() -> None:
    """A graph from outside could have a cycle: analysis reports it instead of failing."""
    g = Graph("loop")
    x = g.leaf(0.3, "x")
    y = x.tanh()
    z = y.exp()
    y._inputs = (z,)  # what a corrupt import could produce: y -> z -> y
    report = analyze(g, diagnostics=False)
    assert [sorted(c) for c in report.cycles] == [[y.id, z.id]]
    assert report.depth == 0 and report.critical_path == [] and report.dominators == []
    json.dumps(report.to_dict())


def test_analyze_refuses_other_things() -> None:
    with pytest.raises(TypeError, match="expected a Graph or a Value"):
        analyze([1, 2, 3])  # type: ignore[arg-type]


# --- the networkx cache ------------------------------------------------------------------------


def test_networkx_graph_is_cached_until_a_node_is_added(hand: Graph) -> None:
    first = to_networkx(hand)
    assert to_networkx(hand) is first
    analyze(hand)
    assert to_networkx(hand) is first  # analyses reuse it
    # changing data and gradients changes no structure: still the same graph
    hand.set(0, 2.0)
    hand.backward(6)
    assert to_networkx(hand) is first
    new = hand.nodes[6] * hand.nodes[8]
    rebuilt = to_networkx(hand)
    assert rebuilt is not first
    assert rebuilt.number_of_nodes() == 10
    assert set(rebuilt.predecessors(new.id)) == {6, 8}
    assert analyze(hand).nodes == 10
    assert analyze(hand).critical_path == [1, 3, 4, 5, 6, 9]


def test_rollback_does_not_leave_a_stale_networkx_graph(hand: Graph) -> None:
    mark = hand.checkpoint()
    hand.nodes[0].tanh()
    assert to_networkx(hand).has_edge(0, 9)
    hand.rollback(mark)
    hand.nodes[7].exp()  # same node count as before the rollback, different structure
    g = to_networkx(hand)
    assert g.has_edge(7, 9) and not g.has_edge(0, 9)


def test_forward_and_backward_never_build_networkx() -> None:
    g = Graph("hot")
    x = g.leaf(0.5, "x")
    y = (x * x + 1.0).tanh()
    g.forward()
    g.set(x.id, 0.25)
    g.backward(y)
    assert "_nx_cache" not in vars(g)
    assert math.isclose(x.grad, (1 - math.tanh(1.0625) ** 2) * 0.5, rel_tol=1e-12)
    to_networkx(g)
    assert "_nx_cache" in vars(g)  # the attribute checked above is the cache


# --- neighbourhoods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "ids"),
    [
        (0, [4]),
        (1, [2, 3, 4, 5]),  # c, d, f around e
        (2, [1, 2, 3, 4, 5, 6, 8]),  # + b (via d), h (via f), k (via c)
        (3, [0, 1, 2, 3, 4, 5, 6, 7, 8]),  # + a (via h), u (via k)
    ],
)
def test_neighbourhood_to_a_depth(hand: Graph, depth: int, ids: list[int]) -> None:
    assert [v.id for v in neighbourhood(hand, 4, depth)] == ids


def test_neighbourhood_refuses_bad_arguments(hand: Graph) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        neighbourhood(hand, 4, -1)
    with pytest.raises(NodeNotFoundError):
        neighbourhood(hand, 9, 1)
