"""The linear-time analyses (opgraph.linear, opgraph.structure) give what the networkx ones give,
on random graphs; the report's limit and counts; the analyses at the scale of a long
accumulation chain."""

from __future__ import annotations

import random
import types

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scale_graphs import accumulation as big_accumulation
from scale_graphs import moons_step

import opgraph.analysis as analysis
from opgraph import Graph
from opgraph.analysis import analyze, to_networkx
from opgraph.structure import OptionError, build_structure, structure


def random_graph(seed: int, size: int, leaves: int) -> Graph:
    """Leaves, then ops over random earlier nodes (an input used twice now and then)."""
    rng = random.Random(seed)
    g = Graph("random")
    for i in range(leaves):
        g.leaf(rng.uniform(-2, 2), f"x{i}")
    for _ in range(size):
        a = g.nodes[rng.randrange(len(g))]
        kind = rng.random()
        if kind < 0.3:
            a.tanh()
        elif kind < 0.4:
            a * a
        else:
            b = g.nodes[rng.randrange(len(g))]
            (a + b) if kind < 0.7 else (a * b)
    return g


def networkx_report(graph: Graph, monkeypatch, **options) -> analysis.AnalysisReport:
    """The report networkx's algorithms give (the path analyze takes for a graph whose ids
    are not a topological order)."""
    real = analysis.structure

    def not_topological(g):
        return types.SimpleNamespace(topological=False, wrapped=real(g))

    with monkeypatch.context() as m:
        m.setattr(analysis, "structure", not_topological)
        return analyze(graph, **options)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 60), st.integers(1, 8), st.data())
def test_linear_analyses_equal_networkx(seed, size, leaves, data) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        g = random_graph(seed, size, leaves)
        n = len(g)
        options = {
            "root": data.draw(st.one_of(st.none(), st.integers(0, n - 1))),
            "node": data.draw(st.one_of(st.none(), st.integers(0, n - 1))),
            "leaf": data.draw(st.one_of(st.none(), st.sampled_from([v.id for v in g.leaves]))),
        }
        fast = analyze(g, **options).to_dict()
        slow = networkx_report(g, monkeypatch, **options).to_dict()
    path, slow_path = fast.pop("critical_path"), slow.pop("critical_path")
    assert fast == slow
    # several paths may be longest: this one is one of them
    assert len(path) == len(slow_path)
    assert nx.is_path(to_networkx(g), path)
    assert g.nodes[path[0]].inputs == ()


def test_the_critical_path_rule() -> None:
    """The first node of the highest level, then each step to the first input a level below."""
    g = Graph("two")
    a, b = g.leaf(1.0, "a"), g.leaf(2.0, "b")
    p, q = a.tanh(), b.tanh()
    s = q + p  # both inputs on level 1: the first, q, is taken
    t = p.exp().exp()  # level 3 but later than nothing higher: the highest level wins
    assert analyze(g).critical_path == [a.id, p.id, p.id + 3, t.id]
    g2 = Graph("tie")
    a, b = g2.leaf(1.0), g2.leaf(2.0)
    tb = b.tanh()
    s = tb + a.tanh()  # level 2, and first: it ends the path; its first input is tb
    a.exp() + b.exp()  # level 2 too, later
    assert analyze(g2).critical_path == [b.id, tb.id, s.id]


def test_structure_arrays_and_cache(hand) -> None:
    s = structure(hand)
    assert s.n == 9 and s.topological
    assert s.inputs.tolist() == [1, 3, 2, 4, 0, 5, 2, 7]
    assert s.indptr.tolist() == [0, 0, 0, 0, 1, 3, 4, 6, 6, 8]
    assert [s.op_names[c] if c >= 0 else None for c in s.op_code] == [
        None, None, None, "exp", "mul", "tanh", "add", None, "mul"]
    assert s.levels().tolist() == [0, 0, 0, 1, 2, 3, 4, 0, 1]
    use_ptr, users = s.users()
    assert [users[use_ptr[v]:use_ptr[v + 1]].tolist() for v in range(9)] == [
        [6], [3], [4, 8], [4], [5], [6], [], [8], []]
    assert structure(hand) is s  # cached while nothing is added
    hand.nodes[0].exp()
    assert structure(hand) is not s and structure(hand).n == 10


