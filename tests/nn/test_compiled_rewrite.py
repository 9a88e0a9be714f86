"""The compiled executor's rewrite: chains of adds as n-ary sums, products fused into them.

What it must keep: forward values equal to the eager engine's to the last bit where no vector
kernel of another op runs (a sum adds its terms in the eager order; numpy's tanh or exp may
differ from the scalar rule in the last bit, so batched groups are held to 1e-12 relative),
gradients within 1e-12 relative, the removed nodes' data and grad on
`write_back` (as of the last forward and backward, also after `sgd_step`), and the errors, on
graphs of any shape: chains broken by a shared node, both input orders, trees, plugin ops
around and inside, sums of many lengths in one generation, the sign of a zero sum.
"""

from __future__ import annotations

import contextlib
import math
import operator
import random
from collections.abc import Iterator

import numpy as np
import pytest
from test_compiled import assert_close, eager_data, eager_grads, ops_installed, w3_graph

import opgraph.compiled as compiled_module
from opgraph import ForwardError, OpDef, Value, apply
from opgraph.compiled import CompiledGraph, SumGroup, compile_graph
from opgraph.compiled.rewrite import ADD, MUL, OTHER, op_kind
from opgraph.compiled.steps import ScalarRun, sequential_mode
from opgraph.core import recompute


@contextlib.contextmanager
def thresholds(group: int, sums: int) -> Iterator[None]:
    saved = compiled_module.SMALL_GROUP, compiled_module.SMALL_SUM
    compiled_module.SMALL_GROUP, compiled_module.SMALL_SUM = group, sums
    try:
        yield
    finally:
        compiled_module.SMALL_GROUP, compiled_module.SMALL_SUM = saved


def compiled_three_ways(root: Value) -> list[CompiledGraph]:
    """With the rewrites (sums batched where big enough), with every sum batched, with every
    sum run term by term, and without the rewrites."""
    with thresholds(1, 1):
        batched = compile_graph(root)
    with thresholds(10**9, 10**9):
        scalar = compile_graph(root)
    return [compile_graph(root), batched, scalar, compile_graph(root, rewrite=False)]


def check(root: Value) -> list[CompiledGraph]:
    """Every way of compiling ``root`` gives the eager data and gradients (1e-12) on every
    node, the removed ones too, after `fill_removed` and after `write_back`; the data to the
    last bit where every op runs by its scalar rule."""
    ways = compiled_three_ways(root)
    data = eager_data(ways[0].nodes)
    results = []
    for way, compiled in enumerate(ways):
        exact = np.testing.assert_array_equal if way == 2 else (
            lambda actual, expected: assert_close(actual, expected, "data"))
        nodes = compiled.nodes
        grads = eager_grads(root, nodes)
        computed = [i for i, v in enumerate(nodes) if not v.is_leaf]
        compiled.values[computed] = np.nan  # only forward and fill_removed bring them back
        assert compiled.forward() == root.data
        compiled.backward()
        compiled.fill_removed()
        exact(compiled.values, data)
        assert_close(compiled.grads, grads, "gradients")
        for v in nodes:
            v.data, v.grad = math.nan, math.nan
        compiled.write_back()
        exact([v.data for v in nodes], data)
        assert_close([v.grad for v in nodes], grads, "gradients written back")
        results.append(compiled)
    return results


def sums_of(compiled: CompiledGraph) -> list[SumGroup]:
    return [g for g in compiled.groups if isinstance(g, SumGroup)]


def removed(compiled: CompiledGraph) -> int:
    return sum(compiled._removed)


# --- which nodes the rewrite takes --------------------------------------------------------------


def test_a_neuron_is_one_sum_of_products() -> None:
    x = [Value(v) for v in (0.5, -1.25, 2.0, 0.75)]
    w = [Value(v) for v in (0.3, -0.7, 1.1, -0.2)]
    b = Value(0.1)
    act = b
    for wi, xi in zip(w, x, strict=True):
        act = act + wi * xi
    out = act.relu()
    default, _, _, plain = check(out)
    (s,) = sums_of(default)
    assert s.a.shape == (5, 1) and s.a[:, 0].tolist() == [default.index(b)] + [
        default.index(v) for v in w]  # the bias, then each w_i * x_i in order
    assert removed(default) == 3 + 4  # three inner adds, four products
    assert not sums_of(plain) and removed(plain) == 0


def test_a_shared_partial_sum_ends_a_chain() -> None:
    """A partial sum used twice is the end of one sum and a term of the next."""
    a, b, c, d = (Value(v) for v in (1.5, -0.25, 3.0, 0.125))
    shared = a + b + c  # used by `left` and by `right`
    left = shared + d
    right = shared * 2.0
    root = (left + right).tanh()
    default = check(root)[0]
    assert not default._removed[default.index(shared)]
    # a + b; left, the first term of the root's sum; right, a product fused into it
    assert [bool(default._removed[default.index(v)]) for v in (shared.inputs[0], left, right)
            ] == [True] * 3 and removed(default) == 3


