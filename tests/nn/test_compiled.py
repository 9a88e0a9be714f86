"""The compiled executor (opgraph.compiled) against the eager engine.

Forward values and every gradient must equal the eager engine's to 1e-12 relative: on the W3
moons graph of the benchmark, on random expressions over every default op, and after several
SGD steps. Then the paths that are easy to get wrong: an input used twice in one vectorised group
(``np.add.at``), ops without vector kernels (the scalar fallback), `set` then `forward`, and bad
input. Every test runs twice: with the rewrites (sums; the default) and with
``rewrite=False`` (the `rewrite` fixture); the rewrites' own cases are in
test_compiled_rewrite.py.
"""

from __future__ import annotations

import contextlib
import math
import random
import types
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import opgraph.compiled as compiled_module
from opgraph import (
    ForwardError,
    GradRuleError,
    GraphMismatchError,
    InputTypeError,
    NotALeafError,
    OpDef,
    Value,
    apply,
    default_registry,
    hookimpl,
    registry,
    topological_order,
)
from opgraph.compiled import CompiledGraph, SumGroup
from opgraph.core import recompute
from opgraph.datasets import make_moons
from opgraph.nn import MLP, l2, svm_loss

REL = 1e-12
DEFAULT_PLUGINS = {"arithmetic", "exponential", "activations"}
DEFAULT_OPS = {"add", "sub", "mul", "div", "neg", "pow", "pow_const", "exp", "log", "tanh",
               "sigmoid", "relu"}


def assert_close(actual, expected, what: str, rel: float = REL, scale=0.0) -> None:
    """Elementwise ``|a - e| <= rel * max(|a|, |e|, scale)``; zeros must be exact unless a
    ``scale`` is given."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (what, a.shape, e.shape)
    assert np.isfinite(e).all(), f"{what}: the eager numbers are not finite"
    bound = rel * np.maximum(np.maximum(np.abs(a), np.abs(e)), scale)
    bad = np.flatnonzero(np.abs(a - e) > bound)
    assert bad.size == 0, (f"{what}: {bad.size} of {a.size} differ by more than {rel} relative; "
                           f"first at {bad[0]}: {a[bad[0]]!r} against {e[bad[0]]!r}")


_rewriting = [True]


@pytest.fixture(autouse=True, params=[True, False], ids=["rewrite", "no-rewrite"])
def rewrite(request) -> Iterator[bool]:
    """Every test of this module runs with the rewrites (the default) and without them."""
    _rewriting[0] = request.param
    yield request.param
    _rewriting[0] = True


def compile_graph(root, **options) -> CompiledGraph:
    """`opgraph.compiled.compile_graph`, with or without the rewrites as the test runs."""
    options.setdefault("rewrite", _rewriting[0])
    return compiled_module.compile_graph(root, **options)


def eager_data(nodes) -> np.ndarray:
    return np.array([float(v.data) for v in nodes])


def eager_grads(root: Value, nodes) -> np.ndarray:
    """d root / d node for every node, by the eager engine (leaves' grads reset first)."""
    root.zero_grad()
    root.backward()
    return np.array([float(v.grad) for v in nodes])


def poison(compiled: CompiledGraph) -> None:
    """Overwrite every computed node's value, so that only `forward` can bring it back."""
    computed = [i for i, v in enumerate(compiled.nodes) if not v.is_leaf]
    compiled.values[computed] = np.nan


@contextlib.contextmanager
def kernels_everywhere() -> Iterator[None]:
    """Compile with every group that has vector kernels run by them, however small (by default
    groups under `SMALL_GROUP` nodes and sums under `SMALL_SUM` terms run the scalar rules), so
    the kernels get checked too."""
    default = compiled_module.SMALL_GROUP, compiled_module.SMALL_SUM
    compiled_module.SMALL_GROUP = compiled_module.SMALL_SUM = 1
    try:
        yield
    finally:
        compiled_module.SMALL_GROUP, compiled_module.SMALL_SUM = default


def compile_both_ways(root: Value) -> list[CompiledGraph]:
    """``root`` compiled as usual, and with `kernels_everywhere`."""
    with kernels_everywhere():
        everywhere = compile_graph(root)
    assert all(g.batched for g in everywhere.groups if g.vectorised)
    return [compile_graph(root), everywhere]


def check_against_eager(root: Value, compiled: CompiledGraph | None = None) -> CompiledGraph:
    """Compiled forward and backward equal the eager engine's on every node of ``root`` (the
    nodes a rewrite removed once `fill_removed` has given them their numbers)."""
    compiled = compiled or compile_graph(root)
    nodes = compiled.nodes
    poison(compiled)
    value = compiled.forward()
    assert_close(value, root.data, "root value")
    compiled.fill_removed()
    assert_close(compiled.values, eager_data(nodes), "forward values")
    grads = compiled.backward()
    compiled.fill_removed()
    assert_close(grads, eager_grads(root, nodes), "gradients")
    assert compiled.grad(root) == 1.0
    return compiled


# --- the W3 moons graph ---------------------------------------------------------------------------


def w3_graph(points: int = 100, seed: int = 1337):
    """The benchmark's W3 step graph (bench/workloads.py), built the same way."""
    random.seed(seed)
    model = MLP(2, [16, 16, 1])
    xs, ys = make_moons(points, noise=0.1, seed=0)
    inputs = [list(map(Value, row)) for row in xs]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * si).relu() for yi, si in zip(ys, scores, strict=True)]
    total = sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in model.parameters())
    return total, model


