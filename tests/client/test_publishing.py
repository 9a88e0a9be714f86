"""`Client.publish` sends only values while a graph's structure stays the one it last published,
and the whole graph otherwise, with a real server. What the server holds is checked against the
local graph each time, node for node."""

from __future__ import annotations

import asyncio
import math

import pytest
from opgraph_client import AsyncClient, Client

import opgraph
from opgraph import Value, fileformat
from opgraph.nn import MLP


def step(model: MLP, points: list[tuple[float, float]]) -> Value:
    """A small training step's loss, with gradients."""
    scores = [model([Value(x), Value(y)]) for x, y in points]
    loss = sum((s * s for s in scores), Value(0.0))
    for p in model.parameters():
        p.grad = 0.0
    loss.backward()
    return loss


def same(client: Client, name: str, root: Value) -> None:
    """The server's graph is the local one: structure, labels, sources, data and grads."""
    local = fileformat.to_document(root)["nodes"]
    remote = client.call("graph.nodes", name, {"count": len(local) + 1})["nodes"]
    assert len(remote) == len(local)
    for mine, theirs in zip(local, remote, strict=True):
        for field in ("op", "inputs", "attrs", "label", "source"):
            assert theirs[field] == mine[field], (mine["id"], field)
        for field in ("data", "grad"):
            a, b = theirs[field], mine[field]
            assert a == b or (math.isnan(a) and math.isnan(b)), (mine["id"], field)


def test_a_training_loop_sends_values_after_the_first_step(server) -> None:
    model = MLP(2, [4, 1], seed=1)
    points = [(0.5, -1.0), (1.5, 0.25), (-0.5, 2.0)]
    with Client(server.tcp) as client, opgraph.track_source():
        first = client.publish("train", step(model, points))
        for _ in range(4):
            for p in model.parameters():
                p.data -= 0.1 * p.grad
            loss = step(model, points)
            result = client.publish("train", loss)
            # the same token: the server took values (a whole publish makes a new one)
            assert result["structure"] == first["structure"]
            assert result["version"] > first["version"]
            same(client, "train", loss)


def test_a_changed_structure_is_sent_whole(server) -> None:
    model = MLP(2, [3, 1], seed=2)
    with Client(server.tcp) as client:
        first = client.publish("g", step(model, [(1.0, 2.0)]))
        bigger = step(model, [(1.0, 2.0), (0.5, 0.5)])
        second = client.publish("g", bigger)
        assert second["structure"] != first["structure"]
        assert second["nodes"] > first["nodes"]
        same(client, "g", bigger)
        relabelled = step(model, [(1.0, 2.0), (0.5, 0.5)])
        relabelled.label = "loss"
        third = client.publish("g", relabelled)
        assert third["structure"] != second["structure"]
        same(client, "g", relabelled)


def test_a_graph_changed_by_someone_else_is_sent_whole(server) -> None:
    model = MLP(2, [3, 1], seed=3)
    with Client(server.tcp) as client, Client(server.tcp) as other:
        first = client.publish("g", step(model, [(1.0, 2.0)]))
        other.call("node.leaf", "g", 5.0)  # the server's graph grew
        loss = step(model, [(1.0, 2.0)])
        again = client.publish("g", loss)
        assert again["structure"] != first["structure"]
        same(client, "g", loss)
        other.call("graph.drop", "g")
        loss = step(model, [(1.0, 2.0)])
        client.publish("g", loss)
        same(client, "g", loss)


def test_gradients_that_are_nodes_go_in_the_document(server) -> None:
    with Client(server.tcp) as client:
        x = Value(3.0, label="x")
        f = 3 * x ** 2 - 4 * x + 5
        client.publish("f", f)
        f.backward(create_graph=True)  # x.grad is a node now: no float array can carry it
        client.publish("f", f)
        nodes = client.call("graph.nodes", "f")["nodes"]
        assert [n["grad"] for n in nodes if n["label"] == "x"] == [14.0]


def test_the_async_client_does_the_same(server) -> None:
    model = MLP(2, [3, 1], seed=4)

    async def main() -> None:
        client = await AsyncClient.connect(server.tcp)
        try:
            first = await client.publish("a", step(model, [(0.25, 0.75)]))
            for p in model.parameters():
                p.data += 0.5
            loss = step(model, [(0.25, 0.75)])
            second = await client.publish("a", loss)
            assert second["structure"] == first["structure"]
            nodes = (await client.call("graph.nodes", "a"))["nodes"]
            assert nodes[-1]["data"] == loss.data
        finally:
            await client.close()

    asyncio.run(main())


@pytest.mark.parametrize("bad", [None, 3, "x"])
def test_publish_refuses_what_is_not_a_graph(server, bad) -> None:
    with Client(server.tcp) as client, pytest.raises((TypeError, ValueError)) as caught:
        client.publish("g", bad)
    assert "Graph or a Value" in str(caught.value)


def test_a_publishing_client_has_backward_keep_its_walk_until_it_closes(server) -> None:
    from opgraph.core import passes

    model = MLP(2, [3, 1], seed=5)
    assert not passes.remembering
    with Client(server.tcp) as client:
        client.publish("w", step(model, [(1.0, 2.0)]))
        assert passes.remembering  # from the first publish on
        loss = step(model, [(1.0, 2.0)])
        assert passes._last_walk is not None and passes._last_walk[0] is loss
        client.publish("w", loss)  # the walk is taken: the graph is not walked again
        assert passes._last_walk is None
        same(client, "w", loss)
    assert not passes.remembering and passes._last_walk is None
