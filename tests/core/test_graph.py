"""`Graph`: nodes with stable integer ids, mutable leaves, forward and backward, limits."""

from __future__ import annotations

import math

import pytest

import opgraph
from opgraph import (
    ArityError,
    AttributeSpecError,
    ForwardError,
    Graph,
    GraphError,
    GraphLimitError,
    GraphMismatchError,
    InputTypeError,
    NodeNotFoundError,
    NotALeafError,
    UnknownOpError,
    Value,
)


def neuron_graph() -> Graph:
    """The seed's neuron, built by ids as the server builds graphs."""
    g = Graph("neuron")
    g.leaf(2.0, "x1")  # 0
    g.leaf(0.0, "x2")  # 1
    g.leaf(-3.0, "w1")  # 2
    g.leaf(1.0, "w2")  # 3
    g.leaf(6.8813735870195432, "b")  # 4
    g.apply("mul", [0, 2], label="x1w1")  # 5
    g.apply("mul", [1, 3], label="x2w2")  # 6
    g.apply("add", [5, 6], label="x1w1 + x2w2")  # 7
    g.apply("add", [7, 4], label="n")  # 8
    g.apply("tanh", [8], label="o")  # 9
    return g


def snapshot(g: Graph):
    return [(v.id, v.data, v.grad, v.label) for v in g.nodes], len(g), g.version


# --- building -------------------------------------------------------------------------------------


def test_leaf_and_apply_by_ids():
    g = Graph("demo")
    a = g.leaf(2.0, "a")
    b = g.leaf(-3.0, "b")
    assert (a.id, b.id) == (0, 1)
    assert a.graph is g and a.label == "a" and a.data == 2.0
    c = g.apply("mul", [0, 1], label="c")
    assert c.id == 2 and c.data == -6.0 and c._op == "*" and c.op == "mul"
    assert c.inputs == (a, b)
    assert g[2] is c and g.node(2) is c and g.nodes == [a, b, c]
    d = g.apply("add", [c, a])  # this graph's values work as well as ids
    assert d.id == 3 and d.data == -4.0 and d.label == ""
    p = g.apply("pow_const", [0], {"exponent": 3})
    assert p.data == 8.0 and p._op == "**3" and p.attrs == {"exponent": 3}
    assert len(g) == 5 and list(g) == g.nodes
    assert repr(g) == f"Graph(name='demo', nodes=5, version={g.version})"


def test_ids_are_stable_and_topological():
    g = neuron_graph()
    ids = {v.label: v.id for v in g}
    g.leaf(1.0, "late")
    g.apply("exp", [9])
    g.set(0, 5.0)
    g.backward(9)
    assert {v.label: v.id for v in g if v.label in ids} == ids
    for i, v in enumerate(g.nodes):
        assert v.id == i and g.node(i) is v
        assert all(inp.id < v.id for inp in v.inputs)


def test_graph_values_match_value_engine():
    g = neuron_graph()
    o = g.node(9)
    assert o.data == 0.7071067811865476
    order = g.backward(9)
    assert {v.id for v in order} == set(range(10))
    grads = {v.label: v.grad for v in g}
    assert grads["x1"] == pytest.approx(-1.5, abs=1e-12)
    assert grads["w1"] == pytest.approx(1.0, abs=1e-12)
    assert grads["x2"] == pytest.approx(0.5, abs=1e-12)
    assert grads["w2"] == pytest.approx(0.0, abs=1e-12)
    assert grads["b"] == pytest.approx(0.5, abs=1e-12)
    assert grads["o"] == 1.0


def test_capture_from_a_value():
    a = Value(2.0, label="a")
    b = Value(-3.0, label="b")
    c = Value(10.0, label="c")
    e = a * b
    e.label = "e"
    d = e + c
    d.label = "d"
    f = Value(-2.0, label="f")
    L = d * f
    L.label = "L"
    unrelated = Value(1.0)
    g = Graph.capture(L, "seed")
    assert g.name == "seed" and len(g) == 7
    members = {id(v) for v in g}
    assert members == {id(v) for v in (a, b, c, e, d, f, L)}  # the same objects
    assert unrelated.graph is None and unrelated.id is None
    assert sorted(v.id for v in g) == list(range(7))
    for v in g:
        assert v.graph is g and g.node(v.id) is v
        assert all(inp.id < v.id for inp in v.inputs)
    assert g.find("a") == [a]
    assert g.leaves == sorted([a, b, c, f], key=lambda v: v.id)
    assert g.outputs == [L]
    # once captured, further arithmetic grows the same graph
    M = L * 2
    assert M.graph is g and len(g) == 9