def test_w3_forward_and_every_gradient_equal_the_eager_engine() -> None:
    total, model = w3_graph()
    compiled = compile_graph(total)
    assert len(compiled) == 65_818  # the count for this graph
    assert all(g.vectorised for g in compiled.groups)
    check_against_eager(total, compiled)
    # (forward values are the eager engine's to the last bit, with the sums too)
    np.testing.assert_array_equal(compiled.values, eager_data(compiled.nodes))

    # new parameters through set(): the compiled passes against eager recomputation
    rng = np.random.default_rng(0)
    params = model.parameters()
    new = rng.uniform(-1, 1, len(params))
    compiled.set(params, new)
    for p, d in zip(params, new.tolist(), strict=True):
        p.data = d
    recompute(compiled.nodes)  # the eager engine's forward pass, node by node
    check_against_eager(total, compiled)


def test_sgd_steps_equal_the_same_steps_done_eagerly() -> None:
    steps, points = 6, 20
    lr = [1.0 - 0.9 * k / 100 for k in range(steps)]

    xs, ys = make_moons(points, noise=0.1, seed=2)
    eager_model = MLP(2, [16, 16, 1], seed=2)
    eager_losses = []
    for k in range(steps):  # eager: a new graph every step, as micrograd's demo does
        scores = [eager_model(list(x)) for x in xs]
        loss = svm_loss(scores, ys) + l2(eager_model.parameters(), 1e-4)
        eager_model.zero_grad()
        loss.backward()
        eager_losses.append(loss.data)
        for p in eager_model.parameters():
            p.data -= lr[k] * p.grad

    model = MLP(2, [16, 16, 1], seed=2)
    loss = svm_loss([model(list(x)) for x in xs], ys) + l2(model.parameters(), 1e-4)
    compiled = compile_graph(loss)
    params = compiled.indices(model.parameters())
    compiled_losses = []
    for k in range(steps):
        compiled_losses.append(compiled.forward())
        compiled.backward()
        compiled.sgd_step(lr[k], params)

    assert_close(compiled_losses, eager_losses, "losses")
    assert len(set(eager_losses)) == steps  # the parameters really moved
    assert_close(compiled.values[params], [p.data for p in eager_model.parameters()],
                 "parameters after the steps")
    # write_back puts the numbers into the Value objects
    compiled.write_back()
    assert_close([p.data for p in model.parameters()],
                 [p.data for p in eager_model.parameters()], "parameters written back")
    assert loss.grad == 1.0 and model.parameters()[0].grad == compiled.grad(
        model.parameters()[0])


def test_sgd_step_defaults_to_every_leaf() -> None:
    x, w = Value(2.0), Value(3.0)
    y = x * w
    compiled = compile_graph(y)
    compiled.forward()
    compiled.backward()
    compiled.sgd_step(0.5)
    assert compiled.data(x) == 2.0 - 0.5 * 3.0 and compiled.data(w) == 3.0 - 0.5 * 2.0
    compiled.sgd_step(0.1, [x])  # Values work as well as positions
    assert compiled.data(x) == 0.5 - 0.1 * 3.0 and compiled.data(w) == 2.0


