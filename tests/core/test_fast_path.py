"""The fast path (`opgraph.core.fast`) against the reference path, on random graphs.

Every graph is built twice from the same recipe: once through `Value`'s operators and methods
(the fast path), once through `core.apply_op` (the reference path: check, `rules.run_forward`,
`new_node`). Both must give the same nodes with identical data, the same errors where an op
fails, and, through `Value.backward` and `core.backward_over` (fast) and
`core.passes.backward_over` (the reference), identical gradients, or the same `GradRuleError`
with every gradient left as it was.
"""

from __future__ import annotations

import gc
import math
import pickle
import threading
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opgraph import GradRuleError, Graph, OpDef, OpgraphError, Value, core, gcpolicy, hookimpl
from opgraph.core import passes

BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
METHODS = ("tanh", "exp", "log", "relu", "sigmoid")
EXPONENTS = (2, 3, 0, -1, 0.5, 1.5, -0.5)
CONSTANTS = (0.0, 0.5, 2.0, -1.5, 3)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _lerp() -> OpDef:  # three inputs: the general sweep
    return OpDef("lerp3", 3, lambda a, b, t: a + (b - a) * t,
                 lambda a, b, t, out: (1.0 - t, t, b - a))


def _scale() -> OpDef:  # one input and an attribute: the general sweep too
    return OpDef("scale", 1, lambda x, k: k * x, lambda x, out, k: (k,), attrs=("k",),
                 sample_attrs={"k": 2.0})


def _fragile() -> OpDef:  # a gradient rule that fails on some inputs
    def grad(x, out):
        if x < 0:
            raise ValueError("no gradient below 0")
        return (1.0,)

    return OpDef("fragile", 1, lambda x: x, grad)


@pytest.fixture
def extra_ops(install_ops):
    @hookimpl
    def opgraph_register_ops():
        return [_lerp(), _scale(), _fragile()]

    install_ops(("extra", types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops)))


# A recipe: leaf data, then steps (kind, op, input picks, constant); picks index the nodes made
# so far (counted from the end, so that recent nodes, and so deep graphs, come up often).
steps = st.tuples(
    st.sampled_from(["binary", "rbinary", "pow", "pow_const", "neg", "method", "lerp3",
                     "scale", "fragile"]),
    st.sampled_from(sorted(BINARY) + list(METHODS)),
    st.lists(st.integers(0, 6), min_size=3, max_size=3),
    st.sampled_from(CONSTANTS + EXPONENTS),
)
recipes = st.tuples(
    st.lists(st.one_of(st.floats(-3.0, 3.0, allow_nan=False), st.integers(-3, 3)),
             min_size=1, max_size=4),  # (ints stay ints through + - *, as in Python)
    st.lists(steps, min_size=1, max_size=25),
)


def _fast(kind, name, args, constant):
    """One step through the operators and methods."""
    a, b, c = args
    if kind == "binary":
        return {"add": a.__add__, "sub": a.__sub__, "mul": a.__mul__, "div": a.__truediv__}[
            name](b)
    if kind == "rbinary":  # a number on the left: the reflected operator
        return {"add": lambda: constant + a, "sub": lambda: constant - a,
                "mul": lambda: constant * a, "div": lambda: constant / a}[name]()
    if kind == "pow":
        return a ** b
    if kind == "pow_const":
        return a ** constant
    if kind == "neg":
        return -a
    if kind == "method":
        return getattr(a, name)()
    if kind == "lerp3":
        return a.lerp3(b, c)
    if kind == "scale":
        return a.scale(k=constant)
    return a.fragile()


def _reference(kind, name, args, constant):
    """The same step through `core.apply_op`, numbers made into leaves first."""
    a, b, c = args
    op = core.lookup
    if kind == "binary":
        return core.apply_op(op(name), [a, b])
    if kind == "rbinary":
        return core.apply_op(op(name), [Value(constant), a])
    if kind == "pow":
        return core.apply_op(op("pow"), [a, b])
    if kind == "pow_const":
        return core.apply_op(op("pow_const"), [a], {"exponent": constant})
    if kind == "neg":
        return core.apply_op(op("neg"), [a])
    if kind == "method":
        return core.apply_op(op(name), [a])
    if kind == "lerp3":
        return core.apply_op(op("lerp3"), [a, b, c])
    if kind == "scale":
        return core.apply_op(op("scale"), [a], {"k": constant})
    return core.apply_op(op("fragile"), [a])


