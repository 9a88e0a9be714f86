"""Gradients of random expressions: against central finite differences (every default op) and
against micrograd 0.1.0 (the ops micrograd has), on the same graph built both ways.

Expressions are generated as trees together with their values, so each op only ever sees inputs
inside its domain: a log's or a power's base is made positive (``t**2 + 0.5``) when it is not, a
denominator kept away from 0, a relu's input away from its kink, an exp's input below 4, and any
node that grows past 20 in size is scaled back down by a constant. The reference values and
numeric derivatives come from plain ``math`` formulas, not from opgraph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from micrograd.engine import Value as MValue

import opgraph
from opgraph import Graph, Value

DEFAULT_OPS = ("add", "sub", "mul", "div", "neg", "pow", "pow_const", "exp", "log", "tanh",
               "sigmoid", "relu")
MICROGRAD_OPS = ("add", "sub", "mul", "div", "neg", "pow_const", "relu")
UNARY = {"neg", "exp", "log", "tanh", "sigmoid", "relu", "pow_const"}
CONSTANTS = (0.5, 2.0, -1.5, 3.0, -0.25)
EXPONENTS = (2, 3, 0, 1, -1, -2, 0.5, 1.5, -0.5, 2.5)
LIMIT = 20.0

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
PER_OP_SETTINGS = settings(max_examples=30, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow])


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


FLOAT_RULES: dict[str, Callable[..., float]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "neg": lambda a: -a,
    "pow": lambda a, b: a**b,
    "exp": math.exp,
    "log": math.log,
    "tanh": math.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda a: max(a, 0.0),
}

# A tree is ("leaf", i), ("const", c), ("pow_const", k, child) or (op, *children).


def evaluate(tree, leaves: Sequence[float]) -> float:
    """The tree's value with plain floats and math (an independent reference)."""
    kind = tree[0]
    if kind == "leaf":
        return leaves[tree[1]]
    if kind == "const":
        return tree[1]
    if kind == "pow_const":
        return evaluate(tree[2], leaves) ** tree[1]
    args = [evaluate(child, leaves) for child in tree[1:]]
    if kind in FLOAT_RULES:
        return FLOAT_RULES[kind](*args)
    op = opgraph.lookup_op(kind)  # a default op this file has no formula for
    return op.forward(*args, **op.sample_attrs)


def build(tree, leaves: Sequence, value_type) -> object:
    """The same tree as a graph of ``value_type`` (opgraph's or micrograd's Value), through the
    operators and methods a user would write; constants stay Python numbers."""
    kind = tree[0]
    if kind == "leaf":
        return leaves[tree[1]]
    if kind == "const":
        return tree[1]
    if kind == "pow_const":
        return build(tree[2], leaves, value_type) ** tree[1]
    args = [build(child, leaves, value_type) for child in tree[1:]]
    if kind == "add":
        return args[0] + args[1]
    if kind == "sub":
        return args[0] - args[1]
    if kind == "mul":
        return args[0] * args[1]
    if kind == "div":
        return args[0] / args[1]
    if kind == "pow":
        return args[0] ** args[1]
    if kind == "neg":
        return -args[0]
    if kind in ("exp", "log", "tanh", "sigmoid", "relu"):
        return getattr(args[0], kind)()
    op = opgraph.lookup_op(kind)
    return opgraph.apply(kind, *args, **op.sample_attrs)


def ops_in(tree) -> set[str]:
    kind = tree[0]
    if kind in ("leaf", "const"):
        return set()
    children = tree[2:] if kind == "pow_const" else tree[1:]
    return {kind}.union(*(ops_in(c) for c in children))