# --- random expressions over every default op ---------------------------------------------------


def default_ops() -> list[OpDef]:
    ops = [op for op in default_registry() if op.plugin in DEFAULT_PLUGINS]
    assert {op.name for op in ops} >= DEFAULT_OPS
    return sorted(ops, key=lambda op: op.name not in DEFAULT_OPS)  # (new ones last)


EXPONENTS = [2, 3, 0.5, -1, 2.5, -1.5]


def build(ops: list[OpDef], leaves: list[float], steps) -> Value:
    """An expression from ``steps``: each applies an op to earlier nodes; an input whose data is
    outside the op's safe domain (``op.interval``: (-3, 3) for ops without one) is replaced by
    a new leaf at the middle of that domain, shifted. The root sums every step's output."""
    nodes = [Value(x) for x in leaves]
    outputs = []
    for op_index, picks, exponent_index in steps:
        op = ops[op_index % len(ops)]
        inputs = []
        for i, pick in enumerate(picks[:op.arity]):
            value = nodes[pick % len(nodes)]
            lo, hi = op.interval(i)
            if not lo <= value.data <= hi:
                value = Value(lo + (hi - lo) * (0.3 + 0.4 * (pick % 7) / 6))
            inputs.append(value)
        attrs = {"exponent": EXPONENTS[exponent_index]} if op.attrs else {}
        out = apply(op.name, *inputs, **attrs)
        nodes.append(out)
        outputs.append(out)
    root = outputs[0]
    for out in outputs[1:]:
        root = root + out
    return root


@np.errstate(over="ignore", divide="ignore", invalid="ignore")  # an infinite condition is fine
def conditioning(order: list[Value]) -> tuple[float, np.ndarray]:
    """``(worst condition number in the graph, gradient scales)``.

    Both engines round differently in the last bit (numpy's tanh and exp against the scalar
    rules, sums in another order), and an ill-conditioned node turns 1 ulp into much more than
    1e-12: ``x - tanh(x)`` near 0, or ``d/dy x**y = x**y log(x)`` at an ``x`` near 1 that was
    itself rounded. So the worst of:

    - a computed node's condition number ``M / |data|``, where ``M`` sums the magnitudes its
      value is made of (``|a| + |b|`` for ``a + b``, through every op by its local gradients);
    - how much an op's local gradients move, relative to themselves, when a computed input
      moves by one part in 1e12 (an exact leaf input moves nothing), times that input's own
      condition number.

    The gradient scale of a node sums the magnitudes of the contributions to its gradient,
    which the two engines add up in different orders.
    """
    position = {v: i for i, v in enumerate(order)}
    magnitude = np.zeros(len(order))
    cond = np.zeros(len(order))  # 0 for exact leaves
    worst = 1.0
    for i, v in enumerate(order):
        if v.is_leaf:
            magnitude[i] = abs(v.data)
            continue
        op, attrs, xs = v._opdef, v.attrs, [x.data for x in v.inputs]
        local = op.grad(*xs, v.data, **attrs)
        made_of = sum(abs(d) * magnitude[position[x]] for d, x in zip(local, v.inputs,
                                                                     strict=True))
        magnitude[i] = max(abs(v.data), made_of)
        if magnitude[i] > 0:
            cond[i] = max(1.0, np.inf if v.data == 0 else magnitude[i] / abs(v.data))
        for k, x in enumerate(v.inputs):
            if x.is_leaf:
                continue
            moved = list(xs)
            moved[k] = xs[k] * (1 + 1e-12) if xs[k] != 0 else 1e-300
            local_moved = op.grad(*moved, op.forward(*moved, **attrs), **attrs)
            for d, e in zip(local, local_moved, strict=True):
                if d != e:
                    change = abs(d - e) / max(abs(d), abs(e)) / 1e-12
                    cond[i] = max(cond[i], change * max(cond[position[x]], 1.0))
        worst = max(worst, cond[i])
    scale = np.zeros(len(order))
    scale[-1] = 1.0
    for i in range(len(order) - 1, -1, -1):
        v = order[i]
        if not v.is_leaf:
            local = v._opdef.grad(*[x.data for x in v.inputs], v.data, **v.attrs)
            for d, x in zip(local, v.inputs, strict=True):
                scale[position[x]] += scale[i] * abs(d)
    return worst, scale


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    leaves=st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=4),
    steps=st.lists(st.tuples(st.integers(0, 11), st.lists(st.integers(0, 50), min_size=2,
                                                           max_size=2),
                             st.integers(0, len(EXPONENTS) - 1)), min_size=1, max_size=30),
)
def test_random_expressions_equal_the_eager_engine(leaves, steps) -> None:
    root = build(default_ops(), leaves, steps)
    for compiled in compile_both_ways(root):  # scalar rules for small groups, then kernels
        worst, scale = conditioning(compiled.nodes)
        # safe expressions only: no node so ill-conditioned that 1 ulp becomes 1e-12 (x - x
        # and the like, where the engines may rightly differ in the last bits of a tiny result)
        assume(worst < 1e3)
        poison(compiled)
        assert_close(compiled.forward(), root.data, "root value")
        compiled.fill_removed()
        assert_close(compiled.values, eager_data(compiled.nodes), "forward values")
        # gradients to 1e-12 relative to the sum of the magnitudes that make them up
        grads = compiled.backward()
        compiled.fill_removed()
        assert_close(grads, eager_grads(root, compiled.nodes), "gradients", scale=scale)


