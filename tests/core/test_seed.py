# The seed's code is copied verbatim, in its own style (semicolons, %-formatting, long lines).
# ruff: noqa: E501, E702, UP031
"""The seed (micrograd-walkthrough-notes.md): every example, with the output it shows.

The examples run as the seed writes them, with ``Value`` and ``draw_dot`` taken from opgraph.
The seed's own ``trace`` and ``draw_dot`` are copied here verbatim and must work on opgraph's
values too.
"""

from __future__ import annotations

import math
from xml.etree import ElementTree

import graphviz
import numpy as np
import pytest
from graphviz import Digraph

import opgraph
from opgraph import Value

# --- the seed's own code, verbatim ----------------------------------------------------------------


def f(x):
    return 3*x**2 - 4*x + 5


def trace(root):
    # builds a set of all nodes and edges in a graph
    nodes, edges = set(), set()
    def build(v):
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                build(child)
    build(root)
    return nodes, edges


def seed_draw_dot(root):
    dot = Digraph(format='svg', graph_attr={'rankdir': 'LR'}) # LR = left to right

    nodes, edges = trace(root)
    for n in nodes:
        uid = str(id(n))
        # for any value in the graph, create a rectangular ('record') node for it
        dot.node(name=uid, label="{ %s | data %.4f | grad %.4f }" % (n.label, n.data, n.grad), shape='record')
        if n._op:
            # if this value is a result of some operation, create an op node for it
            dot.node(name=uid+n._op, label=n._op)
            # and connect this node to it
            dot.edge(uid + n._op, uid)

    for n1, n2 in edges:
        # connect n1 to the op node of n2
        dot.edge(str(id(n1)), str(id(n2)) + n2._op)

    return dot


def lol():
    """numerical gradient check"""
    h = 0.0001

    a = Value(2.0, label='a')
    b = Value(-3.0, label='b')
    c = Value(10.0, label='c')
    e = a*b; e.label = 'e'
    d = e + c; e.label = 'd'
    f = Value(-2.0, label='f')
    L = d*f; L.label = 'L'
    L1 = L.data

    a = Value(2.0, label='a')
    b = Value(-3.0, label='b')

    # Update this line to get gradient for any value
    # also must move the line to directly before the value is used in an operation
    a.data += h

    c = Value(10.0, label='c')
    e = a*b; e.label = 'e'
    d = e + c; e.label = 'd'
    f = Value(-2.0 , label='f')
    L = d*f; L.label = 'L'
    L2 = L.data

    print((L2 - L1)/h)


# --- fixtures: the seed's two expressions ---------------------------------------------------------


def seed_expression():
    a = Value(2.0, label='a')
    b = Value(-3.0, label='b')
    c = Value(10.0, label='c')
    e = a*b; e.label = 'e'
    d = e + c; d.label = 'd'
    f = Value(-2.0, label='f')
    L = d*f; L.label = 'L'
    return dict(a=a, b=b, c=c, e=e, d=d, f=f, L=L)


def seed_neuron():
    # inputs x1, x2
    x1 = Value(2.0, label='x1')
    x2 = Value(0.0, label='x2')
    # weights w1, w2
    w1 = Value(-3.0, label='w1')
    w2 = Value(1.0, label='w2')
    # bias
    b = Value(6.8813735870195432, label='b')
    # x1w1 + x2w2 + b
    x1w1 = x1*w1; x1w1.label = 'x1w1'
    x2w2 = x2*w2; x2w2.label = 'x2w2'
    x1w1x2w2 = x1w1 + x2w2; x1w1x2w2.label = 'x1w1 + x2w2'
    n = x1w1x2w2 + b; n.label = 'n'
    o = n.tanh(); o.label = 'o'
    return dict(x1=x1, x2=x2, w1=w1, w2=w2, b=b, x1w1=x1w1, x2w2=x2w2,
                x1w1x2w2=x1w1x2w2, n=n, o=o)


# --- derivatives of a plain function --------------------------------------------------------------


