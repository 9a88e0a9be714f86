"""opgraph.aggregate: summaries by line, part and op equal a plain recomputation (on random
graphs and on the moons step), drill-downs by call and position find the right nodes, counts
of non-finite numbers and zero gradients, caps, errors; a 1,000,000-node graph."""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scale_graphs import MOONS, accumulation, moons_line, moons_step

import opgraph
from opgraph import Graph, topological_order
from opgraph.aggregate import LEAF, Aggregates, aggregates
from opgraph.nn import Neuron
from opgraph.structure import OptionError

# --- a plain recomputation --------------------------------------------------------------------


def plain_parts(graph: Graph) -> list[str]:
    """Each node's path: its label, or the part all its users share (users first), or ''."""
    users = defaultdict(list)
    for v in graph.nodes:
        for i in v.inputs:
            users[i.id].append(v.id)
    part = [""] * len(graph)  # the part a node's users see
    path = [""] * len(graph)
    for v in reversed(graph.nodes):
        if v.label:
            path[v.id] = v.label
            part[v.id] = v.label.rpartition(".")[0]
        elif users[v.id]:
            shared = {part[u] for u in users[v.id]}
            if len(shared) == 1 and "" not in shared:
                part[v.id] = path[v.id] = shared.pop()
    return path


def prefixes(path: str) -> list[str]:
    pieces = path.split(".") if path else []
    return [".".join(pieces[:d + 1]) for d in range(len(pieces))]


def plain_stats(nodes) -> dict:
    nodes = list(nodes)
    data = [v.data for v in nodes if math.isfinite(v.data)]
    grad = [v.grad for v in nodes if math.isfinite(v.grad)]

    def summary(xs):
        return {"min": min(xs), "mean": math.fsum(xs) / len(xs), "max": max(xs)} if xs else None

    return {
        "count": len(nodes),
        "leaves": sum(v.is_leaf for v in nodes),
        "ops": dict(Counter(v.op for v in nodes if v.op)),
        "data": summary(data),
        "grad": summary(grad),
        "grad_norm": math.hypot(*grad),
        "zero_grad": sum(v.grad == 0 for v in nodes),
        "nonfinite_data": len(nodes) - len(data),
        "nonfinite_grad": len(nodes) - len(grad),
        "first": min((v.id for v in nodes), default=None),
    }


def assert_stats(got: dict, expected: dict) -> None:
    for key in ("count", "leaves", "ops", "zero_grad", "nonfinite_data", "nonfinite_grad",
                "first"):
        assert got[key] == expected[key], key
    for key in ("data", "grad"):
        if expected[key] is None:
            assert got[key] is None, key
            continue
        assert got[key]["min"] == expected[key]["min"] and got[key]["max"] == expected[key]["max"]
        # (a sum in floats, not an exact one: as exact as the numbers' magnitude allows)
        scale = max(abs(expected[key]["min"]), abs(expected[key]["max"]))
        assert got[key]["mean"] == pytest.approx(expected[key]["mean"], rel=1e-9,
                                                 abs=1e-12 + 1e-13 * scale)
    assert got["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-9, abs=1e-300)


def assert_summary_is_plain(graph: Graph, summary: dict) -> None:
    """Every group of the summary against the plain recomputation."""
    paths = plain_parts(graph)
    assert_stats(summary["total"], plain_stats(graph.nodes))
    by_line = defaultdict(list)
    for v in graph.nodes:
        if v.source is not None:
            by_line[v.source].append(v)
    assert [(r["file"], r["line"]) for r in summary["lines"]] == sorted(by_line)
    for row in summary["lines"]:
        assert_stats(row["stats"], plain_stats(by_line[(row["file"], row["line"])]))
    by_part = defaultdict(list)
    for v in graph.nodes:
        for p in prefixes(paths[v.id]):
            by_part[p].append(v)
    assert sorted(r["part"] for r in summary["parts"]) == sorted(by_part)
    for row in summary["parts"]:
        assert_stats(row["stats"], plain_stats(by_part[row["part"]]))
    by_op = defaultdict(list)
    for v in graph.nodes:
        by_op[v.op or LEAF].append(v)
    assert sorted(r["op"] for r in summary["ops"]) == sorted(by_op)
    for row in summary["ops"]:
        assert_stats(row["stats"], plain_stats(by_op[row["op"]]))
    assert summary["counts"] == {"lines": len(by_line), "parts": len(by_part),
                                 "ops": len(by_op)}


# --- random graphs -----------------------------------------------------------------------------

LABELS = ["", "", "", "a", "a.b", "a.b.c", "a.c", "d.e", "d", "x1"]
FILES = [None, ("f.py", 1), ("f.py", 2), ("g.py", 1)]
NUMBERS = [0.0, 1.5, -2.0, 1e-300, 1e300, math.nan, math.inf, -math.inf, 3]


def random_graph(seed: int, size: int) -> Graph:
    rng = random.Random(seed)
    g = Graph("random")
    for _ in range(rng.randint(1, 4)):
        g.leaf(rng.choice(NUMBERS), rng.choice(LABELS), source=rng.choice(FILES))
    for _ in range(size):
        a = g.nodes[rng.randrange(len(g))]
        b = g.nodes[rng.randrange(len(g))]
        op = rng.choice(["add", "mul", "tanh", "relu"])
        inputs = [a] if op in ("tanh", "relu") else [a, b]
        g.apply(op, inputs, label=rng.choice(LABELS), source=rng.choice(FILES))
    for v in g.nodes:  # data and grads anywhere, non-finite ones included
        v.grad = rng.choice(NUMBERS)
        if rng.random() < 0.3:
            v.data = rng.choice(NUMBERS)
    return g


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 40))
def test_summaries_equal_a_plain_recomputation_on_random_graphs(seed: int, size: int) -> None:
    g = random_graph(seed, size)
    summary = Aggregates.of(g).summary()
    assert_summary_is_plain(g, summary)
    assert msgpack.unpackb(msgpack.packb(summary)) == summary


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.sampled_from(["line", "part", "op"]),
       st.data())