def test_one_expression_with_every_default_op_and_attributes() -> None:
    ops = default_ops()
    # every op once over the first two leaves, then every op again over the previous results
    steps = [(i, [0, 1], i % len(EXPONENTS)) for i in range(len(ops))]
    steps += [(i, [i + 3, 2 * i + 5], (i + 1) % len(EXPONENTS)) for i in range(len(ops))]
    root = build(ops, [0.7, -1.3, 2.1], steps)
    for compiled in compile_both_ways(root):  # scalar rules for small groups, then kernels
        check_against_eager(root, compiled)
        assert {g.op.name for g in compiled.groups} >= DEFAULT_OPS
        exponents = {g.attrs["exponent"] for g in compiled.groups if g.op.name == "pow_const"}
        assert len(exponents) > 1  # one op with different attributes: separate groups


# --- repeated inputs: the np.add.at path ---------------------------------------------------------


def test_an_input_used_many_times_in_one_group_accumulates_every_use(rewrite) -> None:
    x, a, b, c = Value(1.5), Value(-2.0), Value(0.5), Value(3.0)
    # x*a, x*b, x*c, x*x: one generation, one mul group, x repeated in the first slot;
    # x*x has x in both slots; tanh(x) and exp(x) use it through unary groups too. With the
    # rewrites, the products are terms of one sum, whose first operands repeat x.
    root = x * a + x * b + x * c + x * x + x.tanh() * x.exp()
    for compiled in compile_both_ways(root):  # node by node, then np.add.at
        if rewrite:
            muls = [g for g in compiled.groups if isinstance(g, SumGroup) and g.a.size >= 4]
        else:
            muls = [g for g in compiled.groups if g.op.name == "mul" and len(g.out) >= 4]
        assert muls and not muls[0].unique[0], "expected a mul group with x repeated in a slot"
        check_against_eager(root, compiled)
        t, e = math.tanh(x.data), math.exp(x.data)
        expected = a.data + b.data + c.data + 2 * x.data + (1 - t * t) * e + t * e
        assert_close(compiled.grad(x), expected, "d root / d x, by hand")
        assert compiled.grad(a) == x.data and compiled.grad(b) == x.data


def test_the_w3_graph_uses_the_add_at_path() -> None:
    total, _ = w3_graph(points=10)
    compiled = compile_graph(total)
    assert any(g.batched and not unique for g in compiled.groups for unique in g.unique)
    assert any(not g.batched for g in compiled.groups)  # its serial tail: scalar rules
    check_against_eager(total, compiled)


# --- an op without vector kernels: the scalar fallback ------------------------------------------


def _softsign(x):
    return x / (1.0 + abs(x))


def _softsign_grad(x, out):
    return (1.0 / (1.0 + abs(x)) ** 2,)


def _lerp(a, b, t):
    return a + t * (b - a)


def _lerp_grad(a, b, out, t):
    return (1.0 - t, t)


def _hypot(a, b):
    return (a * a + b * b) ** 0.5


def _hypot_grad(a, b, out):
    return (a / out, b / out)


