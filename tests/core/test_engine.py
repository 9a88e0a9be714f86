"""The engine: Value's operators and methods, apply, backward, errors, source locations."""

from __future__ import annotations

import gc
import inspect
import math
import pickle
import threading

import pytest

import opgraph
from opgraph import (
    ArityError,
    AttributeSpecError,
    ForwardError,
    GradRuleError,
    Graph,
    GraphMismatchError,
    InputTypeError,
    OpDef,
    OpgraphError,
    UnknownOpError,
    Value,
    gcpolicy,
)

# --- operators ------------------------------------------------------------------------------------

X, Y = 1.7, -0.6

# (name, build from two Values x and y, expected data, expected (d/dx, d/dy), expected _op)
OPERATORS = [
    ("x+y", lambda x, y: x + y, X + Y, (1.0, 1.0), "+"),
    ("x+2", lambda x, y: x + 2, X + 2, (1.0, 0.0), "+"),
    ("2+x", lambda x, y: 2 + x, 2 + X, (1.0, 0.0), "+"),
    ("x-y", lambda x, y: x - y, X - Y, (1.0, -1.0), "-"),
    ("x-2", lambda x, y: x - 2, X - 2, (1.0, 0.0), "-"),
    ("1-x", lambda x, y: 1 - x, 1 - X, (-1.0, 0.0), "-"),
    ("x*y", lambda x, y: x * y, X * Y, (Y, X), "*"),
    ("x*3", lambda x, y: x * 3, X * 3, (3.0, 0.0), "*"),
    ("3*x", lambda x, y: 3 * x, 3 * X, (3.0, 0.0), "*"),
    ("x/y", lambda x, y: x / y, X / Y, (1 / Y, -X / Y**2), "/"),
    ("x/2", lambda x, y: x / 2, X / 2, (0.5, 0.0), "/"),
    ("1/x", lambda x, y: 1 / x, 1 / X, (-1 / X**2, 0.0), "/"),
    ("x**2", lambda x, y: x**2, X**2, (2 * X, 0.0), "**2"),
    ("x**-1", lambda x, y: x**-1, X**-1, (-(X**-2), 0.0), "**-1"),
    ("x**0.5", lambda x, y: x**0.5, X**0.5, (0.5 * X**-0.5, 0.0), "**0.5"),
    ("x**y", lambda x, y: x**y, X**Y, (Y * X ** (Y - 1), X**Y * math.log(X)), "**"),
    ("2**x", lambda x, y: 2**x, 2**X, (2**X * math.log(2), 0.0), "**"),
    ("-x", lambda x, y: -x, -X, (-1.0, 0.0), "neg"),
    ("+x", lambda x, y: +x, X, (1.0, 0.0), ""),
]


@pytest.mark.parametrize(
    ("build", "data", "grads", "symbol"),
    [case[1:] for case in OPERATORS],
    ids=[case[0] for case in OPERATORS],
)
def test_operator(build, data, grads, symbol):
    x, y = Value(X, label="x"), Value(Y, label="y")
    out = build(x, y)
    assert isinstance(out, Value)
    assert out.data == pytest.approx(data, rel=1e-15)
    assert out._op == symbol
    out.backward()
    assert x.grad == pytest.approx(grads[0], rel=1e-12)
    assert y.grad == pytest.approx(grads[1], rel=1e-12)


def test_number_operand_becomes_an_input_leaf():
    x = Value(3.0)
    for out in (x + 2, 2 + x, x - 2, 2 - x, x * 2, 2 * x, x / 2, 2 / x, 2**x):
        assert len(out._prev) == 2
        assert x in out._prev
        (const,) = out._prev - {x}
        assert const.data == 2 and const._op == ""
    assert out.inputs[0].data == 2 and out.inputs[1] is x  # 2 ** x: the number is the base


def test_argument_order_of_non_commutative_ops():
    x = Value(8.0)
    assert (x - 2).data == 6.0 and (2 - x).data == -6.0
    assert (x / 2).data == 4.0 and (2 / x).data == 0.25
    assert (x**2).data == 64.0 and (2**x).data == 256.0
    assert (x**2).op == "pow_const" and (2**x).op == "pow" and (x ** Value(2.0)).op == "pow"
    assert (x**2).attrs == {"exponent": 2}