def test_queries_equal_a_plain_recomputation(seed, size, by, data) -> None:
    g = random_graph(seed, size)
    agg = Aggregates.of(g)
    paths = plain_parts(g)
    part = data.draw(st.sampled_from([None, "a", "a.b", "d"]))
    op = data.draw(st.sampled_from([None, "add", LEAF]))
    result = agg.query(part=part, op=op, by=by, limit=None, members=3)
    chosen = [v for v in g.nodes
              if (part is None or part in prefixes(paths[v.id]))
              and (op is None or (v.op or LEAF) == op)]
    assert_stats(result["stats"], plain_stats(chosen))
    assert result["members"] == [v.id for v in chosen][:3]
    groups = defaultdict(list)
    for v in chosen:
        if by == "line":
            if v.source is not None:
                groups[v.source].append(v)
        elif by == "op":
            groups[v.op or LEAF].append(v)
        else:
            depth = 0 if part is None else part.count(".") + 1
            pieces = paths[v.id].split(".") if paths[v.id] else []
            groups[".".join(pieces[:depth + 1]) if len(pieces) > depth else None].append(v)
    got = {(r["key"]["file"], r["key"]["line"]) if by == "line" else r["key"]: r
           for r in result["groups"]}
    assert set(got) == set(groups)
    for key, row in got.items():
        assert_stats(row["stats"], plain_stats(groups[key]))
        assert row["members"] == [v.id for v in groups[key]][:3]
    assert result["counts"] == {"groups": len(groups)}


# --- calls and positions -----------------------------------------------------------------------


def per_sample_graph(samples: int) -> tuple[Graph, list[list[int]], int]:
    """A line that runs once per sample, as ``model(x)`` does in the moons demo: the ids each
    call made, and that line's number."""
    g = Graph("samples")
    neuron = Neuron(1, seed=0, name="model")
    for p in neuron.parameters():
        g.adopt(p)
    xs = [g.leaf(0.1 * i - 1) for i in range(samples)]
    made = []

    def call(x):
        start = len(g)
        out = neuron([x])  # the line every call's nodes come from
        made.append(list(range(start, len(g))))
        return out

    with opgraph.track_source():
        outs = [call(x) for x in xs]
    total = outs[0]
    for o in outs[1:]:
        total = total + o
    g.backward(total)
    return g, made, call.__code__.co_firstlineno + 2


