"""Higher-order gradients (issue 16): `opgraph.grad`, ``backward(create_graph=True)``, the ops'
graph rules, `hessian` and `hvp`; checked against closed forms, finite differences of the
gradient and (where it is installed) PyTorch; the gradient graph in a `Graph`, in a picture and
in a file; bad input.
"""

from __future__ import annotations

import math
import types
import warnings

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_gradients import DEFAULT_OPS, build, evaluate, expressions

import opgraph
from opgraph import (
    GradRuleError,
    Graph,
    GraphLimitError,
    GraphMismatchError,
    InputTypeError,
    NoGradGraphError,
    OpDef,
    OpgraphPluginWarning,
    Value,
    draw_dot,
    grad,
    hessian,
    hookimpl,
    hvp,
)
from opgraph.core import higher as core_higher
from opgraph.fileformat import dumps, from_json, loads, to_document, to_json
from opgraph.higher import check_grad_graph

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def seed_f(x):
    return 3 * x**2 - 4 * x + 5


# --- the numbers -----------------------------------------------------------------------


def test_the_seed_function_at_3_gives_20_14_and_6():
    x = Value(3.0, label="x")
    f = seed_f(x)
    d1 = grad(f, x, create_graph=True)
    d2 = grad(d1, x, create_graph=True)
    assert (f.data, d1.data, d2.data) == (20.0, 14.0, 6.0)
    assert grad(f, x) == 14.0 and grad(d1, x) == 6.0 and grad(d2, x) == 0.0
    assert isinstance(d1, Value) and isinstance(grad(f, x), float)


def test_backward_create_graph_stores_values_in_grad():
    x = Value(3.0, label="x")
    f = seed_f(x)
    f.label = "f"
    f.backward(create_graph=True)
    assert isinstance(x.grad, Value) and x.grad.data == 14.0
    assert x.grad.label == "d f/d x"
    slope = x.grad
    x.grad = 0.0  # leaves accumulate: start the second pass from zero (as in PyTorch)
    slope.backward()
    assert x.grad == 6.0


def test_tanh_first_and_second_derivative():
    for a in (-2.0, -0.3, 0.0, 0.5, 1.7):
        x = Value(a, label="x")
        t = x.tanh()
        d1 = grad(t, x, create_graph=True)
        d2 = grad(d1, x, create_graph=True)
        d3 = grad(d2, x)
        s = t.data
        assert d1.data == 1 - s * s
        assert d2.data == pytest.approx(-2 * s * (1 - s * s), rel=1e-12, abs=1e-15)
        assert d3 == pytest.approx(-2 * (1 - s * s) * (1 - 3 * s * s), rel=1e-12, abs=1e-15)


def test_gradients_to_any_order():
    x = Value(1.5, label="x")
    g = x**5
    expected = [5 * 1.5**4, 20 * 1.5**3, 60 * 1.5**2, 120 * 1.5, 120.0, 0.0, 0.0]
    for want in expected:
        g = grad(g, x, create_graph=True)
        assert g.data == pytest.approx(want, rel=1e-12)


def test_exp_is_its_own_derivative_to_the_tenth_order():
    x = Value(0.7)
    g = x.exp()
    for _ in range(10):
        g = grad(g, x, create_graph=True)
        assert g.data == pytest.approx(math.exp(0.7), rel=1e-14)


def test_mixed_partials_of_a_product():
    x, y = Value(2.0, label="x"), Value(-3.0, label="y")
    f = x * x * y
    dx, dy = grad(f, [x, y], create_graph=True)
    assert (dx.data, dy.data) == (-12.0, 4.0)
    assert grad(dx, [x, y]) == [-6.0, 4.0]
    assert grad(dy, [x, y]) == [4.0, 0.0]


def test_outputs_are_summed_and_weighed():
    x = Value(2.0)
    a, b = x * x, x.exp()
    assert grad([a, b], x) == pytest.approx(4.0 + math.exp(2.0))
    assert grad([a, b], [x], grad_outputs=[2.0, -1.0]) == [pytest.approx(8.0 - math.exp(2.0))]
    assert grad([a, a], x) == 8.0  # the same output twice counts twice