@pytest.mark.parametrize("bad", ["a", None, [1.0], 1j, object()])
def test_operators_refuse_non_numbers(bad):
    x = Value(1.0)
    for build in (lambda: x + bad, lambda: bad + x, lambda: x * bad, lambda: bad * x,
                  lambda: x - bad, lambda: bad - x, lambda: x / bad, lambda: bad / x,
                  lambda: x**bad, lambda: bad**x):
        with pytest.raises(InputTypeError, match="expected a real number"):
            build()


def test_numbers_of_other_real_types_are_accepted():
    from fractions import Fraction

    np = pytest.importorskip("numpy")
    assert Value(Fraction(1, 2)).data == 0.5
    assert (Value(1.0) + np.float64(2.5)).data == 3.5
    assert type(Value(np.float32(0.25)).data) is float


# --- the unary methods ----------------------------------------------------------------------------


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


# (method, input, expected data, expected derivative)
METHODS = [
    ("tanh", 0.3, math.tanh(0.3), 1 - math.tanh(0.3) ** 2),
    ("tanh", -2.5, math.tanh(-2.5), 1 - math.tanh(-2.5) ** 2),
    ("exp", 1.3, math.exp(1.3), math.exp(1.3)),
    ("exp", -4.0, math.exp(-4.0), math.exp(-4.0)),
    ("log", 2.5, math.log(2.5), 1 / 2.5),
    ("log", 0.01, math.log(0.01), 100.0),
    ("relu", 1.5, 1.5, 1.0),
    ("relu", -1.5, 0.0, 0.0),
    ("sigmoid", 0.7, _sigmoid(0.7), _sigmoid(0.7) * (1 - _sigmoid(0.7))),
    ("sigmoid", -3.0, _sigmoid(-3.0), _sigmoid(-3.0) * (1 - _sigmoid(-3.0))),
]


@pytest.mark.parametrize(("method", "x", "data", "grad"), METHODS)
def test_unary_method(method, x, data, grad):
    v = Value(x)
    out = getattr(v, method)()
    assert out.data == pytest.approx(data, rel=1e-14, abs=1e-300)
    assert out._op == method
    assert out.op == method
    assert out._prev == {v}
    out.backward()
    assert v.grad == pytest.approx(grad, rel=1e-12, abs=1e-300)


def test_op_symbols():
    x, y = Value(2.0), Value(3.0)
    assert (x + y)._op == "+"
    assert (x * y)._op == "*"
    assert x.tanh()._op == "tanh"
    assert (x**2)._op == "**2"
    assert (x**2.5)._op == "**2.5"
    assert x._op == ""
    assert (x + y).op == "add" and x.op is None
    assert x.is_leaf and not (x + y).is_leaf


def test_tanh_and_sigmoid_are_numerically_stable():
    assert Value(1000.0).tanh().data == 1.0
    assert Value(-1000.0).tanh().data == -1.0
    assert Value(30.0).tanh().data == 1.0
    assert Value(1e-10).tanh().data == pytest.approx(1e-10, rel=1e-12)  # no cancellation
    assert Value(-1000).sigmoid().data == 0.0
    assert Value(1000).sigmoid().data == 1.0
    assert Value(-40.0).sigmoid().data == pytest.approx(math.exp(-40.0), rel=1e-12)
    for x in (1000.0, -1000.0):
        v = Value(x)
        out = v.tanh() + v.sigmoid()
        out.backward()
        assert v.grad == 0.0


def test_exp_overflow_gives_inf():
    v = Value(1000.0)
    out = v.exp()
    assert out.data == math.inf
    out.backward()
    assert v.grad == math.inf


def test_power_zero_at_zero_has_gradient_zero():
    x = Value(0.0)
    out = x**0
    assert out.data == 1.0
    out.backward()
    assert x.grad == 0.0
    x, y = Value(0.0), Value(0.0)
    out = x**y
    assert out.data == 1.0
    out.backward()
    assert x.grad == 0.0