@pytest.mark.parametrize("shape", ["left", "right", "tree", "mixed"])
def test_every_order_of_additions_is_kept(shape) -> None:
    rng = random.Random(3)
    terms = [Value(rng.uniform(-1, 1)) * Value(rng.uniform(-1, 1)) for _ in range(9)]
    terms += [Value(1e16), Value(1.0), Value(-1e16)]  # the order of addition shows in the sum
    if shape == "left":
        root = terms[0]
        for t in terms[1:]:
            root = root + t
    elif shape == "right":
        root = terms[-1]
        for t in reversed(terms[:-1]):
            root = t + root
    elif shape == "tree":
        level = terms
        while len(level) > 1:
            level = [level[i] + level[i + 1] if i + 1 < len(level) else level[i]
                     for i in range(0, len(level), 2)]
        root = level[0]
    else:
        root = (terms[0] + terms[1]) + ((terms[2] + (terms[3] + terms[4])) + terms[5])
        for t in terms[6:]:
            root = t + root if len(t.inputs) else root + t
    check(root * 1.0)


def test_an_input_used_twice_and_a_product_used_twice_stay_nodes() -> None:
    x, y = Value(0.75), Value(-1.5)
    p = x * y  # used twice: not fused
    root = (p + p) + (x + x) + p * 3.0 + y
    default = check(root)[0]
    assert not default._removed[default.index(p)]


def test_plugin_ops_around_and_inside_sums() -> None:
    """Terms and operands computed by an op without kernels, and sums feeding it."""
    with ops_installed("rewrite_test", OpDef("softsign", 1, lambda x: x / (1.0 + abs(x)),
                                             lambda x, out: (1.0 / (1.0 + abs(x)) ** 2,))):
        xs = [Value(v) for v in (0.5, -2.0, 1.25, 3.0, -0.75)]
        total = Value(0.25)
        for i, x in enumerate(xs):
            total = total + x.softsign() * xs[-1 - i] + x.softsign()
        root = (total.softsign() + total * 0.5).softsign()
        check(root)


def test_ops_like_add_and_mul_that_are_not_are_left_alone() -> None:
    """The rewrite recognises add and mul by their rules, not by their names."""
    add_like = OpDef("add_weighted", 2, operator.add, lambda a, b, out: (1.0, 2.0))
    mul_like = OpDef("mul_like", 2, operator.mul, lambda a, b, out: (a, b))
    sub = OpDef("sub2", 2, operator.sub, lambda a, b, out: (1.0, -1.0))
    assert [op_kind(op) for op in (add_like, mul_like, sub, None)] == [OTHER] * 4
    with ops_installed("like_ops", add_like):
        x, y, z = Value(1.0), Value(2.0), Value(3.0)
        root = apply("add_weighted", apply("add_weighted", x, y), z)
        compiled = compile_graph(root)
        assert not sums_of(compiled) and removed(compiled) == 0
        compiled.forward()
        compiled.backward()
        assert compiled.grad(y) == 2.0  # its own rule, not add's
    assert op_kind((Value(1.0) + 1.0).opdef) == ADD and op_kind((Value(1.0) * 1.0).opdef) == MUL


def test_sums_of_many_lengths_in_one_generation() -> None:
    """Sums of leaves and products of leaves all fall in the first generation: tables of about
    one length each, the rest of the terms padded."""
    rng = random.Random(5)
    outs = []
    for length in [1, 2, 3, 3, 4, 7, 8, 30, 31, 200] * 3:
        s = Value(rng.uniform(-1, 1))
        for _ in range(length):
            s = s + Value(rng.uniform(-1, 1)) * Value(rng.uniform(-1, 1))
        outs.append(s.tanh())
    root = outs[0]
    for o in outs[1:]:
        root = root * 0.5 + o  # (a chain of its own, with products of non-leaves)
    batched = check(root)[1]
    lengths = sorted(g.a.shape[0] for g in sums_of(batched) if g.out.size > 1)
    assert len(lengths) > 3 and 201 in lengths  # several tables
    for group in sums_of(batched):
        padding = (group.a == batched._pad).sum()
        assert padding <= group.a.size / 4


def test_the_sign_of_a_zero_sum_is_the_eager_one() -> None:
    zeros = [Value(-0.0) for _ in range(40)]
    root = zeros[0]
    for z in zeros[1:]:
        root = root + z * 1.0
    eager = math.copysign(1.0, root.data)
    assert eager == -1.0
    for compiled in compiled_three_ways(root):
        assert math.copysign(1.0, compiled.forward()) == eager


def test_the_w3_graph_runs_as_a_few_tables() -> None:
    total, _ = w3_graph()
    compiled = compile_graph(total)
    shapes = sorted(g.a.shape for g in sums_of(compiled) if g.batched)
    assert (17, 1600) in shapes and (3, 1600) in shapes and (17, 100) in shapes
    assert len(compiled._plan) < 15  # (347 groups without the rewrite)
    assert removed(compiled) > 55_000
    compiled.forward()
    np.testing.assert_array_equal(compiled.values[~np.frombuffer(compiled._removed, np.uint8)
                                                  .astype(bool)],
                                  eager_data(np.array(compiled.nodes, dtype=object)[
                                      ~np.frombuffer(compiled._removed, np.uint8).astype(bool)]))