def test_rollback_drops_the_structure_cache(hand) -> None:
    mark = hand.checkpoint()
    hand.nodes[0].tanh()
    assert structure(hand).inputs[-1] == 0
    hand.rollback(mark)
    hand.nodes[7].exp()  # the same node count as before the rollback, another structure
    assert structure(hand).inputs[-1] == 7


def test_a_graph_whose_ids_are_not_topological_is_flagged() -> None:
    g = Graph("loop")
    x = g.leaf(0.3, "x")
    y = x.tanh()
    z = y.exp()
    y._inputs = (z,)
    assert not build_structure(g.nodes).topological


def test_limit_cuts_lists_and_counts_give_their_lengths() -> None:
    g = Graph("wide")
    xs = [g.leaf(0.01 * i, f"x{i}") for i in range(30)]
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    for x in xs[:5]:
        g.leaf(1.0, "spare")  # unused leaves: 5 diagnostics
        x.tanh()  # 5 unused outputs
    total = total * 2.0  # the last output: the root
    full = analyze(g)
    cut = analyze(g, limit=3)
    assert full.counts == cut.counts
    assert cut.counts["leaves"] == 36 and cut.counts["unused"] == 10
    assert cut.counts["critical_path"] == len(full.critical_path) == 31
    assert cut.counts["diagnostics"] == 5 and cut.counts["diagnostic_groups"] == 1
    for key in ("leaves", "outputs", "critical_path", "unused", "dominators", "diagnostics",
                "diagnostic_groups"):
        assert getattr(cut, key) == getattr(full, key)[:3], key
    assert cut.widths == full.widths and cut.width == full.width  # never cut
    (group,) = full.diagnostic_groups
    assert (group["code"], group["count"], group["site"]) == ("unused-leaf", 5, None)
    assert analyze(g, limit=0).leaves == []
    with pytest.raises(OptionError, match="limit must be a non-negative int"):
        analyze(g, limit=-1)


def test_limit_cuts_influences_and_affects(hand) -> None:
    report = analyze(hand, node=6, leaf=2, limit=1)
    assert report.influences == {"6": [0]} and report.affects == {"2": [4]}
    assert report.counts["influences.6"] == 3 and report.counts["affects.2"] == 4


def test_progress_moves_by_steps(hand) -> None:
    calls = []
    analyze(hand, node=5, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 8) for i in range(1, 9)]  # 6 analyses, the influences, diagnostics
    calls.clear()
    analyze(hand, diagnostics=False, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]


def accumulation(terms: int, shared: int) -> tuple[Graph, int]:
    """``acc = acc + w[i % shared] * x``: a long chain over shared leaves."""
    g = Graph("acc")
    ws = [g.leaf(0.001 * i, f"w{i}") for i in range(shared)]
    x = g.leaf(0.5, "x")
    acc = g.leaf(0.0, "acc0")
    for i in range(terms):
        acc = acc + ws[i % shared] * x
    return g, acc.id


def test_a_long_accumulation_chain_with_shared_leaves() -> None:
    """The shape that made networkx's dominators quadratic, at 60,000 nodes."""
    g, root = accumulation(30_000, 1_000)
    report = analyze(g, diagnostics=False)
    assert report.nodes == 61_002 and report.root == root
    # w0 -> w0 * x -> acc1 -> ... -> acc30000: the products are level 1, acc_k level k + 1
    assert report.depth == 30_002 and len(report.critical_path) == 30_002
    assert report.critical_path[-1] == root
    assert report.dominators == []  # x feeds every product: only the root is on every path
    assert report.unused == []
    mid = g.nodes[root - 2 * 15_000]  # acc15000: the last 1,000 terms' w are used below it too
    below = analyze(g, root=mid, diagnostics=False)
    assert below.unused == list(range(mid.id + 1, len(g)))
    assert below.dominators == []
    # ids: w0..w999, x = 1000, acc0 = 1001, then term k's product 1002 + 2k and sum 1003 + 2k
    nxg = to_networkx(g)
    adds = list(range(1_003, root, 2))
    assert analysis.gradient_dominators(nxg, root, [1_001]) == adds  # acc0: the whole chain
    assert analysis.gradient_dominators(nxg, root, [1_000]) == []  # x: every product
    # w0 is last used by term 29,000: every sum from there on (but the root) carries it all
    assert analysis.gradient_dominators(nxg, root, [0]) == adds[29_000:]