def test_log_of_zero_is_minus_inf():
    assert Value(0.0).log().data == -math.inf


# --- apply and plugin ops as methods --------------------------------------------------------------


def test_apply_by_name():
    x = Value(0.5)
    assert opgraph.apply("tanh", x).data == x.tanh().data
    assert opgraph.apply("add", 1, 2).data == 3
    assert opgraph.apply("sub", x, 2.0).data == -1.5
    cube = opgraph.apply("pow_const", x, exponent=3)
    assert cube.data == 0.125 and cube._op == "**3"
    assert opgraph.apply("pow", 2.0, 3.0).data == 8.0
    out = opgraph.apply("mul", x, x)
    out.backward()
    assert x.grad == 1.0


def _softplus():
    def forward(x):
        return math.log1p(math.exp(-abs(x))) + max(x, 0.0)

    def grad(x, out):
        return (_sigmoid(x),)

    return OpDef("softplus", 1, forward, grad, doc="log(1 + e ** x)")


def _lerp():
    return OpDef("lerp", 3, lambda a, b, t: a + (b - a) * t,
                 lambda a, b, t, out: (1 - t, t, b - a), doc="a + (b - a) * t")


def test_plugin_ops_become_methods(install_ops, ops_plugin):
    assert not hasattr(Value(1.0), "softplus")
    install_ops(("extra_ops", ops_plugin(_softplus(), _lerp())))
    x = Value(0.3, label="x")
    y = x.softplus()
    assert y.data == pytest.approx(math.log(1 + math.exp(0.3)), rel=1e-15)
    assert y._op == "softplus" and y.op == "softplus"
    y.backward()
    assert x.grad == pytest.approx(_sigmoid(0.3), rel=1e-15)
    assert x.softplus.__doc__ == "log(1 + e ** x)"
    assert x.softplus.__name__ == "softplus"
    # a method for an op with more inputs takes the others as arguments
    a = Value(1.0)
    z = a.lerp(3.0, Value(0.25))
    assert z.data == 1.5
    z.backward()
    assert a.grad == 0.75
    # apply reaches plugin ops too, with numbers
    assert opgraph.apply("softplus", 0.0).data == pytest.approx(math.log(2.0), rel=1e-15)
    # the method is only a shortcut for apply: errors are the engine's
    with pytest.raises(ArityError):
        x.softplus(1.0)
    # names that are no op stay attribute errors
    with pytest.raises(AttributeError, match="softplusx"):
        x.softplusx  # noqa: B018
    with pytest.raises(AttributeError):
        x._softplus  # noqa: B018


def test_op_table_is_built_once(install_ops):
    calls = []

    @opgraph.hookimpl
    def opgraph_register_ops():
        calls.append(1)
        return [_softplus()]

    import types

    install_ops(("counting", types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops)))
    x = Value(0.1)
    for _ in range(50):
        x = x.softplus()
        x = opgraph.apply("softplus", x)
    assert calls == [1]


# --- accumulation and the semantics of backward ---------------------------------------------------


def test_gradients_accumulate_where_a_value_is_reused():
    a = Value(3.0)
    b = a + a
    c = b + b
    c.backward()
    assert a.grad == 4.0
    assert b.grad == 2.0

    x = Value(3.0)
    y = x * x
    y.backward()
    assert x.grad == 6.0

    x = Value(2.0)
    u = x * 3
    z = u * x + u.tanh() * x  # x reached along four paths, u along two
    z.backward()
    expected = 2 * 3 * 2.0 + (1 - math.tanh(6.0) ** 2) * 3 * 2.0 + math.tanh(6.0)
    assert x.grad == pytest.approx(expected, rel=1e-14)


def test_backward_visits_each_node_once():
    # a diamond lattice: 2**40 paths from the root to x, but 2*40 + 1 nodes
    x = Value(1.0)
    y = x
    for _ in range(40):
        y = y * 0.5 + y * 0.5
    nodes = opgraph.topological_order(y)
    assert len(nodes) == len({id(n) for n in nodes})
    y.backward()
    assert x.grad == pytest.approx(1.0)
    assert nodes[-1] is y and nodes.index(x) < nodes.index(y)


