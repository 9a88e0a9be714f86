"""graph.gradcheck at scale: a seeded sample of the leaves, or the leaves named, checked on the
moons step over a real server against the gradients of a plain backward pass; the leaf limit
counts the leaves checked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opgraph_client import (
    Client,
    InvalidParamsError,
    LimitExceededError,
    NotALeafError,
    UnknownNodeError,
)
from scale_graphs import moons_step
from server_harness import ThreadedServer

from opgraph import Graph, Value


@pytest.fixture(scope="module")
def small_moons() -> tuple[Graph, Value]:
    graph, loss, _, _ = moons_step(points=8)
    return graph, loss


@pytest.fixture
def served(small_moons: tuple[Graph, Value]) -> Iterator[tuple[Client, Graph, int]]:
    graph, loss = small_moons
    srv = ThreadedServer(unix=False)
    srv.sync(srv.server.add_graph, graph)
    try:
        with Client(srv.tcp, timeout=120) as client:
            yield client, graph, loss.id
    finally:
        srv.stop()


def leaf_ids(graph: Graph) -> list[int]:
    return [v.id for v in graph.nodes if v.is_leaf]


def assert_against_backward(report: dict[str, Any], graph: Graph) -> None:
    """Each leaf's analytic gradient is the grad the step's own backward pass left."""
    for leaf in report["leaves"]:
        assert leaf["analytic"] == pytest.approx(graph.nodes[leaf["id"]].grad, rel=1e-9,
                                                 abs=1e-12)
        assert leaf["ok"], leaf


def test_a_seeded_sample(served: Any) -> None:
    c, graph, loss = served
    total = len(leaf_ids(graph))
    first = c.call("graph.gradcheck", "moons", loss, sample=4, seed=7)
    assert (first["chosen"], first["sample"], first["seed"]) == ("sample", 4, 7)
    assert first["total_leaves"] == total and first["ok"] is True
    ids = [leaf["id"] for leaf in first["leaves"]]
    assert len(ids) == 4 and ids == sorted(ids) and set(ids) <= set(leaf_ids(graph))
    assert_against_backward(first, graph)
    again = c.call("graph.gradcheck", "moons", loss, sample=4, seed=7)
    assert [leaf["id"] for leaf in again["leaves"]] == ids  # reproducible
    others = {tuple(leaf["id"] for leaf in c.call("graph.gradcheck", "moons", loss, sample=4,
                                                  seed=seed)["leaves"]) for seed in (8, 9)}
    assert others != {tuple(ids)}


def test_the_leaves_named_and_a_sample_of_them(served: Any) -> None:
    c, graph, loss = served
    named = leaf_ids(graph)[-5:]
    report = c.call("graph.gradcheck", "moons", loss, leaves=named)
    assert report["chosen"] == "given" and [leaf["id"] for leaf in report["leaves"]] == named
    assert report["sample"] is None and report["seed"] is None
    assert_against_backward(report, graph)
    two = c.call("graph.gradcheck", "moons", loss, leaves=named, sample=2, seed=1)
    assert len(two["leaves"]) == 2 and {leaf["id"] for leaf in two["leaves"]} <= set(named)
    one = c.call("graph.gradcheck", "moons", loss, leaves=named[0])
    assert [leaf["id"] for leaf in one["leaves"]] == [named[0]]


def test_every_leaf_by_default(served: Any) -> None:
    c, graph, loss = served
    report = c.call("graph.gradcheck", "moons", loss)
    assert report["chosen"] == "all"
    assert [leaf["id"] for leaf in report["leaves"]] == leaf_ids(graph)


def test_bad_leaves_are_refused_by_name(served: Any) -> None:
    c, graph, loss = served
    computed = next(v.id for v in graph.nodes if not v.is_leaf)
    with pytest.raises(NotALeafError, match=f"node {computed} is computed by op"):
        c.call("graph.gradcheck", "moons", loss, leaves=[computed])
    with pytest.raises(UnknownNodeError):
        c.call("graph.gradcheck", "moons", loss, leaves=[10**9])
    with pytest.raises(InvalidParamsError, match="leaves must not be empty"):
        c.call("graph.gradcheck", "moons", loss, leaves=[])
    for options, message in (({"sample": 0}, "sample must be at least 1"),
                             ({"sample": 1.5}, "sample must be an integer"),
                             ({"seed": "x"}, "seed must be an integer"),
                             ({"leaves": ["a"]}, "leaves must be a node id or a list")):
        with pytest.raises(InvalidParamsError, match=message):
            c.call("graph.gradcheck", "moons", loss, **options)


def test_a_leaf_the_root_does_not_depend_on(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        c.call("graph.create", "g")
        x = c.call("node.leaf", "g", 2.0)["id"]
        stray = c.call("node.leaf", "g", 3.0)["id"]
        root = c.call("node.apply", "g", "tanh", [x])["id"]
        with pytest.raises(InvalidParamsError, match=f"root {root} does not depend on leaf "
                                                     f"{stray}"):
            c.call("graph.gradcheck", "g", root, leaves=[x, stray])


def test_the_limit_counts_the_leaves_checked(make_server: Any) -> None:
    graph, loss, _, _ = moons_step()  # the whole step: 741 leaves
    server = make_server(max_gradcheck_leaves=10, demo=False)
    server.sync(server.server.add_graph, graph)
    with Client(server.tcp, timeout=120) as c:
        with pytest.raises(LimitExceededError, match=r"depends on 741 leaves; gradcheck "
                                                     r"checks at most 10 \(pass sample"):
            c.call("graph.gradcheck", "moons", loss.id)
        report = c.call("graph.gradcheck", "moons", loss.id, sample=3, seed=2)
    assert report["ok"] is True and report["total_leaves"] == 741
    assert len(report["leaves"]) == 3
    assert_against_backward(report, graph)