@contextlib.contextmanager
def ops_installed(name: str, *opdefs: OpDef) -> Iterator[None]:
    """A registry of the installed plugins plus a plugin ``name`` delivering ``opdefs``, made
    the default; the previous registry is restored afterwards."""

    @hookimpl
    def opgraph_register_ops():
        return list(opdefs)

    plugin = types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops)
    previous = registry.set_default_registry(registry.default_registry())
    registry.set_default_registry(registry.build_registry(plugins=[(name, plugin)]))
    try:
        yield
    finally:
        registry.set_default_registry(previous)


@pytest.fixture
def scalar_only_ops():
    """Ops without vector kernels, installed for the test."""
    with ops_installed(
        "compiled_test",
        OpDef("softsign", 1, _softsign, _softsign_grad, doc="x / (1 + |x|)"),
        OpDef("hypot_test", 2, _hypot, _hypot_grad, doc="sqrt(a^2 + b^2)",
              domain=((0.5, 3.0), (0.5, 3.0))),
        OpDef("lerp", 2, _lerp, _lerp_grad, attrs=("t",), sample_attrs={"t": 0.25},
              doc="a + t (b - a)"),
        OpDef("sqrt_test", 1, math.sqrt, lambda x, out: (0.5 / out,), doc="sqrt(x)",
              domain=((0.5, 3.0),)),
    ):
        yield


def test_ops_without_vector_kernels_fall_back_to_their_scalar_rules(scalar_only_ops) -> None:
    x, y, z = Value(0.8), Value(-1.7), Value(2.4)
    s = [x.softsign(), y.softsign(), z.softsign()]  # one scalar group of three
    h = [apply("hypot_test", x, z), apply("hypot_test", x, x)]  # x repeated: add.at, scalar
    m = [apply("lerp", y, z, t=0.25), apply("lerp", x, y, t=0.75)]  # attributes, two groups
    root = (s[0] * s[1] + s[2]).tanh() + h[0] * h[1] + m[0] * m[1] + x.softsign() * 2.0
    compiled = compile_graph(root)
    fallback = {g.op.name for g in compiled.groups if not g.vectorised}
    assert fallback == {"softsign", "hypot_test", "lerp"}
    assert any(not g.vectorised and not all(g.unique) for g in compiled.groups)
    assert {g.attrs["t"] for g in compiled.groups if g.op.name == "lerp"} == {0.25, 0.75}
    check_against_eager(root, compiled)

    compiled.set([x, z], [1.1, 0.6])
    x.data, z.data = 1.1, 0.6
    recompute(compiled.nodes)
    check_against_eager(root, compiled)


def test_a_scalar_rule_that_raises_is_a_forward_error_naming_the_node(scalar_only_ops) -> None:
    x = Value(4.0, label="x")
    r = x.sqrt_test()
    r.label = "r"
    compiled = compile_graph(r * 2.0 + x)
    assert compiled.forward() == 8.0
    compiled.set([x], [-1.0])
    with pytest.raises(ForwardError, match=r"op 'sqrt_test' failed at 'r' \(compiled\) on "
                                           r"inputs \[-1.0\]: forward rule raised ValueError"):
        compiled.forward()
    assert math.isnan(compiled.forward(check=False))


def test_the_registry_is_restored_after_the_plugin_test() -> None:
    assert "softsign" not in {op.name for op in default_registry()}
    assert not hasattr(Value, "softsign")


# --- set, then forward ---------------------------------------------------------------------------


def test_set_leaves_then_forward_equals_a_graph_built_with_those_values() -> None:
    def expression(a: Value, b: Value, c: Value) -> Value:
        return ((a * b).tanh() + (c ** 2).exp() / b - a.sigmoid()).relu() + (b - c).relu()

    a, b, c = Value(0.5), Value(1.5), Value(-0.25)
    root = expression(a, b, c)
    compiled = compile_graph(root)
    for new in ([1.25, 0.75, 0.5], np.array([-0.5, 2.0, 0.1]), (0.3, -0.9, 1.2)):
        compiled.set([a, b, c], new)
        value = compiled.forward()
        grads = compiled.backward()
        fresh = [Value(float(v)) for v in new]
        expected = expression(*fresh)
        expected.backward()
        assert_close(value, expected.data, "root after set")
        assert_close(grads[compiled.indices([a, b, c])], [v.grad for v in fresh],
                     "leaf gradients after set")
        assert compiled.data(a) == float(new[0])
    # the Value objects are untouched until write_back
    assert a.data == 0.5
    compiled.write_back()
    assert a.data == 0.3 and root.data == compiled.data(root)