def test_a_line_run_per_sample_is_split_into_calls_and_positions() -> None:
    g, made, lineno = per_sample_graph(30)
    agg = Aggregates.of(g)
    line = {"file": __file__, "line": lineno}
    by_call = agg.query(line=line, by="call", limit=None, members=100)
    assert by_call["period"] == 3 and by_call["calls"] == 30
    assert [r["key"] for r in by_call["groups"]] == list(range(30))
    assert [r["members"] for r in by_call["groups"]] == made
    for row, ids in zip(by_call["groups"], made, strict=True):
        assert_stats(row["stats"], plain_stats(g.nodes[i] for i in ids))
    by_position = agg.query(line=line, by="position", limit=None, members=100)
    assert [r["members"] for r in by_position["groups"]] == [
        list(c) for c in zip(*made, strict=True)]
    # w0 * x, then b + that (the neuron's sum), then its ReLU
    assert [r["name"] for r in by_position["groups"]] == ["mul in model", "model.sum",
                                                          "model.act"]
    one = agg.query(line=line, call=7, by="part")
    assert one["members"] == made[7]
    assert [(r["key"], r["stats"]["count"]) for r in one["groups"]] == [("model", 3)]
    last = agg.query(line=line, position=2)
    assert last["members"] == [ids[2] for ids in made][:20]
    assert last["stats"]["count"] == 30 and last["stats"]["ops"] == {"relu": 30}


def test_moons_step_summaries_equal_a_plain_recomputation(moons) -> None:
    graph, *_ = moons
    assert_summary_is_plain(graph, Aggregates.of(graph).summary())


def test_moons_scores_line_by_sample_and_by_part(moons) -> None:
    graph, _, scores, _ = moons
    agg = aggregates(graph)
    line = {"file": str(MOONS), "line": moons_line("scores = [model(x)")}
    result = agg.query(line=line, by="call", limit=None, members=1_000)
    # 16 * (2 + 2 + 1) + 16 * (16 + 16 + 1) + (16 + 16) nodes per sample, 100 samples
    assert result["period"] == 640 and result["calls"] == 100
    assert result["stats"]["count"] == 64_000
    on_line = {v.id for v in graph.nodes if v.source == (line["file"], line["line"])}
    for k in (0, 41, 99):
        mine = sorted(v.id for v in topological_order(scores[k]) if v.id in on_line)
        assert result["groups"][k]["members"] == mine
    assert all(r["stats"]["count"] == 640 for r in result["groups"])
    # the last node of every call is that sample's score
    last = agg.query(line=line, position=639, members=100)
    assert last["members"] == [s.id for s in scores]
    assert agg.name_of(scores[0].id) == "layer2.neuron0.sum"
    # one sample, by layer; one neuron across the batch
    sample = agg.query(line=line, call=5, by="part")
    assert [(r["key"], r["stats"]["count"]) for r in sample["groups"]] == [
        ("layer0", 80), ("layer1", 528), ("layer2", 32)]
    neuron = agg.query(part="layer1.neuron7", by="part", limit=None)
    keys = [r["key"] for r in neuron["groups"]]
    assert keys == ["layer1.neuron7.act", "layer1.neuron7.b", "layer1.neuron7.sum",
                    *(f"layer1.neuron7.w{k}" for k in range(16)), None]
    act = neuron["groups"][0]["stats"]
    assert act["count"] == 100 and act["ops"] == {"relu": 100}
    assert act["data"]["min"] >= 0  # a ReLU's output
    assert neuron["groups"][-1]["stats"]["count"] == 100 * (16 + 15)  # products, partial sums


@pytest.fixture(scope="module")
def moons():
    return moons_step()


# --- numbers that are not finite, zero gradients, caps, errors ------------------------------------


def test_non_finite_and_zero_counts() -> None:
    g = Graph("bad")
    xs = [g.leaf(x, "p.x") for x in (1.0, math.nan, math.inf, -math.inf, 2.0)]
    for x, grad in zip(xs, (0.0, 1.0, math.nan, 0.0, 3.0), strict=True):
        x.grad = grad
    stats = Aggregates.of(g).summary()["parts"][0]["stats"]
    assert (stats["count"], stats["nonfinite_data"], stats["nonfinite_grad"]) == (5, 3, 1)
    assert stats["zero_grad"] == 2
    assert stats["data"] == {"min": 1.0, "mean": 1.5, "max": 2.0}
    assert stats["grad"] == {"min": 0.0, "mean": 1.0, "max": 3.0}
    assert stats["grad_norm"] == pytest.approx(math.sqrt(10))
    all_bad = Aggregates.of(Graph("none")).stats([])
    assert all_bad["data"] is None and all_bad["first"] is None
    json.dumps(Aggregates.of(g).summary(), allow_nan=False)  # no NaN leaks into the data