def test_capture_with_options_and_limit():
    x = Value(1.0)
    y = (x + 1).tanh()
    with pytest.raises(GraphLimitError):
        Graph.capture(y, "small", max_nodes=3)
    assert x.graph is None and y.graph is None  # nothing was taken
    g = Graph.capture(y, "fits", max_nodes=4)
    assert len(g) == 4 and g.max_nodes == 4


def test_capture_of_a_value_in_another_graph_is_refused():
    g = neuron_graph()
    with pytest.raises(GraphMismatchError, match="neuron"):
        Graph.capture(g.node(9), "other")
    assert len(g) == 10


def test_leaf_source_and_label_checks():
    g = Graph("g")
    v = g.leaf(1.0, "x", source=("model.py", 12))
    assert v.source == ("model.py", 12)
    n = g.apply("neg", [0], label="y", source=("model.py", 13))
    assert n.source == ("model.py", 13)
    before = snapshot(g)
    for bad in ("model.py", ("model.py",), ("model.py", "12"), (3, 12), ("model.py", -1)):
        with pytest.raises(GraphError, match="source"):
            g.leaf(1.0, source=bad)
        with pytest.raises(GraphError, match="source"):
            g.apply("neg", [0], source=bad)
    with pytest.raises(GraphError, match="label"):
        g.leaf(1.0, 5)
    with pytest.raises(GraphError, match="label"):
        g.apply("neg", [0], label=5)
    assert snapshot(g) == before  # refused before anything was added
    with pytest.raises(GraphError):
        Graph(3)
    with pytest.raises(InputTypeError):
        g.leaf("two")


def test_source_tracking_for_graph_nodes():
    g = Graph("g")
    with opgraph.track_source():
        x = g.leaf(1.0)
        y = x * 3
    import inspect

    here = inspect.getsourcelines(test_source_tracking_for_graph_nodes)
    start = here[1]
    lines = [start + i for i, text in enumerate(here[0]) if "= g.leaf(1.0)" in text
             or "= x * 3" in text]
    assert x.source == (__file__, lines[0])
    assert y.source == (__file__, lines[1])


# --- arithmetic on graph values -------------------------------------------------------------------


def test_arithmetic_on_graph_values_joins_the_graph():
    g = Graph("g")
    x = g.leaf(2.0, "x")
    y = x * x
    assert y.graph is g and y.id == 1
    z = x + 3  # the constant joins as a leaf, before the node that uses it
    assert len(g) == 4
    (const,) = [v for v in z.inputs if v is not x]
    assert const.graph is g and const.id == 2 and z.id == 3
    free = Value(1.0) + Value(2.0)  # a free expression is adopted with what it depends on
    assert free.graph is None
    w = free * x
    assert free.graph is g and w.graph is g
    assert all(v.graph is g for v in opgraph.topological_order(w))
    assert [v.id for v in g] == list(range(len(g)))
    assert w.tanh().graph is g
    assert opgraph.apply("sigmoid", x).graph is g


def test_values_from_two_graphs_do_not_mix():
    g1, g2 = Graph("one"), Graph("two")
    a = g1.leaf(1.0, "a")
    b = g2.leaf(2.0, "b")
    before1, before2 = snapshot(g1), snapshot(g2)
    with pytest.raises(GraphMismatchError) as info:
        a + b
    assert "'one'" in str(info.value) and "'two'" in str(info.value)
    assert "'add'" in str(info.value)
    with pytest.raises(GraphMismatchError):
        opgraph.apply("mul", b, a)
    with pytest.raises(GraphMismatchError, match="'b'"):
        g1.apply("add", [0, b])
    with pytest.raises(GraphMismatchError):
        g1.backward(b)
    # a free value that depends on another graph's value cannot join this one
    free = Value(3.0)
    mixed = free * 2
    Graph.capture(free, "three")
    with pytest.raises(GraphMismatchError, match="three"):
        a + mixed
    assert snapshot(g1) == before1 and snapshot(g2) == before2
    with pytest.raises(GraphMismatchError):
        g1.adopt(b)
    assert isinstance(info.value, ValueError)


# --- node ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [10, -1, 99, "0", 1.0, True, None])
def test_node_id_errors(bad):
    g = neuron_graph()
    before = snapshot(g)
    with pytest.raises(NodeNotFoundError) as info:
        g.node(bad)
    assert "neuron" in str(info.value)
    assert isinstance(info.value, KeyError)
    with pytest.raises(NodeNotFoundError):
        g.apply("add", [0, bad])
    with pytest.raises(NodeNotFoundError):
        g.set(bad, 1.0)
    with pytest.raises(NodeNotFoundError):
        g.backward(bad)
    assert snapshot(g) == before