def test_set_changes_nothing_when_it_refuses() -> None:
    a, b = Value(1.0), Value(2.0)
    root = a * b + a
    compiled = compile_graph(root)
    before = compiled.values.copy()
    with pytest.raises(NotALeafError, match="only leaves can be set"):
        compiled.set([a, root], [5.0, 6.0])
    with pytest.raises(ValueError, match="2 leaves need 2 numbers, got data of shape"):
        compiled.set([a, b], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(compiled.values, before)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [3.0, None, "x", [Value(1.0)]])
def test_compile_graph_refuses_what_is_not_a_value(bad) -> None:
    with pytest.raises(InputTypeError, match="compile_graph: expected a Value, got"):
        compile_graph(bad)


def test_bad_arguments_to_a_compiled_graph_get_clear_errors() -> None:
    a, b = Value(1.0, label="a"), Value(2.0, label="b")
    s = a * b
    s.label = "s"
    compiled = compile_graph(s + 1.0)
    other = Value(7.0, label="other")
    with pytest.raises(NotALeafError, match=r"'s' \(data 2.0\) is computed by op 'mul'"):
        compiled.set([s], [1.0])
    with pytest.raises(GraphMismatchError, match=r"'other' .* is not in this compiled graph"):
        compiled.set([other], [1.0])
    with pytest.raises(GraphMismatchError, match="not in this compiled graph"):
        compiled.data(other)
    for not_a_value in (1.0, "a", [a]):
        with pytest.raises(InputTypeError, match="expected a Value of this compiled graph"):
            compiled.set([not_a_value], [1.0])
        with pytest.raises(InputTypeError, match="expected a Value of this compiled graph"):
            compiled.grad(not_a_value)
    with pytest.raises(InputTypeError, match="expected a Value of this compiled graph"):
        compiled.sgd_step(0.1, [a, 2.0])
    with pytest.raises(InputTypeError, match="set: expected real numbers"):
        compiled.set([a], ["one"])


def test_a_leaf_root_and_a_graph_order_matching_the_engine() -> None:
    leaf = Value(4.0)
    compiled = compile_graph(leaf)
    assert compiled.forward() == 4.0
    assert compiled.backward().tolist() == [1.0]
    x = Value(0.3)
    root = (x * 2.0).tanh() * x
    assert compile_graph(root).nodes == topological_order(root)


# --- where the eager engine raises, so does the compiled graph -----------------------------------
# Each test runs both ways: small groups by the scalar rules (the default) and every group by
# the op's kernels, whose NaN and infinities `forward` then has to trace back to a rule.


@pytest.mark.parametrize(("bad", "op", "cause"), [
    (-2.0, "log", ValueError),  # log of a negative number
    (0.0, "div", ZeroDivisionError),  # 1 / 0
])
def test_forward_raises_where_the_eager_engine_raises(bad, op, cause) -> None:
    x = Value(1.5, label="x")
    q = (x.log() * (1 / x)).relu()  # relu turns the NaN into 0.0: the root looks fine
    q.label = "q"
    with pytest.raises(ForwardError):  # the eager engine, on the same input
        x2 = Value(bad)
        (x2.log() * (1 / x2)).relu()
    for compiled in compile_both_ways(q):
        assert compiled.forward() == pytest.approx(q.data)
        compiled.set([x], [bad])
        with pytest.raises(ForwardError) as info:
            compiled.forward()
        assert info.value.op == op and isinstance(info.value.cause, cause)
        assert f"inputs [{'1.0, ' if op == 'div' else ''}{bad}]" in str(info.value)
        assert compiled.forward(check=False) == 0.0  # unchecked: NaN and inf flow on


def test_the_failing_node_is_named_by_label_or_position() -> None:
    x = Value(6.0, label="x")
    root = (x - 5.0).log(), (x - 5.0).log()
    labelled = root[0]
    labelled.label = "lg"
    for compiled in compile_both_ways(labelled + root[1]):
        compiled.forward()
        compiled.set([x], [1.0])
        with pytest.raises(ForwardError, match=r"op 'log' failed at 'lg' \(compiled\) on "
                                               r"inputs \[-4.0\]"):
            compiled.forward()
    for compiled in compile_both_ways(root[1] * 2.0):
        compiled.set([x], [1.0])
        position = compiled.index(root[1])
        with pytest.raises(ForwardError, match=f"the unlabelled value at position {position}"):
            compiled.forward()