# --- the same numbers as the float pass -----------------------------------------------------------


@given(expressions(DEFAULT_OPS))
@SETTINGS
def test_grad_and_the_graph_mode_give_the_backward_pass_numbers(example):
    tree, data = example
    leaves = [Value(v) for v in data]
    root = build(tree, leaves, Value)
    if not isinstance(root, Value):
        return
    floats = grad(root, leaves)
    assert all(leaf.grad == 0.0 for leaf in leaves)  # grad() leaves every .grad alone
    nodes = grad(root, leaves, create_graph=True)
    root.backward()
    assert floats == [leaf.grad for leaf in leaves]
    assert [n.data for n in nodes] == floats


@given(expressions(DEFAULT_OPS))
@SETTINGS
def test_second_derivatives_equal_finite_differences_of_the_gradient(example):
    tree, data = example
    h = 1e-5

    def gradient(point):
        leaves = [Value(v) for v in point]
        root = build(tree, leaves, Value)
        return grad(root, leaves) if isinstance(root, Value) else [0.0] * len(point)

    leaves = [Value(v) for v in data]
    root = build(tree, leaves, Value)
    if not isinstance(root, Value):
        return
    matrix = hessian(root, leaves)
    for j in range(len(data)):
        up, down = list(data), list(data)
        up[j] += h
        down[j] -= h
        column = [(a - b) / (2 * h) for a, b in zip(gradient(up), gradient(down), strict=True)]
        scale = max(1.0, *(abs(v) for v in column))
        for i in range(len(data)):
            assert matrix[i][j] == pytest.approx(column[i], rel=1e-3, abs=1e-3 * scale)


@given(expressions(DEFAULT_OPS), st.lists(st.floats(-2, 2), min_size=4, max_size=4))
@SETTINGS
def test_hvp_is_the_hessian_times_the_vector(example, vector):
    tree, data = example
    leaves = [Value(v) for v in data]
    root = build(tree, leaves, Value)
    if not isinstance(root, Value):
        return
    v = vector[:len(leaves)]
    matrix = hessian(root, leaves)
    product = hvp(root, leaves, v)
    for i, row in enumerate(matrix):
        want = math.fsum(a * b for a, b in zip(row, v, strict=True))
        assert product[i] == pytest.approx(want, rel=1e-9, abs=1e-9 * max(1.0, *map(abs, row)))


def test_the_hessian_of_a_neuron_is_symmetric_and_matches_finite_differences():
    x1, x2 = Value(2.0, label="x1"), Value(0.0, label="x2")
    w1, w2 = Value(-3.0, label="w1"), Value(1.0, label="w2")
    b = Value(6.8813735870195432, label="b")
    xs = [x1, x2, w1, w2, b]
    o = (x1 * w1 + x2 * w2 + b).tanh()
    matrix = hessian(o, xs)
    for i in range(5):
        for j in range(5):
            assert matrix[i][j] == pytest.approx(matrix[j][i], rel=1e-12, abs=1e-15)
    h = 1e-6
    for j, v in enumerate(xs):
        saved = v.data

        def gradient_at(a, v=v):
            v.data = a
            out = (x1 * w1 + x2 * w2 + b).tanh()
            return grad(out, xs)

        up, down = gradient_at(saved + h), gradient_at(saved - h)
        v.data = saved
        for i in range(5):
            assert matrix[i][j] == pytest.approx((up[i] - down[i]) / (2 * h), abs=1e-6)


# --- against PyTorch -----------------------------------------------------------------------------


def _subtrees(tree):
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if node[0] not in ("leaf", "const"):
            stack.extend(c for c in node[1:] if isinstance(c, tuple))