@st.composite
def expressions(draw, ops: Sequence[str] = DEFAULT_OPS, root: str | None = None,
                max_depth: int = 4):
    """``(tree, leaf values)``: a random expression over ``ops`` with ``root`` as its last op."""
    n_leaves = draw(st.integers(1, 4))
    leaves = draw(st.lists(st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False),
                           min_size=n_leaves, max_size=n_leaves))

    def value(tree):
        return evaluate(tree, leaves)

    def positive(tree):
        """The tree itself when it is safely positive, else tree**2 + 0.5."""
        return tree if value(tree) > 0.1 else ("add", ("pow_const", 2, tree), ("const", 0.5))

    def squash(tree):
        v = value(tree)
        return ("div", tree, ("const", abs(v) / 2.0)) if abs(v) > LIMIT else tree

    def subtree(depth):
        if depth <= 0 or draw(st.integers(0, 4)) == 0:
            return ("leaf", draw(st.integers(0, n_leaves - 1)))
        return node(draw(st.sampled_from(ops)), depth - 1)

    def operand(depth):
        """A subtree, or now and then a constant."""
        if draw(st.integers(0, 4)) == 0:
            return ("const", draw(st.sampled_from(CONSTANTS)))
        return subtree(depth)

    def node(op, depth):
        if op in UNARY:
            a = subtree(depth)
            if op == "pow_const":
                k = draw(st.sampled_from(EXPONENTS))
                if not (isinstance(k, int) and k >= 0):
                    a = positive(a)
                return squash(("pow_const", k, a))
            if op == "log":
                a = positive(a)
            elif op == "exp" and value(a) > 4.0:
                a = ("tanh", a)
            elif op == "relu" and abs(value(a)) < 0.1:
                a = ("add", a, ("const", 0.5))
            return squash((op, a))
        if op in FLOAT_RULES:  # binary
            left, right = operand(depth), operand(depth)
            if left[0] == "const" and right[0] == "const":
                right = subtree(depth)
            if op == "div" and abs(value(right)) < 0.1:
                right = positive(right)
            if op == "pow":
                if right[0] == "const":  # x ** number is pow_const; pow needs a Value exponent
                    right = subtree(depth)
                left = ("const", 2.0) if left[0] == "const" else positive(left)
                if abs(value(right)) > 2.0:
                    right = ("tanh", right)
            return squash((op, left, right))
        # a default op without a formula here: squeeze each input into its sampling domain
        opdef = opgraph.lookup_op(op)
        inputs = []
        for i in range(opdef.arity):
            lo, hi = opdef.interval(i)
            lo, hi = lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo)
            inputs.append(("add", ("mul", ("sigmoid", subtree(depth)), ("const", hi - lo)),
                           ("const", lo)))
        return squash((op, *inputs))

    tree = node(root if root is not None else draw(st.sampled_from(ops)), max_depth)
    return tree, leaves


def numeric_gradients(tree, leaves: Sequence[float], h: float = 1e-6) -> list[float]:
    grads = []
    for i in range(len(leaves)):
        up, down = list(leaves), list(leaves)
        up[i] += h
        down[i] -= h
        grads.append((evaluate(tree, up) - evaluate(tree, down)) / (2 * h))
    return grads