def test_topological_order_puts_inputs_first():
    a = Value(1.0, label="a")
    b = a * 2
    c = Value(3.0, label="c")  # a leaf made after a computed node
    d = (b + c) * (c - a) + b.tanh()
    e = Value(0.5) + d * d
    order = opgraph.topological_order(e)
    position = {id(n): i for i, n in enumerate(order)}
    assert len(position) == len(order) == 12
    assert order[-1] is e
    for n in order:
        for child in n.inputs:
            assert position[id(child)] < position[id(n)]


def _two_layer():
    x, w, b = Value(0.5, label="x"), Value(-1.2, label="w"), Value(0.3, label="b")
    h = (x * w + b).tanh()
    out = h * h + x.exp() - w / 2
    return out


def test_backward_twice_adds_at_the_leaves_only():
    """Documented: leaves accumulate (as in PyTorch), computed nodes hold exactly the derivative."""
    out = _two_layer()
    nodes = opgraph.topological_order(out)
    out.backward()
    once = [n.grad for n in nodes]
    assert out.grad == 1.0
    out.backward()
    assert [n.grad for n in nodes] == pytest.approx(
        [2 * g if n.is_leaf else g for n, g in zip(nodes, once, strict=True)], rel=1e-15)
    assert out.grad == 1.0
    out.backward()
    assert [n.grad for n in nodes] == pytest.approx(
        [3 * g if n.is_leaf else g for n, g in zip(nodes, once, strict=True)], rel=1e-15)


def test_backward_does_not_feed_stale_interior_gradients_back():
    """micrograd's trap: a second backward on the same graph triples deep leaves' gradients."""
    a = Value(3.0)
    b = a * 2.0
    c = b * 5.0
    c.backward()
    c.backward()
    assert a.grad == 2 * 10.0  # micrograd would give 10 + (10 + 10) = 30
    assert b.grad == 5.0


def test_zero_grad_resets_a_whole_graph():
    out = _two_layer()
    out.backward()
    once = {id(n): n.grad for n in opgraph.topological_order(out)}
    assert any(once.values())
    out.backward()
    out.zero_grad()
    assert all(n.grad == 0.0 for n in opgraph.topological_order(out))
    out.backward()
    assert {id(n): n.grad for n in opgraph.topological_order(out)} == once


def test_zero_grad_reaches_only_what_the_value_depends_on():
    x = Value(1.0)
    y = x * 2
    z = y * 3
    z.backward()
    y.zero_grad()
    assert (x.grad, y.grad, z.grad) == (0.0, 0.0, 1.0)


def test_backward_of_an_inner_node():
    x = Value(2.0)
    y = x * x
    z = y + 1
    y.backward()
    assert (x.grad, y.grad, z.grad) == (4.0, 1.0, 0.0)


@pytest.mark.slow
def test_million_op_chain():
    x = Value(0.5, label="x")
    c = Value(1e-6, label="c")
    y = x
    for _ in range(1_000_000):
        y = y + c
    assert y.data == pytest.approx(1.5, rel=1e-9)
    y.backward()
    assert x.grad == 1.0
    assert c.grad == 1_000_000.0
    assert len(opgraph.topological_order(y)) == 1_000_002
    y.zero_grad()
    assert x.grad == 0.0 and c.grad == 0.0


@pytest.mark.slow
def test_deep_chain_of_unary_ops():
    x = Value(0.1)
    y = x
    for _ in range(200_000):
        y = -y.tanh()
    y.backward()
    assert math.isfinite(x.grad)
    assert x.grad != 0.0


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_op_suggests():
    with pytest.raises(UnknownOpError) as info:
        opgraph.apply("tahn", Value(1.0))
    err = info.value
    assert str(err) == "no op named 'tahn'; did you mean 'tanh'?"
    assert err.name == "tahn" and err.suggestions[0] == "tanh"
    assert isinstance(err, OpgraphError) and isinstance(err, KeyError)
    with pytest.raises(UnknownOpError, match="did you mean 'sigmoid'"):
        opgraph.lookup_op("sigmod")
    with pytest.raises(UnknownOpError) as info:
        opgraph.apply("zzzzzz", 1.0)
    assert "did you mean" not in str(info.value)
    with pytest.raises(UnknownOpError):
        opgraph.apply(["add"], 1.0, 2.0)  # not even a name