def test_the_moons_step_analysed_as_networkx_does(monkeypatch) -> None:
    graph, loss, scores, _ = moons_step()
    fast = analyze(graph, diagnostics=False, node=scores[3].id, leaf=0).to_dict()
    slow = networkx_report(graph, monkeypatch, diagnostics=False, node=scores[3].id,
                           leaf=0).to_dict()
    path, slow_path = fast.pop("critical_path"), slow.pop("critical_path")
    assert fast == slow
    assert len(path) == len(slow_path) and nx.is_path(to_networkx(graph), path)
    assert fast["root"] == loss.id and fast["unused"] == []
    # the last add (data loss + regularisation) is the only node but the root on every path
    assert fast["dominators"] == []


@pytest.mark.slow
def test_a_million_node_accumulation_chain() -> None:
    g = big_accumulation(1_000_000)
    report = analyze(g, limit=5)
    terms = (1_000_000 - 1_002) // 2
    assert report.nodes == 1_000_000 and report.edges == 4 * terms
    assert report.depth == terms + 2 and report.counts["critical_path"] == terms + 2
    assert report.critical_path == [0, 1_002, 1_003, 1_005, 1_007]
    assert report.counts["leaves"] == 1_002 and report.leaves == [0, 1, 2, 3, 4]
    assert report.dominators == [] and report.unused == []
    assert report.max_fan_out == {"node": 1_000, "count": terms}  # x, in every product


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.sampled_from([0.02, 0.5, 1.0]))
def test_levels_and_paths_with_wide_nodes(seed: int, size: int, wide: float) -> None:
    """Nodes of three to five inputs (a plugin op could take them), few or many of them: both
    ways `Structure.levels` goes."""
    from opgraph import core

    rng = random.Random(seed)
    g = Graph("wide")
    g.leaf(1.0)
    add = core.lookup("add")
    for _ in range(size):
        arity = rng.randint(3, 5) if rng.random() < wide else rng.randint(1, 2)
        inputs = tuple(g.nodes[rng.randrange(len(g))] for _ in range(arity))
        g._register(core.new_node(add, inputs, 0.0))  # (structure only: no forward)
    s = structure(g)
    generations = {v: i for i, gen in enumerate(nx.topological_generations(to_networkx(g)))
                   for v in gen}
    assert s.levels().tolist() == [generations[i] for i in range(len(g))]
    path = analyze(g, diagnostics=False).critical_path
    assert len(path) == max(generations.values()) + 1 and nx.is_path(to_networkx(g), path)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 50), st.integers(0, 4), st.data())
def test_neighbourhoods_equal_networkx(seed: int, size: int, depth: int, data) -> None:
    g = random_graph(seed, size, 3)
    center = data.draw(st.integers(0, len(g) - 1))
    expected = nx.single_source_shortest_path_length(
        to_networkx(g).to_undirected(as_view=True), center, cutoff=depth)
    assert [v.id for v in analysis.neighbourhood(g, center, depth)] == sorted(expected)


def test_a_neighbourhood_in_a_long_chain_touches_only_its_nodes() -> None:
    g = big_accumulation(200_000)
    middle = 100_001  # the sum of term 49,499 (term k: product 1002 + 2k, sum 1003 + 2k)
    ids = [v.id for v in analysis.neighbourhood(g, middle, 2)]
    # the sums two either side, the products of the nearest three, and the leaves of this
    # term's product (w499 and x, whose 99,499 other users are three edges away)
    assert ids == [499, 1_000, 99_997, 99_998, 99_999, 100_000, 100_001, 100_002, 100_003,
                   100_005]
    assert "_nx_cache" not in vars(g)  # (no networkx graph of 200,000 nodes was built)