def test_f_of_3():
    assert f(3.0) == 20.0
    # the same function over Values gives the same number
    assert f(Value(3.0)).data == 20.0


@pytest.mark.parametrize(
    ("x", "slope"),
    [(-4, -27.999997001870724), (3, 14.000003002223593), (2/3, 2.999378523327323e-06)],
)
def test_slopes_by_bumping_x(x, slope):
    h = 0.000001 # amount to bump 'x'
    assert (f(x + h) - f(x)) / h == slope
    # the same slopes through opgraph Values: identical arithmetic, identical bits
    assert (f(Value(x + h)).data - f(Value(x)).data) / h == slope


@pytest.mark.parametrize("x", [-4.0, 3.0, 2/3, 0.25])
def test_backward_of_f_is_its_derivative(x):
    v = Value(x)
    y = f(v)
    y.backward()
    assert y.data == pytest.approx(3*x**2 - 4*x + 5, rel=1e-15)
    assert v.grad == pytest.approx(6*x - 4, abs=1e-12)


def test_plots_of_f_and_tanh(tmp_path):
    """The seed's plots (f and tanh), drawn without a display; opgraph agrees point by point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.arange(-5, 5, 0.25)
    ys = f(xs)
    plt.plot(xs, ys)
    plt.savefig(tmp_path / "f.png")
    plt.close("all")
    assert [f(Value(float(x))).data for x in xs] == pytest.approx(list(ys), rel=1e-15)

    xs = np.arange(-5, 5, 0.2)
    plt.plot(xs, np.tanh(xs))
    plt.grid()
    plt.savefig(tmp_path / "tanh.png")
    plt.close("all")
    assert [Value(float(x)).tanh().data for x in xs] == pytest.approx(
        list(np.tanh(xs)), rel=1e-14, abs=1e-15)
    assert (tmp_path / "f.png").stat().st_size > 0
    assert (tmp_path / "tanh.png").stat().st_size > 0


# --- derivatives of a more complex example --------------------------------------------------------


def test_d_is_4(capsys):
    a = 2.0
    b = -3.0
    c = 10.0
    d = a*b + c
    print(d)
    assert capsys.readouterr().out == "4.0\n"
    d = Value(a)*Value(b) + Value(c)
    print(d.data)
    assert capsys.readouterr().out == "4.0\n"


def test_d1_d2_slope(capsys):
    h = 0.0001

    a = 2.0
    b = -3.0
    c = 10

    d1 = a*b + c
    a += h
    d2 = a*b + c
    print('d1', d1)
    print('d2', d2)
    print('slope', (d2 - d1)/h)
    expected = "d1 4.0\nd2 3.999699999999999\nslope -3.000000000010772\n"
    assert capsys.readouterr().out == expected

    # the same with Values
    a, b, c = Value(2.0), Value(-3.0), Value(10)
    d1 = (a*b + c).data
    a.data += h
    d2 = (a*b + c).data
    print('d1', d1)
    print('d2', d2)
    print('slope', (d2 - d1)/h)
    assert capsys.readouterr().out == expected


# --- the Value expression L -----------------------------------------------------------------------


def test_L_repr():
    L = seed_expression()["L"]
    assert repr(L) == "Value(data=-8.0)"
    assert L.data == -8.0


def test_L_prev_and_op():
    v = seed_expression()
    L, d, f = v["L"], v["d"], v["f"]
    prev, op = L._prev, L._op
    assert op == '*'
    assert isinstance(prev, set)
    assert len(prev) == 2
    # the very objects the expression was built from, every time it is asked
    assert {id(p) for p in prev} == {id(d), id(f)}
    assert {id(p) for p in L._prev} == {id(d), id(f)}
    assert sorted(repr(p) for p in prev) == ["Value(data=-2.0)", "Value(data=4.0)"]
    # the printed pair, up to set order
    shown = repr((prev, op))
    assert shown in ("({Value(data=-2.0), Value(data=4.0)}, '*')",
                     "({Value(data=4.0), Value(data=-2.0)}, '*')")
    assert v["d"]._op == '+'
    assert {id(p) for p in v["d"]._prev} == {id(v["e"]), id(v["c"])}
    assert v["a"]._prev == set() and v["a"]._op == ''


def _seed_picture_checks(dot, values, dot_layout):
    """The seed's own draw_dot on opgraph values: one record per value, one node per op."""
    assert isinstance(dot, Digraph)
    laid = dot_layout(dot)
    assert laid["graph"]["rankdir"] == "LR"
    expected = sorted(
        "{ %s | data %.4f | grad %.4f }" % (n.label, n.data, n.grad) for n in values
    )
    assert sorted(laid["records"]) == expected
    assert sorted(laid["ops"]) == sorted(n._op for n in values if n._op)
    svg = dot.pipe(format="svg", encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    return laid


def test_seed_draw_dot_on_L(dot_layout):
    v = seed_expression()
    nodes, edges = trace(v["L"])
    assert {id(n) for n in nodes} == {id(x) for x in v.values()}
    assert len(edges) == 6
    assert {(id(a), id(b)) for a, b in edges} == {
        (id(v[a]), id(v[b])) for a, b in
        [("a", "e"), ("b", "e"), ("e", "d"), ("c", "d"), ("d", "L"), ("f", "L")]
    }
    dot = seed_draw_dot(v["L"])
    laid = _seed_picture_checks(dot, v.values(), dot_layout)
    assert "{ a | data 2.0000 | grad 0.0000 }" in laid["records"]
    assert "{ L | data -8.0000 | grad 0.0000 }" in laid["records"]
    assert len(laid["edges"]) == 6 + 3  # input -> op and op -> result


def test_manual_backprop_then_draw(dot_layout):
    v = seed_expression()
    L, d, f, c, e, a, b = (v[k] for k in ("L", "d", "f", "c", "e", "a", "b"))
    L.grad = 1.0
    d.grad = -2.0
    f.grad = 4.0
    c.grad = -2.0
    e.grad = -2.0
    a.grad = 6.0
    b.grad = -4.0
    laid = _seed_picture_checks(seed_draw_dot(L), v.values(), dot_layout)
    assert "{ a | data 2.0000 | grad 6.0000 }" in laid["records"]
    assert "{ b | data -3.0000 | grad -4.0000 }" in laid["records"]
    assert "{ f | data -2.0000 | grad 4.0000 }" in laid["records"]
    # opgraph's draw_dot shows the same records
    mine = dot_layout(opgraph.draw_dot(L))
    assert sorted(mine["records"]) == sorted(laid["records"])

    # and backward() finds exactly the gradients worked out by hand
    manual = {k: x.grad for k, x in v.items()}
    L.zero_grad()
    assert all(x.grad == 0.0 for x in v.values())
    L.backward()
    assert {k: x.grad for k, x in v.items()} == manual


def test_lol_prints_6(capsys):
    lol()
    assert capsys.readouterr().out == "6.000000000021544\n"


# --- the neuron -----------------------------------------------------------------------------------


def test_neuron_forward():
    o = seed_neuron()["o"]
    assert o.data == 0.7071067811865476
    assert o._op == 'tanh'
    assert repr(o) == "Value(data=0.7071067811865476)"


def test_neuron_manual_gradients(dot_layout):
    v = seed_neuron()
    o, n, x1w1x2w2, b, x1w1, x2w2 = (v[k] for k in ("o", "n", "x1w1x2w2", "b", "x1w1", "x2w2"))
    x1, x2, w1, w2 = (v[k] for k in ("x1", "x2", "w1", "w2"))
    o.grad = 1.0
    n.grad = 0.5
    x1w1x2w2.grad = 0.5
    b.grad = 0.5
    x1w1.grad = 0.5
    x2w2.grad = 0.5
    x1.grad = w1.data * x1w1.grad
    w1.grad = x1.data * x1w1.grad
    x2.grad = w2.data * x2w2.grad
    w2.grad = x2.data * x2w2.grad
    assert 1 - o.data**2 == pytest.approx(0.5, abs=1e-15)  # do/dn
    assert (x1.grad, w1.grad, x2.grad, w2.grad) == (-1.5, 1.0, 0.5, 0.0)
    laid = _seed_picture_checks(seed_draw_dot(o), v.values(), dot_layout)
    assert "{ x1 | data 2.0000 | grad -1.5000 }" in laid["records"]
    assert "{ o | data 0.7071 | grad 1.0000 }" in laid["records"]


def test_neuron_backward():
    v = seed_neuron()
    o = v["o"]
    o.backward()
    expected = {"x1": -1.5, "w1": 1.0, "x2": 0.5, "w2": 0.0, "b": 0.5, "n": 0.5,
                "x1w1": 0.5, "x2w2": 0.5, "x1w1x2w2": 0.5, "o": 1.0}
    for name, grad in expected.items():
        assert v[name].grad == pytest.approx(grad, abs=1e-12), name


def test_draw_dot_of_neuron(dot_layout):
    v = seed_neuron()
    o = v["o"]
    o.backward()
    dot = opgraph.draw_dot(o)
    assert isinstance(dot, graphviz.Digraph)
    assert dot.graph_attr.get("rankdir") == "LR"
    laid = dot_layout(dot)
    assert laid["graph"]["rankdir"] == "LR"
    records = laid["records"]
    assert len(records) == len(v)
    for label in (
        "{ x1 | data 2.0000 | grad -1.5000 }",
        "{ w1 | data -3.0000 | grad 1.0000 }",
        "{ x2 | data 0.0000 | grad 0.5000 }",
        "{ w2 | data 1.0000 | grad 0.0000 }",
        "{ b | data 6.8814 | grad 0.5000 }",
        "{ n | data 0.8814 | grad 0.5000 }",
        "{ o | data 0.7071 | grad 1.0000 }",
    ):
        assert label in records
    # one op node per op: two '*', two '+', one 'tanh'
    assert sorted(laid["ops"]) == sorted(["*", "*", "+", "+", "tanh"])
    # each op node has its inputs coming in and its result going out
    edges = laid["edges"]
    assert len(edges) == 5 + 2 * 4 + 1
    assert ("tanh", "{ o | data 0.7071 | grad 1.0000 }") in edges
    assert ("{ n | data 0.8814 | grad 0.5000 }", "tanh") in edges
    assert ("{ x1 | data 2.0000 | grad -1.5000 }", "*") in edges


def test_draw_dot_renders_svg_with_real_dot(tmp_path):
    v = seed_neuron()
    v["o"].backward()
    dot = opgraph.draw_dot(v["o"])
    svg = dot.pipe(format="svg", encoding="utf-8")
    texts = _svg_texts(svg)
    for text in ("x1", "data 2.0000", "grad -1.5000", "w1", "grad 1.0000", "tanh",
                 "data 0.7071", "x1w1 + x2w2", "*", "+"):
        assert text in texts, text
    assert texts.count("tanh") == 1
    # render to a file, as a learner would
    path = dot.render(tmp_path / "neuron", format="svg")
    assert path.endswith(".svg")
    with open(path, encoding="utf-8") as fh:
        assert "grad -1.5000" in _svg_texts(fh.read())


def _svg_texts(svg: str) -> list[str]:
    """The text of every <text> element of an SVG document."""
    root = ElementTree.fromstring(svg.encode("utf-8"))
    return [(t.text or "").strip() for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_seed_expression_through_everything_math():
    """The neuron's numbers follow from the formulas, not from stored constants."""
    v = seed_neuron()
    n = 2.0 * -3.0 + 0.0 * 1.0 + 6.8813735870195432
    assert v["n"].data == n
    assert v["o"].data == pytest.approx(math.tanh(n), rel=1e-15)
