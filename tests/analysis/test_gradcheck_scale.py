"""gradcheck at scale: a seeded sample of the leaves, a chosen few, progress for an ETA, and
numeric gradients that match a plain recomputation of the whole graph for each leaf."""

from __future__ import annotations

import types

import pytest
from scale_graphs import moons_step

import opgraph
from opgraph import Graph, InputTypeError, NodeNotFoundError, OpDef, Value, core, hookimpl, registry
from opgraph.gradcheck import gradcheck


@pytest.fixture(scope="module")
def moons():
    graph, loss, _, _ = moons_step(track=False)
    return graph, loss


def plain_numeric(root: Value, leaf: Value, eps: float = 1e-6) -> float:
    """d root / d leaf by central differences, each side a forward pass over the whole graph
    (what gradcheck did for every leaf before it re-evaluated only what a leaf affects)."""
    order = core.topological_order(root)
    up = core.evaluate(order, {leaf: leaf.data + eps})[root]
    down = core.evaluate(order, {leaf: leaf.data - eps})[root]
    return (up - down) / (2 * eps)


@pytest.mark.slow
def test_a_sample_of_the_moons_leaves_matches_a_plain_recomputation(moons) -> None:
    graph, loss = moons
    grads = [v.grad for v in graph.nodes]
    report = gradcheck(loss, sample=12, seed=3)
    assert report.ok
    assert len(report.leaves) == 12 and report.total_leaves == 741
    assert (report.chosen, report.sample, report.seed) == ("sample", 12, 3)
    for checked in report.leaves:
        leaf = graph.nodes[checked.id]
        assert leaf.is_leaf
        assert checked.numeric == plain_numeric(loss, leaf)  # the same arithmetic, exactly
        assert checked.analytic == leaf.grad
    assert [v.grad for v in graph.nodes] == grads  # every grad left as it was


@pytest.mark.slow
def test_the_sample_is_seeded_and_in_graph_order(moons) -> None:
    _, loss = moons
    first = [c.id for c in gradcheck(loss, sample=20).leaves]
    assert first == [c.id for c in gradcheck(loss, sample=20, seed=0).leaves]
    other = [c.id for c in gradcheck(loss, sample=20, seed=1).leaves]
    assert other != first and len(set(other)) == 20
    order = [v.id for v in core.topological_order(loss) if v.is_leaf]
    assert first == [i for i in order if i in set(first)]


def test_a_sample_of_at_least_every_leaf_checks_them_all() -> None:
    g = Graph("small")
    x, w = g.leaf(2.0, "x"), g.leaf(-3.0, "w")
    y = (x * w).tanh()
    report = gradcheck(y, sample=5)
    assert [c.label for c in report.leaves] == ["x", "w"]
    assert (report.chosen, report.sample, report.seed) == ("all", None, None)
    assert report.header() == f"gradcheck of {core.describe(y)}: ok"


def test_given_leaves_by_id_or_value_and_a_sample_among_them(moons) -> None:
    graph, loss = moons
    w = graph.find("layer1.neuron3.w7")[0]
    b = graph.find("layer2.neuron0.b")[0]
    report = gradcheck(loss, leaves=[b.id, w])
    assert sorted(c.id for c in report.leaves) == sorted([w.id, b.id])
    assert report.chosen == "given" and report.total_leaves == 741
    assert "(2 of 741 leaves, as given)" in report.header()
    params = [v.id for v in graph.nodes if v.is_leaf and v.label.startswith("layer1.")]
    picked = gradcheck(loss, leaves=params, sample=4, seed=7)
    assert len(picked.leaves) == 4 and {c.id for c in picked.leaves} <= set(params)
    assert "(4 of 741 leaves, a random sample drawn with seed 7)" in picked.header()