def test_node_id_error_message():
    g = neuron_graph()
    with pytest.raises(NodeNotFoundError, match=r"has no node 10 \(ids are 0\.\.9\)"):
        g[10]


def test_failed_apply_adds_nothing():
    g = Graph("g")
    g.leaf(-1.0, "neg_one")
    g.leaf(0.0, "zero")
    before = snapshot(g)
    with pytest.raises(ForwardError) as info:
        g.apply("log", [0])
    assert "'neg_one'" in str(info.value) and "id 0" in str(info.value)
    with pytest.raises(ForwardError, match="id 1"):
        g.apply("div", [0, 1])
    with pytest.raises(UnknownOpError, match="did you mean 'add'"):
        g.apply("ad", [0, 1])
    with pytest.raises(ArityError):
        g.apply("add", [0])
    with pytest.raises(AttributeSpecError):
        g.apply("pow_const", [0])
    with pytest.raises(ForwardError):
        g.node(0).log()
    with pytest.raises(GraphError, match="inputs must be a list"):
        g.apply("neg", 0)
    with pytest.raises(GraphError, match="inputs must be a list"):
        g.apply("neg", "0")
    with pytest.raises(GraphError, match="attributes must be a mapping"):
        g.apply("pow_const", [0], [("exponent", 2)])
    assert snapshot(g) == before
    assert g.apply("add", (0, 1)).data == -1.0  # any sequence of ids will do


# --- changing leaves and recomputing --------------------------------------------------------------


def test_set_a_leaf_recomputes_downstream():
    g = neuron_graph()
    g.leaf(5.0, "unrelated")  # 10
    g.apply("exp", [10], label="exp_unrelated")  # 11
    version = g.version
    changed = g.set(0, 1.0)  # x1
    assert sorted(changed) == [0, 5, 7, 8, 9]
    assert g.version > version
    assert g.node(0).data == 1.0
    assert g.node(5).data == -3.0
    n = 1.0 * -3.0 + 0.0 * 1.0 + 6.8813735870195432
    assert g.node(8).data == n
    assert g.node(9).data == pytest.approx(math.tanh(n), rel=1e-15)
    assert g.node(11).data == pytest.approx(math.exp(5.0))
    # setting it back gives the seed's numbers again, to the bit
    g.set(0, 2.0)
    assert g.node(9).data == 0.7071067811865476
    assert g.set(10, 0.0) == [10, 11] and g.node(11).data == 1.0


def test_set_with_a_failing_recompute_changes_nothing():
    g = Graph("g")
    g.leaf(2.0, "x")
    g.apply("log", [0], label="y")
    g.apply("exp", [0], label="z")
    g.apply("add", [1, 2], label="s")
    g.backward(3)
    before = snapshot(g)
    with pytest.raises(ForwardError) as info:
        g.set(0, -1.0)
    assert info.value.op == "log"
    assert snapshot(g) == before


def test_set_refuses_bad_input():
    g = neuron_graph()
    before = snapshot(g)
    with pytest.raises(NotALeafError) as info:
        g.set(9, 1.0)
    assert "tanh" in str(info.value) and "9" in str(info.value)
    with pytest.raises(InputTypeError):
        g.set(0, "one")
    with pytest.raises(InputTypeError):
        g.set(0, None)
    assert snapshot(g) == before


def test_forward_recomputes_from_the_leaves():
    g = neuron_graph()
    g.node(0).data = 1.0  # changed behind the graph's back
    version = g.version
    g.forward()
    assert g.version > version
    assert g.node(5).data == -3.0
    g.apply("log", [4], label="log_b")
    g.node(0).data = 2.0
    g.node(4).data = -1.0  # log(-1) will fail; everything before it would have changed
    before = snapshot(g)
    with pytest.raises(ForwardError) as info:
        g.forward()
    assert info.value.op == "log" and "id 4" in str(info.value)
    assert snapshot(g) == before
    assert g.node(5).data == -3.0  # still the data of the last good forward


def test_backward_zeroes_first_and_returns_what_it_reached():
    g = Graph("g")
    x = g.leaf(3.0, "x")
    y = g.leaf(4.0, "y")
    xy = g.apply("mul", [0, 1])
    x2 = g.apply("mul", [0, 0])
    reached = g.backward(xy)
    assert set(map(id, reached)) == {id(x), id(y), id(xy)}
    assert (x.grad, y.grad, xy.grad, x2.grad) == (4.0, 3.0, 1.0, 0.0)
    g.backward(xy)  # not accumulated: a graph's backward starts from zero
    assert (x.grad, y.grad) == (4.0, 3.0)
    g.backward(3)
    assert (x.grad, y.grad, xy.grad, x2.grad) == (6.0, 0.0, 0.0, 1.0)
    g.zero_grad()
    assert all(v.grad == 0.0 for v in g)