def _outcome(build, kind, name, args, constant):
    try:
        return build(kind, name, args, constant), None
    except OpgraphError as exc:
        return None, exc


def _same_number(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN here


def build_both(data, recipe):
    """The recipe built both ways: two lists of nodes, made in the same order."""
    fast = [Value(x) for x in data]
    ref = [Value(x) for x in data]
    for kind, name, picks, constant in recipe:
        if kind in ("binary", "rbinary") and name not in BINARY:
            name = "add"
        elif kind == "method" and name not in METHODS:
            name = "tanh"
        args_fast = [fast[-1 - p % len(fast)] for p in picks]
        args_ref = [ref[-1 - p % len(ref)] for p in picks]
        node_fast, err_fast = _outcome(_fast, kind, name, args_fast, constant)
        node_ref, err_ref = _outcome(_reference, kind, name, args_ref, constant)
        if err_fast or err_ref:  # an op failed: the same way both ways, and nothing was made
            assert type(err_fast) is type(err_ref), (err_fast, err_ref)
            assert str(err_fast) == str(err_ref)
            continue
        assert _same_number(node_fast.data, node_ref.data), (kind, name)
        assert type(node_fast.data) is type(node_ref.data)
        assert node_fast._op == node_ref._op and node_fast.attrs == node_ref.attrs
        fast.append(node_fast)
        ref.append(node_ref)
    return fast, ref


def check_backward_both_ways(fast, ref):
    root_fast, root_ref = fast[-1], ref[-1]
    order_ref = core.topological_order(root_ref)
    made_fast = {id(v): i for i, v in enumerate(fast)}
    made_ref = {id(v): i for i, v in enumerate(ref)}
    # the same nodes in the same order (constants made by the operators are not in `fast`)
    assert [made_fast.get(id(v)) for v in core.topological_order(root_fast)] == [
        made_ref.get(id(v)) for v in order_ref]
    fast_passes = (root_fast.backward,  # twice: the leaves accumulate, the same way both ways
                   lambda: core.backward_over(core.topological_order(root_fast), root_fast))
    for fast_pass in fast_passes:
        err_fast = err_ref = None
        try:
            fast_pass()
        except GradRuleError as exc:
            err_fast = exc
        try:
            passes.backward_over(order_ref, root_ref)
        except GradRuleError as exc:
            err_ref = exc
        assert type(err_fast) is type(err_ref), (err_fast, err_ref)
        if err_fast is not None:
            assert (err_fast.op, err_fast.node) == (err_ref.op, err_ref.node)
        for i, (a, b) in enumerate(zip(fast, ref, strict=True)):
            assert _same_number(a.grad, b.grad), (i, a.grad, b.grad)
            assert type(a.grad) is type(b.grad)


@given(recipes)
@SETTINGS
def test_random_graphs_forward_and_backward_agree(extra_ops, case):
    data, recipe = case
    fast, ref = build_both(data, recipe)
    check_backward_both_ways(fast, ref)


@given(recipes)
@SETTINGS
def test_random_graphs_agree_with_a_graph_alive_elsewhere(extra_ops, case):
    """A live `Graph` elsewhere changes nothing for free values: they stay free and fast."""
    elsewhere = Graph("elsewhere")
    elsewhere.leaf(1.0) * 2.0
    data, recipe = case
    fast, ref = build_both(data, recipe)
    assert all(v.graph is None for v in fast + ref)
    check_backward_both_ways(fast, ref)


def test_the_graph_path_agrees_with_both(extra_ops):
    """The operators over a graph's values take the reference path and join the graph."""
    g = Graph("held")
    x, y = g.leaf(0.7, "x"), g.leaf(-1.2, "y")
    free_x, free_y = Value(0.7), Value(-1.2)
    held = ((x * y + 2.0).tanh() ** 2).lerp3(x, y) / (1.0 - x.sigmoid())
    free = ((free_x * free_y + 2.0).tanh() ** 2).lerp3(free_x, free_y) / (1.0 - free_x.sigmoid())
    assert held.graph is g and free.graph is None and held.data == free.data
    g.backward(held)
    free.backward()
    assert (x.grad, y.grad) == (free_x.grad, free_y.grad)


def test_a_deep_chain_agrees_and_pauses_the_collector_only_meanwhile():
    depth = 3 * gcpolicy.DEEP
    x_fast, x_ref = Value(0.3), Value(0.3)
    w = 0.9
    fast, ref = x_fast, x_ref
    for _ in range(depth):
        fast = (fast * w).tanh()
        ref = core.apply_op(core.lookup("tanh"), [core.apply_op(core.lookup("mul"),
                                                                [ref, Value(w)])])
    assert fast.data == ref.data
    seen: list[bool] = []
    real = gcpolicy.pause

    def pause() -> None:
        seen.append(gc.isenabled())
        real()

    gcpolicy.pause = pause  # type: ignore[assignment]
    try:
        fast.backward()
    finally:
        gcpolicy.pause = real  # type: ignore[assignment]
    passes.backward_over(core.topological_order(ref), ref)
    assert x_fast.grad == x_ref.grad and math.isfinite(x_fast.grad)
    assert seen == [True]  # one pause, taken while the collector ran
    assert gc.isenabled() and gcpolicy.pauses() == 0


def test_a_shallow_backward_leaves_the_collector_alone():
    x = Value(2.0)
    y = (x * x + 1.0).tanh()
    with gcpolicy.gc_paused():
        y.backward()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_deep_backward_ending_inside_another_threads_pause_keeps_it_paused(install_ops):
    """The interference the old engine had: a backward pass that paused the collector on its
    own turned it back on when it ended, even while another thread's `gc_paused` block began
    meanwhile. Both now count on the one pause counter."""
    in_sweep, paused_elsewhere = threading.Event(), threading.Event()

    def slow_grad(x, out):
        in_sweep.set()
        assert paused_elsewhere.wait(10)
        return (1.0,)

    @hookimpl
    def opgraph_register_ops():
        return [OpDef("waiting", 1, lambda x: x, slow_grad)]

    install_ops(("waiting", types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops)))
    y = Value(1.0).waiting()
    for _ in range(2 * gcpolicy.DEEP):
        y = y + 1.0
    thread = threading.Thread(target=y.backward)
    thread.start()
    try:
        assert in_sweep.wait(10)  # the pass holds a pause now, and waits in a gradient rule
        with gcpolicy.gc_paused():
            paused_elsewhere.set()
            thread.join(10)  # the pass ends inside this block
            assert not gc.isenabled()
    finally:
        paused_elsewhere.set()
        thread.join(10)
    assert gc.isenabled() and gcpolicy.pauses() == 0


def test_a_value_joining_a_graph_takes_the_reference_path_from_then_on():
    """Joining a graph makes a value a `GraphValue` (how the operators tell, at no cost), and
    leaving it by a rollback makes it a plain `Value` again."""
    x = Value(2.0, label="x")
    free = x * 3.0
    assert type(free) is Value and free.graph is None
    g = Graph("g")
    mark = g.checkpoint()
    w = g.leaf(0.5)
    for made in (x * w, w * x, 2.0 * w, w - 1.0, w.tanh(), -w, w ** 2, 2 ** w):
        assert made.graph is g and type(made) is core.GraphValue
    assert type(x) is core.GraphValue and x.id is not None  # adopted with the first of them
    assert (free * 2.0).graph is None  # a free value stays free
    g.rollback(mark)
    assert type(x) is Value and x.graph is None and x.id is None and x.label == "x"
    assert (x * 2.0).graph is None
    assert pickle.loads(pickle.dumps(g)).nodes == []
    kept = Graph.capture(x * x, "kept")
    assert all(type(v) is core.GraphValue for v in kept)
    copy = pickle.loads(pickle.dumps(kept))
    assert [type(v) for v in copy] == [core.GraphValue] * 2
    assert (copy.node(1) * 2.0).graph is copy