def test_leaves_that_cannot_be_checked_are_refused_by_name(moons) -> None:
    graph, loss = moons
    computed = graph.find("layer0.neuron0.act")[0]
    with pytest.raises(InputTypeError, match=r"computed by op 'relu', not a leaf"):
        gradcheck(loss, leaves=[computed.id])
    with pytest.raises(NodeNotFoundError, match="no node 10000000"):
        gradcheck(loss, leaves=[10_000_000])
    with pytest.raises(InputTypeError, match="leaves is empty"):
        gradcheck(loss, leaves=[])
    with pytest.raises(InputTypeError, match="a list of ids or Values, got int 3"):
        gradcheck(loss, leaves=3)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(InputTypeError, match="sample must be a positive int"):
            gradcheck(loss, sample=bad)
    with pytest.raises(InputTypeError, match="seed must be an int"):
        gradcheck(loss, sample=2, seed="x")
    # a leaf the root does not depend on
    g = Graph("two")
    x, spare = g.leaf(1.0, "x"), g.leaf(2.0, "spare")
    y = x * 3.0
    with pytest.raises(InputTypeError, match=r"does not depend on leaf 'spare' id 1"):
        gradcheck(y, leaves=[spare.id])
    # ids need a graph
    free = Value(2.0, label="a")
    with pytest.raises(InputTypeError, match=r"is an id, but the root .* is in no graph"):
        gradcheck(free.tanh(), leaves=[0])
    assert gradcheck(free.tanh(), leaves=[free]).ok


def test_progress_counts_the_leaves_checked(moons) -> None:
    _, loss = moons
    seen: list[tuple[int, int]] = []
    report = gradcheck(loss, sample=6, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 6) for i in range(6)] and len(report.leaves) == 6


@pytest.fixture
def badsquare():
    """Op ``badsquare`` (x * x) whose gradient rule is wrong (x, not 2x), installed for the
    test (the default registry restored after)."""
    module = types.ModuleType("gradcheck_scale_badops")

    @hookimpl
    def opgraph_register_ops():
        return [OpDef("badsquare", 1, forward=lambda x: x * x, grad=lambda x, out: (x,),
                      doc="x * x, with a wrong gradient rule")]

    module.opgraph_register_ops = opgraph_register_ops
    previous = registry.set_default_registry(registry.default_registry())
    registry.set_default_registry(registry.build_registry(plugins=[("badops", module)]))
    try:
        yield
    finally:
        registry.set_default_registry(previous)


def test_a_wrong_gradient_is_found_and_the_listing_is_capped(badsquare) -> None:
    """An accumulation over 100 shared leaves, 30 of them squared by the wrong rule: those
    disagree. The listing puts them first, each kind cut to the limit with its count."""
    g = Graph("acc")
    ws = [g.leaf(0.01 * (i + 1), f"w{i}") for i in range(100)]
    x = g.leaf(0.5, "x")
    acc = g.leaf(0.0, "acc0")
    for i in range(2_000):
        w = ws[i % 100]
        term = g.apply("badsquare", [w]) if i % 100 < 30 else w
        acc = acc + term * x
    report = gradcheck(acc)
    assert not report.ok and len(report.leaves) == 102
    assert {c.label for c in report.failed} == {f"w{i}" for i in range(30)}
    lines = report.lines(5)
    assert lines[0].startswith("gradcheck of ") and "FAILED" in lines[0]
    bad = [line for line in lines if line.startswith("  BAD ")]
    good = [line for line in lines if line.startswith("  ok  ")]
    assert len(bad) == 5 and len(good) == 5
    assert "  ... and 25 more leaves that disagree" in lines
    assert any(line.startswith("  ... and 67 more leaves that agree (largest difference ")
               for line in lines)
    ops = [line for line in lines if line.startswith("  op 'badsquare'")]
    assert len(ops) == 5 and len(report.bad_ops) == 600
    assert "  ... and 595 more op nodes whose rule disagrees" in lines
    assert report.lines() == str(report).splitlines()
    assert len(report.lines()) == 1 + 102 + 600
    sampled = gradcheck(acc, sample=10, seed=5)
    assert {c.label for c in sampled.failed} == {
        c.label for c in sampled.leaves if c.label in {f"w{i}" for i in range(30)}}


def test_the_default_checks_every_leaf_as_before() -> None:
    g = Graph("neuron")
    x1, w1, b = g.leaf(2.0, "x1"), g.leaf(-3.0, "w1"), g.leaf(6.88, "b")
    o = (x1 * w1 + b).tanh()
    report = opgraph.gradcheck(o)
    assert [c.label for c in report.leaves] == ["x1", "w1", "b"]
    assert report.chosen == "all" and report.total_leaves == 3
    for checked in report.leaves:
        assert checked.numeric == plain_numeric(o, g.find(checked.label)[0])
    assert str(report).splitlines()[0] == f"gradcheck of {core.describe(o)}: ok"