@pytest.mark.parametrize(
    ("name", "inputs", "message"),
    [
        ("add", (1.0,), "op 'add' takes 2 inputs, got 1"),
        ("add", (1.0, 2.0, 3.0), "op 'add' takes 2 inputs, got 3"),
        ("tanh", (1.0, 2.0), "op 'tanh' takes 1 input, got 2"),
        ("neg", (), "op 'neg' takes 1 input, got 0"),
    ],
)
def test_wrong_arity(name, inputs, message):
    with pytest.raises(ArityError) as info:
        opgraph.apply(name, *inputs)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, TypeError)


def test_wrong_arity_names_the_inputs():
    with pytest.raises(ArityError, match="'lonely'"):
        opgraph.apply("mul", Value(1.0, label="lonely"))


@pytest.mark.parametrize(
    ("name", "attrs", "message"),
    [
        ("pow_const", {}, r"missing \['exponent'\]"),
        ("tanh", {"k": 1}, r"unexpected \['k'\]"),
        ("pow_const", {"exponent": 2, "base": 3}, r"unexpected \['base'\]"),
        ("pow_const", {"exponent": [2]}, "attribute 'exponent' must be a finite number"),
        ("pow_const", {"exponent": True}, "attribute 'exponent' must be a finite number"),
        ("pow_const", {"exponent": None}, "attribute 'exponent' must be a finite number"),
    ],
)
def test_bad_attributes(name, attrs, message):
    with pytest.raises(AttributeSpecError, match=message) as info:
        opgraph.apply(name, Value(2.0), **attrs)
    assert name in str(info.value)


@pytest.mark.parametrize("bad", ["x", None, 1j, [1.0], {"data": 1.0}])
def test_value_of_a_non_number(bad):
    with pytest.raises(InputTypeError) as info:
        Value(bad)
    assert repr(bad) in str(info.value)
    assert isinstance(info.value, TypeError)


def test_apply_of_a_non_number():
    with pytest.raises(InputTypeError, match="input 1 of op 'add'"):
        opgraph.apply("add", Value(1.0), "two")
    with pytest.raises(InputTypeError):
        Value(2.0) ** "x"


def test_rule_that_raises_names_op_and_node():
    v = Value(-1.0, label="q")
    with pytest.raises(ForwardError) as info:
        v.log()
    err = info.value
    assert err.op == "log"
    assert "'q'" in err.node
    assert isinstance(err.cause, ValueError)
    assert "op 'log'" in str(err) and "'q'" in str(err) and "ValueError" in str(err)
    assert isinstance(err, OpgraphError) and isinstance(err, ArithmeticError)

    with pytest.raises(ForwardError) as info:
        Value(1.0, label="num") / Value(0.0, label="den")
    assert info.value.op == "div"
    assert "'num'" in str(info.value) and "'den'" in str(info.value)
    assert isinstance(info.value.cause, ZeroDivisionError)

    with pytest.raises(ForwardError, match="op 'pow_const'"):
        Value(-8.0) ** 0.5
    with pytest.raises(ForwardError, match="op 'pow'"):
        Value(-8.0) ** Value(0.5)


def test_unlabelled_node_is_described_by_its_data():
    with pytest.raises(ForwardError, match=r"data -2\.0"):
        Value(-2.0).log()


def _bad_forward_ops():
    return [
        OpDef("stringy", 1, lambda x: "abc", lambda x, out: (1.0,)),
        OpDef("complexy", 1, lambda x: complex(x, 1), lambda x, out: (1.0,)),
        OpDef("booly", 1, lambda x: x > 0, lambda x, out: (0.0,)),
        OpDef("nonely", 2, lambda a, b: None, lambda a, b, out: (0.0, 0.0)),
    ]