def test_the_first_failure_in_topological_order_is_the_one_named() -> None:
    """As in the eager engine, which stops at the first node that fails."""
    x, y = Value(6.0), Value(2.0)
    first = (x - 5.0).log()
    first.label = "first"
    second = y.log()
    second.label = "second"
    root = first + second
    for compiled in compile_both_ways(root):
        assert compiled.index(first) < compiled.index(second)
        compiled.set([x, y], [1.0, -1.0])
        with pytest.raises(ForwardError, match="'first'"):
            compiled.forward()


def test_unchecked_values_are_the_same_both_ways() -> None:
    x = Value(1.0)
    root = (1 / x).relu() + 0.0  # 1/0: infinity by numpy, where the scalar rule raises
    values = []
    for compiled in compile_both_ways(root):
        compiled.set([x], [0.0])
        values.append(compiled.forward(check=False))
    assert values == [math.inf, math.inf]


def test_infinities_the_rules_themselves_give_are_results() -> None:
    """exp past 709 and log of 0 are infinite in the eager engine too, without an error."""
    x = Value(1.0)
    eager = Value(800.0)
    assert (eager.exp() + (eager - 1.0).log()).data == math.inf
    for compiled in compile_both_ways(x.exp() + (x - 1.0).log()):
        compiled.set([x], [800.0])
        assert compiled.forward() == math.inf
        compiled.set([x], [1.0])
        assert compiled.forward() == -math.inf


@pytest.fixture
def odd_ops():
    """Ops whose scalar forward rules return what is not a real number on some inputs."""
    with ops_installed(
        "odd_ops",
        OpDef("csqrt", 1, lambda x: x ** 0.5, lambda x, out: (0.5 / out,),
              vforward=np.sqrt, vgrad=lambda x, out: (0.5 / out,)),  # complex below 0
        OpDef("bool_step", 1, lambda x: True if x > 2 else 0.0, lambda x, out: (0.0,)),
        OpDef("strop", 1, lambda x: str(x) if x > 2 else x, lambda x, out: (1.0,)),
    ):
        yield


@pytest.mark.parametrize(("name", "returned"), [("csqrt", "complex"), ("bool_step", "bool"),
                                                ("strop", "str")])
def test_a_rule_returning_a_non_number_is_a_forward_error(odd_ops, name, returned) -> None:
    """Built where the rule gives a number, then run where it gives a complex number (where
    the kernel gives NaN), a bool or a str (which numpy would quietly take as 1.0 or 4.0)."""
    good, bad = (4.0, -4.0) if name == "csqrt" else (1.0, 4.0)
    with pytest.raises(ForwardError, match="not a real number"):  # the eager engine
        apply(name, Value(bad))
    x = Value(good)
    node = apply(name, x)
    for compiled in compile_both_ways(node * 1.0):
        compiled.set([x], [bad])
        with pytest.raises(ForwardError, match=f"returned {returned} .*not a real number"):
            compiled.forward()


def test_backward_follows_numpy_where_a_gradient_rule_fails() -> None:
    """d sqrt(x) / dx at 0: the eager rule divides by zero; the compiled gradient is infinite,
    in small groups as in big ones."""
    x = Value(1.0)
    root = x ** 0.5
    x0 = Value(0.0)
    with pytest.raises(GradRuleError):
        (x0 ** 0.5).backward()
    for compiled in compile_both_ways(root):
        compiled.set([x], [0.0])
        assert compiled.forward() == 0.0
        assert compiled.backward()[compiled.index(x)] == math.inf


def test_a_failing_gradient_rule_without_kernels_is_a_grad_rule_error(scalar_only_ops) -> None:
    x = Value(4.0, label="x")
    r = x.sqrt_test()
    r.label = "r"
    compiled = compile_graph(r * 2.0)
    compiled.forward()
    compiled.set([x], [0.0])  # sqrt(0) = 0; its gradient rule 0.5 / out divides by zero
    assert compiled.forward() == 0.0
    with pytest.raises(GradRuleError, match=r"op 'sqrt_test' gradient rule failed at 'r' "
                                            r"\(compiled\) on inputs \[0.0\]: "
                                            r"ZeroDivisionError"):
        compiled.backward()


