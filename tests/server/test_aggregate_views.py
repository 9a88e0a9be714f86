"""Views at training scale over a real server: ``graph.aggregate`` on the moons step (65,818
nodes) against a plain recomputation from the nodes, computed once per version and in a worker
thread; ``graph.diagnostics`` grouped and capped; ``graph.analyze`` capped; every list's full
length in ``counts``."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opgraph_client import Client, InvalidParamsError
from scale_graphs import MOONS, accumulation, moons_line, moons_step
from server_harness import ThreadedServer

import opgraph
import opgraph.aggregate
from opgraph import Graph, Value
from opgraph.diagnostics import run_diagnostics

SCORES = moons_line("scores = [model(x) for x in inputs]")


@pytest.fixture(scope="module")
def moons() -> Graph:
    return moons_step()[0]


@pytest.fixture
def served(moons: Graph) -> Iterator[tuple[ThreadedServer, Client]]:
    """A server holding the moons step as graph "moons" (the same object: left unchanged)."""
    srv = ThreadedServer(unix=False)
    srv.sync(srv.server.add_graph, moons)
    try:
        with Client(srv.tcp, timeout=60) as client:
            yield srv, client
    finally:
        srv.stop()


# --- the plain recomputation ------------------------------------------------------------------


def plain_stats(nodes: Sequence[Value]) -> dict[str, Any]:
    """The statistics of ``nodes``, node by node in plain Python."""
    data = [v.data for v in nodes if math.isfinite(v.data)]
    grad = [v.grad for v in nodes if math.isfinite(v.grad)]

    def summary(xs: list[float]) -> dict[str, float] | None:
        return {"min": min(xs), "mean": sum(xs) / len(xs), "max": max(xs)} if xs else None

    return {
        "count": len(nodes),
        "leaves": sum(v.is_leaf for v in nodes),
        "ops": dict(Counter(v.op for v in nodes if v.op is not None)),
        "data": summary(data),
        "grad": summary(grad),
        "grad_norm": math.sqrt(sum(g * g for g in grad)),
        "zero_grad": sum(v.grad == 0 for v in nodes),
        "nonfinite_data": len(nodes) - len(data),
        "nonfinite_grad": len(nodes) - len(grad),
        "first": min(v.id for v in nodes) if nodes else None,
    }


def assert_stats(got: dict[str, Any], nodes: Sequence[Value]) -> None:
    want = plain_stats(nodes)
    assert set(got) == set(opgraph.aggregate.STAT_KEYS)
    for key in ("count", "leaves", "ops", "zero_grad", "nonfinite_data", "nonfinite_grad",
                "first"):
        assert got[key] == want[key], key
    for key in ("data", "grad"):
        assert got[key] == (None if want[key] is None else pytest.approx(want[key], rel=1e-9))
    assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-9)


def plain_parts(graph: Graph) -> dict[str, list[Value]]:
    """Each model part's nodes: a labelled node is in its label and every dotted prefix of it;
    an unlabelled one in those of the part all its users share (users first)."""
    users: dict[int, list[int]] = {}
    for v in graph.nodes:
        for i in v.inputs:
            users.setdefault(i.id, []).append(v.id)
    part: dict[int, str] = {}  # the part a node passes on: its label's prefix, or inherited
    path: dict[int, str] = {}  # the path a node is in: its label, or the inherited part
    for v in reversed(graph.nodes):
        if v.label:
            part[v.id] = v.label.rpartition(".")[0]
            path[v.id] = v.label
            continue
        shared = {part.get(u, "") for u in users.get(v.id, [])}
        if len(shared) == 1 and "" not in shared:
            part[v.id] = path[v.id] = shared.pop()
    groups: dict[str, list[Value]] = {}
    for i, p in path.items():
        pieces = p.split(".")
        for d in range(len(pieces)):
            groups.setdefault(".".join(pieces[:d + 1]), []).append(graph.nodes[i])
    return groups


def line_nodes(graph: Graph, line: int) -> list[Value]:
    return [v for v in graph.nodes if v.source is not None and tuple(v.source) == (str(MOONS),
                                                                                     line)]


# --- graph.aggregate --------------------------------------------------------------------------


def test_the_summary_equals_a_plain_recomputation(served: Any, moons: Graph) -> None:
    _, c = served
    summary = c.call("graph.aggregate", "moons", limit=1000)
    assert summary["nodes"] == len(moons.nodes) == 65_818
    assert summary["version"] == moons.version
    assert_stats(summary["total"], moons.nodes)
    sources = Counter(tuple(v.source) for v in moons.nodes if v.source is not None)
    assert [(row["file"], row["line"]) for row in summary["lines"]] == sorted(sources)
    for row in summary["lines"]:
        assert_stats(row["stats"], line_nodes(moons, row["line"]))
    scores = next(row for row in summary["lines"] if row["line"] == SCORES)
    assert (scores["period"], scores["calls"]) == (640, 100)  # one MLP pass per point
    assert scores["stats"]["count"] == 64_000
    ops = Counter(v.op or "(leaf)" for v in moons.nodes)
    assert {row["op"]: row["stats"]["count"] for row in summary["ops"]} == dict(ops)
    parts = plain_parts(moons)
    assert summary["counts"] == {"lines": len(sources), "parts": len(parts), "ops": len(ops)}
    assert {row["part"] for row in summary["parts"]} == set(parts)
    for row in summary["parts"]:
        if row["part"] in ("layer0", "layer1.neuron3", "layer2.neuron0.b"):
            assert_stats(row["stats"], parts[row["part"]])


def test_the_summary_is_capped_with_the_totals_given(served: Any) -> None:
    _, c = served
    full = c.call("graph.aggregate", "moons", limit=1000)
    capped = c.call("graph.aggregate", "moons", limit=2)
    assert capped["counts"] == full["counts"] and full["counts"]["parts"] > 400
    for key in ("lines", "parts", "ops"):
        assert capped[key] == full[key][:2]
    default = c.call("graph.aggregate", "moons")
    assert len(default["parts"]) == 50 and default["lines"] == full["lines"]
    only = c.call("graph.aggregate", "moons", file=str(MOONS), limit=1)
    assert len(only["lines"]) == 1
    assert c.call("graph.aggregate", "moons", file="elsewhere.py")["lines"] == []


def test_drill_down_by_position_and_by_call(served: Any, moons: Graph) -> None:
    _, c = served
    nodes = line_nodes(moons, SCORES)  # in id order: call k is nodes[640 k: 640 (k + 1)]
    line = {"file": str(MOONS), "line": SCORES}
    by_position = c.call("graph.aggregate", "moons", line=line, by="position", limit=5,
                         members=3)
    assert (by_position["period"], by_position["calls"]) == (640, 100)
    assert by_position["counts"] == {"groups": 640}
    assert [g["key"] for g in by_position["groups"]] == [0, 1, 2, 3, 4]
    assert_stats(by_position["stats"], nodes)
    assert by_position["members"] == [v.id for v in nodes[:3]]
    for group in by_position["groups"]:
        assert_stats(group["stats"], nodes[group["key"]::640])
        assert group["members"] == [v.id for v in nodes[group["key"]::640][:3]]
    last = c.call("graph.aggregate", "moons", line=[str(MOONS), SCORES], position=639)
    assert_stats(last["stats"], nodes[639::640])  # the score of every point
    one = c.call("graph.aggregate", "moons", line=SCORES, file=str(MOONS), call=7, by="op")
    assert_stats(one["stats"], nodes[7 * 640:8 * 640])
    ops = Counter(v.op for v in nodes[7 * 640:8 * 640])
    assert {g["key"]: g["stats"]["count"] for g in one["groups"]} == dict(ops)


def test_drill_down_into_a_model_part(served: Any, moons: Graph) -> None:
    _, c = served
    parts = plain_parts(moons)
    layer = c.call("graph.aggregate", "moons", part="layer1", by="part", limit=100)
    assert_stats(layer["stats"], parts["layer1"])
    neurons = {g["key"]: g for g in layer["groups"]}
    assert {k for k in neurons if k is not None} == {f"layer1.neuron{i}" for i in range(16)}
    for name in ("layer1.neuron0", "layer1.neuron15"):
        assert_stats(neurons[name]["stats"], parts[name])
    relu = c.call("graph.aggregate", "moons", part="layer1.neuron3", op="relu")
    assert_stats(relu["stats"], [v for v in parts["layer1.neuron3"] if v.op == "relu"])


@pytest.mark.parametrize(("options", "message"), [
    ({"line": {"file": "nowhere.py", "line": 3}}, "comes from nowhere.py:3"),
    ({"by": "sample"}, "by must be one of line, part, op, call, position"),
    ({"members": 3}, "members lists the nodes of a drill-down"),
    ({"line": 64}, "line 64 needs file"),
    ({"call": 2}, "call needs a line"),
    ({"line": [str(MOONS), SCORES], "call": 100}, r"call must be an int in 0\.\.99"),
    ({"limit": -1}, "limit must be at least 0"),
    ({"part": ""}, "part must not be empty"),
    ({"line": "moons.py:64"}, "line must be {file, line}"),
    ({"file": "x.py", "part": "layer0"}, "file goes with an integer line"),
])
def test_bad_aggregate_options_are_refused_by_name(served: Any, options: dict[str, Any],
                                                   message: str) -> None:
    _, c = served
    with pytest.raises(InvalidParamsError, match=message) as caught:
        c.call("graph.aggregate", "moons", **options)
    assert str(caught.value).startswith("invalid_params: graph.aggregate: ")


def test_computed_once_per_version_in_a_worker_thread(served: Any, moons: Graph,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, c = served
    threads: list[str] = []
    real = opgraph.aggregate.Aggregates.summary

    def counted(self: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(self, **kwargs)

    monkeypatch.setattr(opgraph.aggregate.Aggregates, "summary", counted)
    first = c.call("graph.aggregate", "moons")
    assert c.call("graph.aggregate", "moons") == first  # answered from the cache
    assert len(threads) == 1 and threads[0].startswith("opgraph-read")
    assert c.call("graph.aggregate", "moons", limit=3)["counts"] == first["counts"]
    assert len(threads) == 2  # other options: another answer
    # A change: a new version, summarised afresh (on a copy, to leave the shared graph alone).
    c.call("graph.import", "copy", c.call("graph.export", "moons"))
    c.call("graph.aggregate", "copy")
    leaf = c.call("node.leaf", "copy", 1.0)
    again = c.call("graph.aggregate", "copy")
    assert len(threads) == 4
    assert (again["version"], again["nodes"]) == (leaf["version"], len(moons.nodes) + 1)


def test_a_small_graph_is_summarised_on_the_loop(served: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    srv, c = served
    threads: list[threading.Thread] = []
    real = opgraph.aggregate.Aggregates.summary

    def counted(self: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return real(self, **kwargs)

    monkeypatch.setattr(opgraph.aggregate.Aggregates, "summary", counted)
    summary = c.call("graph.aggregate", "demo")
    assert summary["nodes"] == 10 and threads == [srv.thread]


@pytest.mark.slow
def test_a_million_node_chain_is_summarised() -> None:
    graph = accumulation(1_000_000, track=True)
    srv = ThreadedServer(unix=False)
    try:
        srv.sync(srv.server.add_graph, graph)
        with Client(srv.tcp, timeout=120) as c:
            summary = c.call("graph.aggregate", "acc", limit=5)
            assert summary["nodes"] == len(graph.nodes) == 1_000_000
            (row,) = summary["lines"]  # every term made on one line
            assert (row["period"], row["calls"]) == (2, (1_000_000 - 1_002) // 2)
            assert row["stats"]["ops"] == {"mul": row["calls"], "add": row["calls"]}
            assert summary["counts"]["parts"] == 1_002 and len(summary["parts"]) == 5
            term = c.call("graph.aggregate", "acc", line=[row["file"], row["line"]],
                          position=1)
            adds = [v for v in graph.nodes if v.op == "add"]
            assert_stats(term["stats"], adds)
    finally:
        srv.stop()


# --- diagnostics and analysis, grouped and capped -----------------------------------------------


def saturated(name: str) -> Graph:
    """65 saturated tanh nodes made on two source lines, the first 40 labelled in 3 parts."""
    g = Graph(name)
    with opgraph.track_source():
        for i in range(40):
            x = g.leaf(10.0 + i, f"part{i % 3}.x{i}")
            g.apply("tanh", [x.id], label=f"part{i % 3}.t{i}")
        for i in range(25):
            x = g.leaf(-10.0 - i)
            g.apply("tanh", [x.id])
    return g


def test_diagnostics_grouped_and_capped(served: Any) -> None:
    srv, c = served
    graph = saturated("sat")
    srv.sync(srv.server.add_graph, graph)
    found = run_diagnostics(graph).diagnostics
    assert len(found) == 65
    plain = Counter((d.code, tuple(graph.nodes[d.node].source)) for d in found)
    everything = c.call("graph.diagnostics", "sat")
    assert len(everything["diagnostics"]) == 65 and "groups" not in everything
    assert everything["counts"] == {"diagnostics": 65, "occurrences": 65}
    grouped = c.call("graph.diagnostics", "sat", group=True, limit=1)
    assert len(grouped["diagnostics"]) == 1
    assert grouped["diagnostics"][0] == everything["diagnostics"][0]
    assert grouped["counts"] == {"diagnostics": 65, "occurrences": 65, "groups": len(plain)}
    (biggest,) = grouped["groups"]
    site = (biggest["site"]["file"], biggest["site"]["line"])
    assert biggest["count"] == max(plain.values()) == plain[(biggest["code"], site)] == 40
    assert len(biggest["nodes"]) == 10  # the first of them
    all_groups = c.call("graph.diagnostics", "sat", group=True)["groups"]
    assert {(g["code"], (g["site"]["file"], g["site"]["line"])): g["count"]
            for g in all_groups} == dict(plain)


def test_moons_diagnostics_are_one_per_dead_unit(served: Any, moons: Graph) -> None:
    _, c = served
    report = c.call("graph.diagnostics", "moons", group=True)
    dead = [d for d in report["diagnostics"] if d["code"] == "dead-relu"]
    assert dead and all(d["count"] == 100 for d in dead)  # a unit off for all 100 points
    assert report["counts"]["occurrences"] == sum(d.get("count", 1)
                                                  for d in report["diagnostics"])


def test_analyze_capped_with_counts(served: Any, moons: Graph) -> None:
    _, c = served
    full = c.call("graph.analyze", "moons")
    capped = c.call("graph.analyze", "moons", limit=3, group=False)
    assert len(full["critical_path"]) == full["counts"]["critical_path"] > 300
    assert capped["critical_path"] == full["critical_path"][:3]
    assert len(capped["leaves"]) == 3 and capped["counts"] == full["counts"]
    assert capped["counts"]["leaves"] == sum(v.is_leaf for v in moons.nodes)
    assert "diagnostic_groups" not in capped and full["diagnostic_groups"]
    with pytest.raises(InvalidParamsError, match=r"graph\.analyze: limit must be an integer"):
        c.call("graph.analyze", "moons", limit="3")