@pytest.mark.parametrize("name", ["stringy", "complexy", "booly", "nonely"])
def test_rule_returning_a_non_number(install_ops, ops_plugin, name):
    install_ops(("bad_forward", ops_plugin(*_bad_forward_ops())))
    op = opgraph.lookup_op(name)
    inputs = [Value(1.0, label=f"in{i}") for i in range(op.arity)]
    with pytest.raises(ForwardError) as info:
        opgraph.apply(name, *inputs)
    assert info.value.op == name
    assert "not a real number" in str(info.value)
    assert "'in0'" in str(info.value)
    if op.arity == 1:
        with pytest.raises(ForwardError):
            getattr(inputs[0], name)()


def _bad_grad_ops():
    def boom(x, out):
        raise RuntimeError("kaboom")

    return [
        OpDef("twograds", 1, lambda x: 2 * x, lambda x, out: (2.0, 0.0)),
        OpDef("nograds", 1, lambda x: 2 * x, lambda x, out: ()),
        OpDef("onegrad", 2, lambda a, b: a + b, lambda a, b, out: (1.0,)),
        OpDef("threegrads", 2, lambda a, b: a + b, lambda a, b, out: (1.0, 1.0, 1.0)),
        OpDef("raising", 1, lambda x: 2 * x, boom),
        OpDef("nonegrad", 1, lambda x: 2 * x, lambda x, out: None),
        OpDef("attrgrad", 1, lambda x, k: k * x, lambda x, out, k: (k, k), attrs=("k",),
              sample_attrs={"k": 2.0}),
    ]


@pytest.mark.parametrize(
    "name", ["twograds", "nograds", "onegrad", "threegrads", "raising", "nonegrad", "attrgrad"]
)
def test_failing_gradient_rule_leaves_grads_unchanged(install_ops, ops_plugin, name):
    install_ops(("bad_grads", ops_plugin(*_bad_grad_ops())))
    op = opgraph.lookup_op(name)
    x = Value(0.5, label="x")
    w = Value(2.0, label="w")
    v = Value(3.0, label="v")
    inner = x * w
    inputs = [inner] + [Value(1.0, label="other")] * (op.arity - 1)
    attrs = {"k": 2.0} if op.attrs else {}
    bad = opgraph.apply(name, *inputs, **attrs)
    bad.label = "bad"
    root = bad * v + x  # the root's own rule runs first and succeeds
    nodes = opgraph.topological_order(root)
    for i, n in enumerate(nodes):
        n.grad = 10.0 + i
    before = [n.grad for n in nodes]
    with pytest.raises(GradRuleError) as info:
        root.backward()
    err = info.value
    assert err.op == name
    assert "'bad'" in err.node
    assert f"op {name!r}" in str(err)
    assert err.cause is not None
    assert [n.grad for n in nodes] == before
    if name == "raising":
        assert isinstance(err.cause, RuntimeError) and "kaboom" in str(err)


@pytest.mark.parametrize("bad", [complex(2.0, 1.0), [2.0], (2.0,)], ids=["complex", "list",
                                                                         "tuple"])
def test_gradient_rule_returning_a_non_number(install_ops, ops_plugin, bad):
    np = pytest.importorskip("numpy")
    weird = np.array(bad) if isinstance(bad, list | tuple) else bad
    install_ops(("odd_grads", ops_plugin(
        OpDef("oddgrad", 1, lambda x: 2 * x, lambda x, out: (weird,)))))
    x = Value(1.0, label="x")
    y = x.oddgrad()
    with pytest.raises(GradRuleError) as info:
        y.backward()
    assert info.value.op == "oddgrad"
    assert x.grad == 0.0 and type(x.grad) is float


# --- source locations -----------------------------------------------------------------------------


def _line_after() -> int:
    return inspect.currentframe().f_back.f_lineno + 1


def _made_in_a_helper():
    return Value(1.0) + 1.0


def test_source_tracking_records_the_test_line():
    here = __file__
    with opgraph.track_source():
        line = _line_after()
        x = Value(1.0, label="x")
        line_y = _line_after()
        y = x * 2 + 1
        helper_value = _made_in_a_helper()
    assert x.source == (here, line)
    assert y.source == (here, line_y)
    assert y.inputs[0].source == (here, line_y)  # x * 2, made on the same line
    helper_line = inspect.getsourcelines(_made_in_a_helper)[1] + 1
    assert helper_value.source == (here, helper_line)
    # outside the block nothing is recorded
    z = x + 1
    assert z.source is None
    assert Value(0.0).source is None