def test_unchecked_nan_flows_into_the_gradients_both_ways() -> None:
    """x ** 2.5 at x = -2: NaN forward (unchecked) and NaN gradient, in small groups too."""
    x = Value(2.0)
    for compiled in compile_both_ways(x ** 2.5 * 1.0):
        compiled.set([x], [-2.0])
        assert math.isnan(compiled.forward(check=False))
        assert math.isnan(compiled.backward()[compiled.index(x)])


def test_the_kernel_gets_the_attributes_in_small_groups_too() -> None:
    x = Value(2.0)
    values = []
    for compiled in compile_both_ways(x ** -1.0 + 0.0):
        compiled.set([x], [0.0])
        values.append(compiled.forward(check=False))
    assert values == [math.inf, math.inf]


@pytest.fixture
def loose_ops():
    """Ops without kernels whose rules return what the eager engine takes, though not floats:
    ints, bools, numpy scalars, generators; and ones that return too much or too little."""

    def ints(a, b, out):
        return (1, 1)  # a + b

    def bools(x, out):
        return (x > 0,)  # relu

    def generator(a, b, out):
        return (d for d in (b, a))  # a * b

    with ops_installed(
        "loose_ops",
        OpDef("add_i", 2, lambda a, b: a + b, ints),
        OpDef("relu_b", 1, lambda x: x if x > 0 else 0.0, bools),
        OpDef("mul_g", 2, lambda a, b: a * b, generator),
        OpDef("mul_np", 2, lambda a, b: np.float64(a * b),
              lambda a, b, out: (np.float64(b), np.float64(a))),
        OpDef("too_many", 1, lambda x: 2 * x, lambda x, out: (2.0, 0.0)),
        OpDef("too_big", 1, lambda x: 10 ** 400 if x > 1 else x, lambda x, out: (1.0,)),
    ):
        yield


def test_partials_the_eager_engine_takes_are_taken(loose_ops) -> None:
    x, y = Value(1.5), Value(-0.5)
    root = apply("mul_np", apply("mul_g", apply("add_i", x, y), apply("relu_b", x)), y)
    compiled = check_against_eager(root)
    assert compiled.grad(x) == pytest.approx(x.grad) and compiled.grad(y) != 0.0


def test_a_rule_with_the_wrong_number_of_partials_is_a_grad_rule_error(loose_ops) -> None:
    x = Value(1.0, label="x")
    t = apply("too_many", x)
    t.label = "t"
    with pytest.raises(GradRuleError):  # the eager engine
        t.backward()
    compiled = compile_graph(t * 1.0)
    compiled.forward()
    with pytest.raises(GradRuleError, match=r"op 'too_many' gradient rule failed at 't'"):
        compiled.backward()


def test_a_result_too_big_for_a_float_is_a_forward_error(loose_ops) -> None:
    x = Value(1.0)
    compiled = compile_graph(apply("too_big", x) * 1.0)
    compiled.set([x], [2.0])
    with pytest.raises(ForwardError, match=r"returned int 1000.*too big for a float"):
        compiled.forward()
    assert math.isnan(compiled.forward(check=False))  # no kernel: NaN


def test_a_vector_kernel_that_raises_names_the_op() -> None:
    """A plugin's broken kernel is an error naming the op and the kernel, both ways: a big
    group calls it at once; a small group calls it where the scalar rule fails."""
    def broken(x):
        raise RuntimeError("kernel bug")

    with ops_installed("broken_ops", OpDef("bsqrt", 1, lambda x: x ** 0.5,
                                           lambda x, out: (0.5 / out,), vforward=broken,
                                           vgrad=lambda x, out: (0.5 / out,))):
        x = Value(4.0)
        small, everywhere = compile_both_ways(x.bsqrt() * 1.0)
        assert small.forward() == 2.0  # the rule works: the kernel is not asked
        small.set([x], [-4.0])  # the rule gives a complex number: the kernel is asked
        with pytest.raises(ForwardError, match=r"op 'bsqrt': its vector kernel vforward "
                                               r"raised RuntimeError: kernel bug \(compiled, "
                                               r"over 1 node\)"):
            small.forward()
        with pytest.raises(ForwardError, match=r"op 'bsqrt': its vector kernel vforward "
                                               r"raised RuntimeError: kernel bug"):
            everywhere.forward()