def close(a: float, b: float, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    return abs(a - b) <= atol + rtol * max(abs(a), abs(b))


def check_against_finite_differences(tree, leaves: Sequence[float]) -> None:
    xs = [Value(x, label=f"x{i}") for i, x in enumerate(leaves)]
    root = build(tree, xs, Value)
    if not isinstance(root, Value):  # a bare constant cannot happen, a bare leaf can
        raise AssertionError(f"expression {tree!r} built no Value")
    expected = evaluate(tree, leaves)
    assert close(root.data, expected, rtol=1e-12, atol=1e-12), (root.data, expected, tree)

    root.backward()
    analytic = [x.grad for x in xs]
    numeric = numeric_gradients(tree, leaves)
    for i, (a, n) in enumerate(zip(analytic, numeric, strict=True)):
        assert close(a, n), f"leaf x{i}: analytic {a!r}, numeric {n!r}; tree {tree!r}"

    # opgraph's own gradcheck agrees, and leaves every grad as it was
    before = [v.grad for v in opgraph.topological_order(root)]
    report = opgraph.gradcheck(root, rtol=1e-5, atol=1e-6)
    assert report.ok, f"{report}\ntree {tree!r}"
    assert [v.grad for v in opgraph.topological_order(root)] == before

    # the same nodes held in a Graph give the same gradients through Graph.backward
    g = Graph.capture(root, "random")
    g.backward(root.id)
    assert [x.grad for x in xs] == analytic


@given(expressions())
@SETTINGS
def test_random_expressions_match_finite_differences(case):
    tree, leaves = case
    check_against_finite_differences(tree, leaves)


def _default_op_names() -> list[str]:
    return sorted(opgraph.default_registry().names())


def test_every_default_op_is_exercised():
    assert set(DEFAULT_OPS) <= set(_default_op_names())


@pytest.mark.parametrize("op", _default_op_names())
def test_random_expressions_rooted_at_each_op(op):
    _rooted_check(_default_op_names(), op)()


# --- against micrograd ----------------------------------------------------------------------------


def check_against_micrograd(tree, leaves: Sequence[float]) -> None:
    ours = [Value(x) for x in leaves]
    theirs = [MValue(x) for x in leaves]
    root = build(tree, ours, Value)
    mroot = build(tree, theirs, MValue)
    assert isinstance(root, Value) and isinstance(mroot, MValue)
    assert close(root.data, mroot.data, rtol=1e-9, atol=1e-12), (root.data, mroot.data, tree)
    root.backward()
    try:
        mroot.backward()
    except (ZeroDivisionError, OverflowError):
        reject()  # micrograd's x**k rule fails at x == 0 for k == 0; opgraph's did not
    for i, (a, m) in enumerate(zip(ours, theirs, strict=True)):
        assert close(a.grad, m.grad, rtol=1e-9, atol=1e-12), (
            f"leaf {i}: opgraph {a.grad!r}, micrograd {m.grad!r}; tree {tree!r}")


@given(expressions(ops=MICROGRAD_OPS))
@SETTINGS
def test_random_expressions_match_micrograd(case):
    tree, leaves = case
    check_against_micrograd(tree, leaves)


@pytest.mark.parametrize("op", MICROGRAD_OPS)
def test_micrograd_expressions_rooted_at_each_op(op):
    @given(expressions(ops=MICROGRAD_OPS, root=op, max_depth=3))
    @PER_OP_SETTINGS
    def run(case):
        tree, leaves = case
        assert op in ops_in(tree)
        check_against_micrograd(tree, leaves)

    run()


def test_micrograd_seed_neuron_with_relu():
    """The seed's neuron, with micrograd's one activation, built both ways."""
    def neuron(V):
        x1, x2, w1, w2 = V(2.0), V(0.0), V(-3.0), V(1.0)
        b = V(6.8813735870195432)
        o = (x1 * w1 + x2 * w2 + b).relu()
        return o, [x1, x2, w1, w2, b]

    o, ours = neuron(Value)
    mo, theirs = neuron(MValue)
    o.backward()
    mo.backward()
    assert o.data == mo.data
    assert [v.grad for v in ours] == [float(v.grad) for v in theirs]


def test_reused_values_match_micrograd():
    def graph(V):
        a = V(-4.0)
        b = V(2.0)
        c = a + b
        d = a * b + b**3
        c += c + 1
        c += 1 + c + (-a)
        d += d * 2 + (b + a).relu()
        d += 3 * d + (b - a).relu()
        e = c - d
        f = e**2
        g = f / 2.0
        g += 10.0 / f
        return g, a, b

    # micrograd's own README example: g = 24.7041, dg/da = 138.8338, dg/db = 645.5773
    g, a, b = graph(Value)
    mg, ma, mb = graph(MValue)
    g.backward()
    mg.backward()
    assert g.data == pytest.approx(mg.data, rel=1e-12)
    assert f"{g.data:.4f}" == "24.7041"
    assert a.grad == pytest.approx(ma.grad, rel=1e-12)
    assert b.grad == pytest.approx(mb.grad, rel=1e-12)
    assert f"{a.grad:.4f}" == "138.8338" and f"{b.grad:.4f}" == "645.5773"


def test_random_expressions_with_plugin_ops(install_ops, ops_plugin):
    """Ops from a third-party plugin go through the same checks, inside their domains."""
    softplus = opgraph.OpDef(
        "softplus", 1, lambda x: math.log1p(math.exp(-abs(x))) + max(x, 0.0),
        lambda x, out: (_sigmoid(x),), doc="log(1 + e ** x)")
    hypot = opgraph.OpDef(
        "hypot", 2, math.hypot, lambda a, b, out: (a / out, b / out),
        domain=((0.5, 3.0), (-3.0, -0.5)), doc="sqrt(a**2 + b**2)")
    install_ops(("extra", ops_plugin(softplus, hypot)))
    ops = [*DEFAULT_OPS, "softplus", "hypot"]
    for op in ("softplus", "hypot"):
        _rooted_check(ops, op)()


def _rooted_check(ops: Sequence[str], op: str):
    @given(expressions(ops=ops, root=op, max_depth=3))
    @PER_OP_SETTINGS
    def run(case):
        tree, leaves = case
        assert op in ops_in(tree)
        check_against_finite_differences(tree, leaves)

    return run