def test_set_source_tracking_switch():
    previous = opgraph.set_source_tracking(True)
    try:
        line = _line_after()
        v = Value(2.0).tanh()
        assert v.source == (__file__, line)
    finally:
        assert opgraph.set_source_tracking(previous) is True
    assert Value(2.0).tanh().source is None


def test_track_source_restores_state_after_an_error():
    with pytest.raises(ForwardError), opgraph.track_source():
        Value(-1.0).log()
    assert Value(1.0).source is None


def test_gradcheck_reports_progress_per_leaf():
    leaves = [Value(float(i) / 10, label=f"x{i}") for i in range(5)]
    total = leaves[0]
    for v in leaves[1:]:
        total = total * v + v
    seen: list[tuple[int, int]] = []
    report = opgraph.gradcheck(total, progress=lambda done, of: seen.append((done, of)))
    assert report.ok
    assert seen == [(i, len(report.leaves)) for i in range(len(report.leaves))]


def test_values_from_before_the_first_graph_join_it():
    """Values made on the fast path (no Graph yet) are adopted by a graph made afterwards."""
    x = Value(3.0, label="x")
    y = x * 2.0
    assert y.graph is None
    g = Graph("late")
    w = g.leaf(0.5, label="w")
    z = (y * w).tanh()
    assert z.graph is g and y.graph is g and x.graph is g
    assert [v.id for v in (x, y, z)] == sorted(v.id for v in (x, y, z))
    assert len(g) == 6  # w, x, the constant 2.0, y, y * w, z
    z.backward()
    assert x.grad == pytest.approx(2.0 * 0.5 * (1 - math.tanh(3.0) ** 2))
    # ** and mixing graphs check ownership too
    assert (x ** 2).graph is g and (x ** w).graph is g
    other = Graph("other")
    with pytest.raises(GraphMismatchError, match="different graphs"):
        x * other.leaf(1.0)
    with pytest.raises(GraphMismatchError):
        x ** other.leaf(2.0)


def test_the_fast_path_comes_back_when_the_graphs_are_gone():
    g = Graph("transient")
    y = g.leaf(2.0) * 3.0
    assert y.graph is g
    del g, y
    gc.collect()  # a graph and its nodes form reference cycles
    assert (Value(1.0) + 2.0).graph is None


def test_an_unpickled_graph_still_adopts_new_nodes():
    g = Graph("saved")
    a = g.leaf(2.0, label="a")
    (a * a).label = "sq"
    data = pickle.dumps(g)
    del g, a
    gc.collect()
    loaded = pickle.loads(data)
    sq = loaded.node(1)
    cube = sq * loaded.node(0)
    assert cube.graph is loaded and cube.id == 2 and cube.data == 8.0
    twin = pickle.loads(data)
    with pytest.raises(GraphMismatchError):
        sq + twin.node(0)


def test_gc_pauses_overlapping_in_two_threads():
    """The collector stays paused until the last of two overlapping pauses ends, whichever
    thread took the first (a server's event loop and a worker)."""
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with gcpolicy.gc_paused():
            first_in.set()
            assert second_in.wait(10)
        first_out.set()

    assert gc.isenabled()
    thread = threading.Thread(target=first)
    thread.start()
    assert first_in.wait(10)
    with gcpolicy.gc_paused():
        second_in.set()
        assert first_out.wait(10)
        seen.append(gc.isenabled())  # the first pause ended: this one still holds
    thread.join(10)
    assert seen == [False] and gc.isenabled()


def test_gc_paused_is_public_and_restores_the_collector():
    assert gc.isenabled()
    with opgraph.gc_paused():
        assert not gc.isenabled()
        with opgraph.gc_paused():  # nested
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), opgraph.gc_paused():
        raise RuntimeError("inside")
    assert gc.isenabled()