def test_version_bumps_on_every_change():
    g = Graph("g")
    versions = [g.version]

    def changed():
        assert g.version > versions[-1]
        versions.append(g.version)

    g.leaf(1.0)
    changed()
    g.apply("exp", [0])
    changed()
    g.node(0) * 2  # arithmetic adds nodes too
    changed()
    g.set(0, 2.0)
    changed()
    g.forward()
    changed()
    g.backward(1)
    changed()
    # reading and failing do not
    g.node(1)
    _ = g.leaves, g.outputs, g.find("x")
    negative = g.apply("neg", [1])
    changed()
    with pytest.raises(ForwardError):
        g.apply("log", [negative.id])
    with pytest.raises(UnknownOpError):
        g.apply("nope", [0])
    with pytest.raises(NotALeafError):
        g.set(1, 0.0)
    assert g.version == versions[-1]


# --- limits ---------------------------------------------------------------------------------------


def test_max_nodes_for_leaves_and_ops():
    g = Graph("small", max_nodes=3)
    g.leaf(1.0)
    g.leaf(2.0)
    g.apply("add", [0, 1])
    before = snapshot(g)
    with pytest.raises(GraphLimitError, match="limit of 3"):
        g.leaf(3.0)
    with pytest.raises(GraphLimitError):
        g.apply("neg", [2])
    with pytest.raises(GraphLimitError):
        g.node(0) + g.node(1)
    with pytest.raises(GraphLimitError):
        g.node(2).tanh()
    assert snapshot(g) == before


def test_max_nodes_counts_adopted_values():
    g = Graph("small", max_nodes=2)
    x = g.leaf(1.0)
    before = snapshot(g)
    with pytest.raises(GraphLimitError):
        x * 2.0  # the constant and the product: three nodes in all
    with pytest.raises(GraphLimitError):
        x * Value(2.0)
    with pytest.raises(GraphLimitError):
        x + (Value(1.0) + 2.0)
    assert snapshot(g) == before
    assert len(g) <= g.max_nodes
    y = x.exp()
    assert len(g) == 2 and y.id == 1

    g = Graph("roomy", max_nodes=5)
    x = g.leaf(1.0)
    free = Value(1.0) + Value(2.0)
    x * free  # 1 + 3 adopted + 1 new = 5: just fits
    assert len(g) == 5


def test_unlimited_graph():
    g = Graph("big")
    assert g.max_nodes is None
    x = g.leaf(0.0)
    for _ in range(1000):
        x = x + 1.0
    assert len(g) == 2001 and x.data == 1000.0


def test_failed_backward_leaves_every_gradient_of_the_graph():
    g = Graph("bw")
    a = g.leaf(0.0, "a")
    c = a * 3.0
    g.backward(c)
    root = a ** 0.5  # joins g; d/da at 0 divides by zero
    before = [v.grad for v in g]
    version = g.version
    with pytest.raises(opgraph.GradRuleError):
        g.backward(root)
    assert [v.grad for v in g] == before
    assert before[0] == 3.0 and before[2] == 1.0  # a, the constant 3.0, c = a * 3.0
    assert g.version == version


def test_assign_sets_every_value_as_one_version_across_chunks() -> None:
    from opgraph.errors import GraphMismatchError

    g = Graph("big")
    for i in range(70_000):  # more than one chunk of the assignment
        g.leaf(float(i))
    version = g.version
    data = [float(-i) for i in range(70_000)]
    grad = [0.5 * i for i in range(70_000)]
    g.assign(data, grad)
    assert [v.data for v in g.nodes] == data and [v.grad for v in g.nodes] == grad
    assert g.version == version + 1
    with pytest.raises(GraphMismatchError, match=r"graph 'big': assign: grad: 3 values for 70000"):
        g.assign(data, [1.0, 2.0, 3.0])
    from opgraph.errors import InputTypeError

    for bad, says in ((["x"] * 70_000, "data must be numbers, got str"),
                      ([True] * 70_000, "data must be numbers, got bool"),
                      (5, "data must be a sequence of numbers, got int"),
                      ([10**400] * 70_000, "data: int too large")):
        with pytest.raises(InputTypeError, match=says):
            g.assign(bad, grad)
    assert [v.grad for v in g.nodes] == grad and g.version == version + 1
    assert [v.data for v in g.nodes] == data
    g.assign(list(range(70_000)), grad)  # ints: the doubles they stand for
    assert g.nodes[7].data == 7.0 and type(g.nodes[7].data) is float