# --- the removed nodes --------------------------------------------------------------------------


@pytest.mark.parametrize("way", [0, 1, 2])
def test_removed_nodes_get_the_data_of_the_last_forward_after_sgd_steps(way) -> None:
    """After forward, backward and sgd_step, write_back gives every node the data of that
    forward (the leaves their new data), as the kept nodes have it."""
    rng = random.Random(7)
    w = [Value(rng.uniform(-1, 1)) for _ in range(6)]
    xs = [[Value(rng.uniform(-1, 1)) for _ in range(6)] for _ in range(12)]
    scores = []
    for x in xs:
        s = w[0] * 0.0
        for wi, xi in zip(w, x, strict=True):
            s = s + wi * xi
        scores.append(s.relu())
    loss = scores[0]
    for s in scores[1:]:
        loss = loss + s
    compiled = compiled_three_ways(loss)[way]
    params = compiled.indices(w)
    for _ in range(3):
        compiled.forward()
        compiled.backward()
        before = compiled.values[params].tolist()
        compiled.sgd_step(0.05, params)
    after = compiled.values[params].copy()
    compiled.write_back()
    assert [p.data for p in w] == after.tolist()
    for p, d in zip(w, before, strict=True):  # the eager graph at the last forward's leaves
        p.data = d
    nodes = compiled.nodes
    written = [v.data for v in nodes]
    recompute(nodes)
    computed = [i for i, v in enumerate(nodes) if not v.is_leaf]
    assert [written[i] for i in computed] == [nodes[i].data for i in computed]


def test_data_and_grad_of_a_removed_node() -> None:
    a, b, c = Value(2.0), Value(-3.0), Value(0.5)
    inner = a * b  # fused
    partial = inner + c  # an inner add
    root = (partial + a).tanh()
    compiled = compile_graph(root)
    assert compiled._removed[compiled.index(inner)] and compiled._removed[
        compiled.index(partial)]
    compiled.forward()
    assert compiled.data(inner) == -6.0 and compiled.data(partial) == -5.5
    compiled.backward()
    assert compiled.grad(partial) == compiled.grad(inner) == pytest.approx(
        1 - math.tanh(-3.5) ** 2, rel=1e-15)
    compiled.set([a], [1.0])  # data is as of the last forward until the next
    assert compiled.data(inner) == -6.0
    compiled.forward()
    assert compiled.data(inner) == -3.0 and compiled.data(partial) == -2.5


# --- errors -------------------------------------------------------------------------------------


def test_a_failing_term_of_a_sum_is_named() -> None:
    x = Value(10.0, label="x")
    logs = [(x - float(k)).log() for k in range(5)]
    for k, lg in enumerate(logs):
        lg.label = f"log{k}"
    total = Value(0.0)
    for lg in logs:
        total = total + lg * 2.0
    for compiled in compiled_three_ways(total):
        compiled.forward()
        compiled.set([x], [1.5])  # log(1.5 - 2), log(1.5 - 3) ... fail: the first is named
        with pytest.raises(ForwardError, match=r"op 'log' failed at 'log2' \(compiled\)"):
            compiled.forward()
        assert math.isnan(compiled.forward(check=False))


def test_overflowing_sums_are_results() -> None:
    """A sum overflowing to infinity is no error: float addition does not raise."""
    x = Value(1e308)
    root = x + x * 1.0 + x
    for compiled in compiled_three_ways(root):
        assert compiled.forward() == math.inf == root.data


# --- the reduction's order ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 2), (17, 1600), (338, 1), (5, 3), (64, 7)])
def test_each_way_of_adding_rows_adds_them_in_order(shape, monkeypatch) -> None:
    """numpy's reduce down axis 0, the running sum of one column and the row loop all give
    what adding the rows one after the other gives."""
    rng = np.random.default_rng(0)
    group = SumGroup(op=None, out=np.zeros(shape[1], dtype=np.intp),  # type: ignore[arg-type]
                     a=np.zeros(shape, dtype=np.intp), b=None,
                     chain=np.full(shape, -1), products=np.full(shape, -1))
    group.P[...] = rng.standard_normal(shape) * 10.0 ** rng.integers(-8, 8, shape)
    expected = group.P[0].copy()
    for row in group.P[1:]:
        expected = expected + row
    modes = ["accumulate"] if shape[1] == 1 else ["reduce", "rows"]
    assert sequential_mode(shape) == modes[0]
    for mode in modes:
        group.mode = mode
        np.testing.assert_array_equal(group.sums(), expected)


def test_no_rewrite_means_no_sums_and_scalar_runs_merge() -> None:
    x = Value(0.3)
    for _ in range(50):
        x = (x * 0.5 + 0.1).tanh()  # serial: every node in a run
    default, plain = compile_graph(x), compile_graph(x, rewrite=False)
    assert len(default._plan) == len(plain._plan) == 1
    assert isinstance(plain._plan[0], ScalarRun) and not sums_of(plain)
    assert len(default._plan[0].code) == 100 and len(plain._plan[0].code) == 150
    check(x)