def test_huge_gradients_do_not_overflow_the_norm() -> None:
    g = Graph("big")
    for _ in range(4):
        g.leaf(1.0, "p.x").grad = 1e200
    assert Aggregates.of(g).stats()["grad_norm"] == pytest.approx(2e200)


def test_caps_and_counts() -> None:
    g, _, lineno = per_sample_graph(30)
    agg = Aggregates.of(g)
    line = (__file__, lineno)
    result = agg.query(line=line, by="call", limit=4, members=2)
    assert len(result["groups"]) == 4 and result["counts"] == {"groups": 30}
    assert all(len(r["members"]) == 2 for r in result["groups"])
    assert len(result["members"]) == 2
    summary = agg.summary(limit=1)
    assert len(summary["lines"]) == 1 and summary["counts"]["lines"] == 1
    # model, model.w0, .b, .sum, .act
    assert len(summary["parts"]) == 1 and summary["counts"]["parts"] == 5
    assert summary["parts"][0]["part"] == "model"
    assert len(summary["ops"]) == 1 and summary["counts"]["ops"] == 4  # mul add relu (leaf)
    assert summary["ops"][0]["op"] == "add"  # the biggest first: 30 + the 29 of the total
    assert agg.summary(file="elsewhere.py")["lines"] == []
    assert agg.query(members=0)["members"] == []


@pytest.mark.parametrize(("options", "message"), [
    ({"by": "sample"}, "by must be one of line, part, op, call, position"),
    ({"by": "call"}, "needs a line"),
    ({"call": 0}, "needs a line"),
    ({"line": ("nowhere.py", 3)}, "comes from nowhere.py:3"),
    ({"line": "f.py:3"}, "line must be"),
    ({"part": ""}, "part must be a non-empty string"),
    ({"limit": -1}, "limit must be a non-negative int"),
    ({"members": 1.5}, "members must be a non-negative int"),
])
def test_bad_queries_are_refused(options: dict, message: str) -> None:
    g, _, _ = per_sample_graph(3)
    with pytest.raises(OptionError, match=message):
        Aggregates.of(g).query(**options)


def test_calls_need_a_periodic_line_and_an_index_in_range() -> None:
    g, _, lineno = per_sample_graph(3)
    agg = Aggregates.of(g)
    with pytest.raises(OptionError, match=r"call must be an int in 0\.\.2, got 3"):
        agg.query(line=(__file__, lineno), call=3)
    with pytest.raises(OptionError, match=r"position must be an int in 0\.\.2"):
        agg.query(line=(__file__, lineno), position=-1)
    single = Graph("one")
    with opgraph.track_source():
        x = single.leaf(1.0)
        y = (x * x).tanh()  # one call only
    with pytest.raises(OptionError, match="which has no period"):
        Aggregates.of(single).query(line=y.source, by="call")


def test_aggregates_are_cached_per_version() -> None:
    g, _, _ = per_sample_graph(3)
    first = aggregates(g)
    assert aggregates(g) is first
    g.set(0, 2.0)  # a new version
    assert aggregates(g) is not first


# --- 1,000,000 nodes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_million_node_accumulation_line() -> None:
    g = accumulation(1_000_000, track=True)
    assert len(g) == 1_000_000
    agg = Aggregates.of(g)
    (row,) = agg.summary()["lines"]
    terms = (1_000_000 - 1_002) // 2
    assert (row["period"], row["calls"], row["stats"]["count"]) == (2, terms, 2 * terms)
    assert row["stats"]["ops"] == {"add": terms, "mul": terms}
    data = [v.data for v in g.nodes if v.source is not None]
    assert row["stats"]["data"]["mean"] == pytest.approx(math.fsum(data) / len(data), rel=1e-9)
    last = agg.query(line=(row["file"], row["line"]), call=terms - 1)
    assert last["members"] == [len(g) - 2, len(g) - 1]
    capped = agg.query(line=(row["file"], row["line"]), by="call", limit=10, members=1)
    assert len(capped["groups"]) == 10 and capped["counts"] == {"groups": terms}