@given(expressions(DEFAULT_OPS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_hessian_agrees_with_pytorch_in_float64(example):
    torch = pytest.importorskip("torch")
    from torch.autograd.functional import hessian as torch_hessian

    tree, data = example
    # PyTorch masks d/dx x**y with where(y == 0, 0, ...), so its d2/dx dy at y = 0 is 0 where
    # the true value (and ours) is 1/x: leave those points out.
    assume(not any(evaluate(node[2], data) == 0 for node in _subtrees(tree) if node[0] == "pow"))
    leaves = [Value(v) for v in data]
    root = build(tree, leaves, Value)
    if not isinstance(root, Value):
        return
    ours = hessian(root, leaves)

    def f(*xs):
        out = build(tree, list(xs), None)
        return out if isinstance(out, torch.Tensor) else torch.tensor(out, dtype=torch.float64)

    inputs = tuple(torch.tensor(v, dtype=torch.float64) for v in data)
    theirs = torch_hessian(f, inputs)
    for i in range(len(data)):
        for j in range(len(data)):
            want = float(theirs[i][j])
            assert ours[i][j] == pytest.approx(want, rel=1e-9, abs=1e-9 * max(1.0, abs(want)))


# --- backward(create_graph=True) -----------------------------------------------------------------


def test_backward_create_graph_gives_every_node_its_own_gradient_node():
    a, b = Value(2.0, label="a"), Value(-1.5, label="b")
    c = a * b
    c.label = "c"
    d = c + a
    d.label = "d"
    o = d.tanh()
    o.label = "o"
    nodes = opgraph.topological_order(o)
    o.backward(create_graph=True)
    graph_grads = {v: v.grad for v in nodes}
    for v in nodes:
        v.grad = 0.0
    o.backward()
    assert all(isinstance(g, Value) for g in graph_grads.values())
    assert {v: g.data for v, g in graph_grads.items()} == {v: v.grad for v in nodes}
    assert len({id(g) for g in graph_grads.values()}) == len(nodes)  # one node each
    assert not set(graph_grads.values()) & set(nodes)  # none is a node of o's own graph
    assert {v.label: g.label for v, g in graph_grads.items()} == {
        "a": "d o/d a", "b": "d o/d b", "c": "d o/d c", "d": "d o/d d", "o": "d o/d o"}


def test_backward_create_graph_accumulates_at_leaves():
    x = Value(3.0, label="x")
    f = seed_f(x)
    f.backward(create_graph=True)
    first = x.grad
    f.backward(create_graph=True)
    assert isinstance(x.grad, Value) and x.grad.data == 28.0
    assert first in x.grad.inputs  # what it held plus the new node
    y = Value(1.0, label="y")
    y.grad = 0.5
    (y * y).backward(create_graph=True)
    assert isinstance(y.grad, Value) and y.grad.data == 2.5
    assert grad(y.grad, y) == 2.0


def test_backward_of_a_leaf_with_create_graph():
    x = Value(4.0, label="x")
    x.backward(create_graph=True)
    assert isinstance(x.grad, Value) and x.grad.data == 1.0 and x.grad.label == "d x/d x"


def test_float_backward_is_unchanged_by_a_graph_rule_being_there():
    x = Value(3.0)
    f = seed_f(x)
    f.backward()
    assert type(x.grad) is float and x.grad == 14.0
    f.backward(create_graph=False)
    assert x.grad == 28.0


# --- the gradient graph is visible ---------------------------------------------------------------


def _neuron(graph: Graph):
    x1, x2 = graph.leaf(2.0, "x1"), graph.leaf(0.0, "x2")
    w1, w2 = graph.leaf(-3.0, "w1"), graph.leaf(1.0, "w2")
    b = graph.leaf(6.8813735870195432, "b")
    n = x1 * w1 + x2 * w2 + b
    n.label = "n"
    o = n.tanh()
    o.label = "o"
    return [x1, x2, w1, w2, b], o


def test_a_graph_holds_the_gradient_nodes_with_ids_and_labels():
    g = Graph("neuron")
    leaves, o = _neuron(g)
    before = len(g)
    grads = grad(o, leaves, create_graph=True)
    assert len(g) > before
    assert all(v.graph is g and g.node(v.id) is v for v in grads)
    assert [v.label for v in grads] == ["d o/d x1", "d o/d x2", "d o/d w1", "d o/d w2",
                                        "d o/d b"]
    assert [v.data for v in grads] == pytest.approx([-1.5, 0.5, 1.0, 0.0, 0.5])
    # every new node is a node of the graph, in id order after the old ones
    assert all(v.id >= before for v in g.nodes[before:])
    second = grad(grads[0], leaves)
    assert second[0] == pytest.approx(-2 * 0.7071067811865476 * 0.5 * 9)


def test_graph_backward_create_graph_puts_the_gradient_nodes_in_the_graph():
    g = Graph("neuron")
    leaves, o = _neuron(g)
    o.backward(create_graph=True)
    x1 = leaves[0]
    assert x1.grad.graph is g and x1.grad.label == "d o/d x1"
    picture = draw_dot(x1.grad).source
    assert "d o/d x1" in picture and "data -1.5000" in picture
    assert "tanh" in picture  # the gradient graph reaches back into the neuron
    whole = draw_dot(g).source  # every node's grad is a node: the records show its number
    assert "grad -1.5000" in whole


def test_draw_dot_of_a_free_gradient():
    x = Value(3.0, label="x")
    f = seed_f(x)
    f.label = "f"
    f.backward(create_graph=True)
    source = draw_dot(x.grad).source
    assert "d f/d x | data 14.0000" in source
    assert "x | data 3.0000 | grad 14.0000" in source


def test_the_file_format_round_trips_the_gradient_graph():
    g = Graph("neuron")
    leaves, o = _neuron(g)
    d_x1 = grad(o, leaves[0], create_graph=True)
    o.backward(create_graph=True)
    doc = to_document(g)
    loaded = loads(dumps(g))
    assert to_document(loaded)["nodes"] == doc["nodes"]
    assert to_document(from_json(to_json(g)))["nodes"] == doc["nodes"]
    assert len(loaded) == len(g)
    (copy,) = loaded.find("d o/d x1")[:1]
    assert copy.id == d_x1.id and copy.data == d_x1.data
    x1 = loaded.find("x1")[0]
    assert x1.grad == leaves[0].grad.data  # a grad that is a node is stored as its number
    assert grad(copy, x1) == grad(d_x1, leaves[0])  # and differentiates as the original


# --- depth ---------------------------------------------------------------------------------------


def test_second_order_gradients_of_a_100000_op_chain():
    """No recursion anywhere: the chain alternates tanh and an affine step; the reference
    carries value, first and second derivative forward in plain floats."""
    n = 100_000
    x = Value(0.3, label="x")
    y = x
    v, d1, d2 = 0.3, 1.0, 0.0
    for _ in range(n // 2):
        y = y.tanh()
        t = math.tanh(v)
        v, d1, d2 = t, (1 - t * t) * d1, (1 - t * t) * d2 - 2 * t * (1 - t * t) * d1 * d1
        y = y * 1.5 + 0.01
        v, d1, d2 = v * 1.5 + 0.01, d1 * 1.5, d2 * 1.5
    assert y.data == pytest.approx(v, rel=1e-12)
    first = grad(y, x, create_graph=True)
    assert first.data == pytest.approx(d1, rel=1e-9)
    assert grad(first, x) == pytest.approx(d2, rel=1e-6, abs=1e-12)
    y.backward(create_graph=True)
    assert x.grad.data == pytest.approx(d1, rel=1e-9)


# --- bad input -----------------------------------------------------------------------------------


def _softplus_plugin(grad_graph=None):
    def forward(x):
        return math.log1p(math.exp(x))

    def grad_rule(x, out):
        return (1.0 / (1.0 + math.exp(-x)),)

    @hookimpl
    def opgraph_register_ops():
        return [OpDef("softplus", 1, forward, grad_rule, grad_graph=grad_graph)]

    return ("softplus-test", types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops))


def test_create_graph_over_an_op_without_a_graph_rule_names_op_and_plugin(install_ops):
    install_ops(_softplus_plugin())
    x = Value(0.5, label="x")
    y = x.softplus() * 2
    assert grad(y, x) == pytest.approx(2 / (1 + math.exp(-0.5)))  # floats work as before
    with pytest.raises(NoGradGraphError) as caught:
        grad(y, x, create_graph=True)
    message = str(caught.value)
    assert "op 'softplus' from plugin 'softplus-test'" in message
    assert "OpDef.grad_graph" in message and "'x'" not in message.split("at node")[0]
    assert caught.value.op == "softplus"
    with pytest.raises(NoGradGraphError):
        y.backward(create_graph=True)
    assert x.grad == 0.0  # a failed pass sets nothing
    y.backward()
    assert x.grad == pytest.approx(2 / (1 + math.exp(-0.5)))


def test_a_failed_create_graph_pass_adds_nothing_to_the_graph(install_ops):
    install_ops(_softplus_plugin())
    g = Graph("g")
    x = g.leaf(0.5, "x")
    y = (x * x).softplus() + x.tanh()
    size, version = len(g), g.version
    with pytest.raises(NoGradGraphError):
        grad(y, x, create_graph=True)
    with pytest.raises(NoGradGraphError):
        y.backward(create_graph=True)
    assert (len(g), g.version) == (size, version)
    assert all(type(v.grad) is float for v in g.nodes)


def test_a_graph_full_midway_is_left_as_it_was():
    g = Graph("small", max_nodes=12)
    x = g.leaf(0.5, "x")
    y = (x * x).tanh().exp()
    size = len(g)
    with pytest.raises(GraphLimitError):
        y.backward(create_graph=True)
    assert len(g) == size and all(type(v.grad) is float for v in g.nodes)


def test_a_graph_rule_of_a_plugin_that_disagrees_is_refused_on_first_use(install_ops):
    def wrong(x, out):  # says 1 where the float rule says sigmoid(x)
        return (x * 0.0 + 1.0,)

    with warnings.catch_warnings():
        warnings.simplefilter("error", OpgraphPluginWarning)
        install_ops(_softplus_plugin(wrong))  # (no check, no cost, until it is used)
        x = Value(0.5)
        y = x.softplus()
        assert grad(y, x) == pytest.approx(1 / (1 + math.exp(-0.5)))
    with (pytest.warns(OpgraphPluginWarning, match=r"plugin 'softplus-test': op 'softplus': "
                                                   r"graph gradient rule refused \(at inputs"),
          pytest.raises(NoGradGraphError, match="refused when it was first used")):
        grad(y, x, create_graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OpgraphPluginWarning)  # (checked once: one warning)
        with pytest.raises(NoGradGraphError, match=r"op 'softplus' from plugin 'softplus-test'"
                                                   r".*by the graph rule but"):
            y.backward(create_graph=True)
    assert report_refused() == ["softplus"]


def report_refused() -> list[str]:
    return [op.name for op in core_higher.refused()]


def test_installing_a_table_runs_no_graph_rule(install_ops):
    """The graph rules are checked on first use: nodes made when a table is installed would
    cost every program, higher order or not (W3 of bench/run.py: a second full garbage
    collection in its one step)."""
    calls = []

    def rule(x, out):
        calls.append(x.data)
        return (1.0 / (1.0 + (-x).exp()),)

    install_ops(_softplus_plugin(rule))
    x = Value(0.5)
    y = x.softplus().tanh()
    y.backward()
    assert calls == []
    grad(y, x, create_graph=True)
    assert len(calls) == 3  # two points of the check, then the pass
    grad(y, x, create_graph=True)
    assert len(calls) == 4


def test_a_graph_rule_that_agrees_is_used(install_ops):
    def right(x, out):
        return ((-x).exp().__radd__(1.0).__rtruediv__(1.0),)  # 1 / (1 + e^-x), from ops

    with warnings.catch_warnings():
        warnings.simplefilter("error", OpgraphPluginWarning)
        install_ops(_softplus_plugin(right))
        opgraph.lookup_op("softplus")
    x = Value(0.5)
    d2 = grad(grad(x.softplus(), x, create_graph=True), x)
    s = 1 / (1 + math.exp(-0.5))
    assert d2 == pytest.approx(s * (1 - s), rel=1e-12)
    report = check_grad_graph(opgraph.lookup_op("softplus"))
    assert report.ok, str(report)


def test_check_grad_graph_finds_a_wrong_second_derivative(install_ops):
    def constant(x, out):  # the right number, but a constant: its derivative is 0, not s(1-s)
        return (1.0 / (1.0 + math.exp(-x.data)),)

    install_ops(_softplus_plugin(constant))
    report = check_grad_graph(opgraph.lookup_op("softplus"), points=5)
    assert not report.ok and len(report.failures) == 5
    assert "d2/d input 0 d input 0: graph rule gives 0" in report.failures[0].message
    assert str(report).startswith("graph rule: 5 disagreement(s) in 5 points")


def test_a_graph_rule_that_raises_or_returns_junk_is_a_grad_rule_error(install_ops):
    calls = {"n": 0}

    def flaky(x, out):
        calls["n"] += 1
        if calls["n"] > 2:  # (right at install time, wrong afterwards)
            return ("one", )
        return ((-x).exp().__radd__(1.0).__rtruediv__(1.0),)

    install_ops(_softplus_plugin(flaky))
    opgraph.lookup_op("softplus")
    x = Value(0.5, label="x")
    y = x.softplus()
    y.label = "y"
    with pytest.raises(GradRuleError, match=r"op 'softplus' graph gradient rule failed at "
                                            r"node 'y'.*str 'one', not a Value or a real"):
        grad(y, x, create_graph=True)


def test_an_input_the_outputs_do_not_depend_on_gets_zero():
    x, z = Value(2.0, label="x"), Value(5.0, label="z")
    y = x * x
    y.label = "y"
    assert grad(y, [x, z]) == [4.0, 0.0]
    dz = grad(y, z, create_graph=True)
    assert isinstance(dz, Value) and dz.data == 0.0 and dz.is_leaf and dz.label == "d y/d z"
    g = Graph("g")
    a, b = g.leaf(1.0, "a"), g.leaf(2.0, "b")
    c = a.exp()
    db = grad(c, b, create_graph=True)
    assert db.data == 0.0 and db.graph is g and db.id is not None


def test_inputs_outside_the_outputs_graph_are_refused():
    g, h = Graph("g"), Graph("h")
    a = g.leaf(1.0, "a")
    out = a * a
    other = h.leaf(1.0, "elsewhere")
    free = Value(1.0, label="free")
    with pytest.raises(GraphMismatchError, match=r"grad: inputs\[1\] \('elsewhere' id 0 .*"
                                                  r"belongs to graph 'h', not to graph 'g'"):
        grad(out, [a, other])
    with pytest.raises(GraphMismatchError, match=r"inputs\[0\] \('free' .*belongs to no graph, "
                                                  r"but the outputs belong to graph 'g'"):
        grad(out, [free])
    with pytest.raises(GraphMismatchError, match=r"belongs to graph 'g', but the outputs belong "
                                                  r"to no graph"):
        grad(free * 2, a)
    with pytest.raises(GraphMismatchError, match=r"grad: outputs\[0\] .* belongs to graph 'g' "
                                                  r"but outputs\[1\] .* to graph 'h'"):
        grad([out, other * 2], a)


def test_non_value_arguments_are_refused_with_their_place():
    x = Value(1.0)
    cases = [
        (lambda: grad(3.0, x), r"grad: outputs must be a Value or a list of Values, got float"),
        (lambda: grad([x * 2, "y"], x), r"grad: outputs\[1\] is str 'y', not a Value"),
        (lambda: grad([], x), r"grad: outputs is empty"),
        (lambda: grad(x * 2, [x, 2.0]), r"grad: inputs\[1\] is float 2.0, not a Value"),
        (lambda: grad(x * 2, x, create_graph="yes"),
         r"grad: create_graph must be True or False, got str 'yes'"),
        (lambda: grad(x * 2, x, grad_outputs=[1.0, 2.0]),
         r"grad: grad_outputs has 2 numbers for 1 output"),
        (lambda: hessian(2.0, [x]), r"hessian: f must be a Value, got float"),
        (lambda: hvp(x * x, [x], [1.0, 2.0]), r"hvp: v has 2 numbers for 1 input"),
        (lambda: hvp(x * x, [x], None), r"hvp: v must be a list of numbers"),
        (lambda: (x * 2).backward(create_graph=1), r"create_graph must be True or False"),
    ]
    for call, message in cases:
        with pytest.raises(InputTypeError, match=message):
            call()


def test_an_empty_list_of_inputs_gives_an_empty_list():
    x = Value(1.0)
    assert grad(x * 2, []) == [] and hessian(x * 2, []) == [] and hvp(x * 2, [], []) == []


def test_hessian_and_hvp_leave_a_graph_as_they_found_it():
    g = Graph("neuron")
    leaves, o = _neuron(g)
    size, version = len(g), g.version
    matrix = hessian(o, leaves)
    product = hvp(o, leaves, [1.0, 0.0, 0.0, 0.0, 0.0])
    assert (len(g), g.version) == (size, version)
    assert product == pytest.approx([row[0] for row in matrix], rel=1e-12, abs=1e-15)
    assert all(v.grad == 0.0 for v in g.nodes)


def test_every_default_op_has_a_graph_rule_that_passes_its_check():
    for name in DEFAULT_OPS:
        op = opgraph.lookup_op(name)
        assert op.grad_graph is not None, name
        report = check_grad_graph(op, points=10)
        assert report.ok, f"{name}: {report}"
    assert core_higher.refused() == {}


def test_a_gradient_graph_in_a_graph_follows_its_leaves():
    """The gradient nodes are ordinary nodes: `Graph.set` recomputes them, relu's slope
    included (a `step` node, not the number it was when the graph was built)."""
    g = Graph("g")
    x = g.leaf(1.0, "x")
    f = x.relu() * x + x.tanh()
    f.label = "f"
    d1 = grad(f, x, create_graph=True)
    assert d1.label == "d f/d x"
    for a in (-0.5, 2.0, 0.3):
        g.set(x.id, a)
        t = math.tanh(a)
        assert d1.data == pytest.approx((2 * a if a > 0 else 0.0) + 1 - t * t, rel=1e-12)
        assert grad(d1, x) == pytest.approx((2.0 if a > 0 else 0.0) - 2 * t * (1 - t * t),
                                            rel=1e-12)


def test_gradcheck_second_order_passes_on_the_neuron_and_leaves_it_alone():
    from opgraph.higher import gradcheck_second_order

    g = Graph("neuron")
    leaves, o = _neuron(g)
    data = [v.data for v in g.nodes]
    size, version = len(g), g.version
    report = gradcheck_second_order(o)
    assert report.ok, str(report)
    assert [row.label for row in report.leaves] == ["x1", "w1", "x2", "w2", "b"]
    assert report.leaves[0].analytic == pytest.approx(hessian(o, [leaves[0], leaves[2],
                                                                  leaves[1], leaves[3],
                                                                  leaves[4]])[0])
    assert [v.data for v in g.nodes] == data and (len(g), g.version) == (size, version)
    some = gradcheck_second_order(o, [leaves[0], leaves[4]])
    assert [row.id for row in some.leaves] == [leaves[0].id, leaves[4].id]
    assert all(len(row.analytic) == 2 for row in some.leaves)


def test_gradcheck_second_order_finds_a_wrong_graph_rule(install_ops):
    from opgraph.higher import gradcheck_second_order

    def constant(x, out):  # right first derivative, as a constant: second derivative 0
        return (1.0 / (1.0 + math.exp(-x.data)),)

    install_ops(_softplus_plugin(constant))
    x = Value(0.5, label="x")
    y = Value(2.0, label="y")
    report = gradcheck_second_order(x.softplus() * y)
    assert not report.ok
    bad = [row for row in report.leaves if not row.ok]
    assert [row.label for row in bad] == ["x"]
    assert bad[0].analytic[0] == 0.0 and bad[0].numeric[0] == pytest.approx(
        2 * 0.2350037122015945, rel=1e-4)
    assert "BAD 'x'" in str(report)
    with pytest.raises(InputTypeError, match=r"gradcheck_second_order: leaves\[0\] is float"):
        gradcheck_second_order(x * y, [1.0])
