"""``graph.info``'s leaves and outputs, read from a graph's structure arrays, are the graph's own
(`Graph.leaves`, `Graph.outputs`), on a training step's graph with shared parameters."""

from __future__ import annotations

from opgraph_server.methods.graphs import _ends
from server_harness import Raw

from opgraph import Value, fileformat
from opgraph.graph import Graph
from opgraph.nn import MLP


def test_ends_are_the_graphs_leaves_and_outputs() -> None:
    model = MLP(2, [4, 4, 1], seed=3)
    scores = [model([Value(x), Value(-x)]) for x in (0.5, 1.5, -2.0)]
    total = scores[0] + scores[1]  # the third score is an output too
    graph = fileformat.from_document(fileformat.to_document(total + scores[2]))
    leaves, outputs = _ends(graph)
    assert leaves == [v.id for v in graph.leaves]
    assert outputs == [v.id for v in graph.outputs]
    empty = Graph("e")
    assert _ends(empty) == ([], [])
    empty.leaf(1.0)
    assert _ends(empty) == ([0], [0])


def test_graph_info_of_a_big_graph(server) -> None:
    with Raw(server.tcp) as raw:
        raw.ok("graph.create", "big")
        steps = [{"op": "add", "inputs": [0, 0]}] + [
            {"op": "add", "inputs": [f"${k}", 0]} for k in range(2_999)]
        raw.ok("node.leaf", "big", 1.0)
        raw.ok("graph.batch", "big", steps)
        raw.ok("node.leaf", "big", 2.0)  # unused: a leaf and an output
        info = raw.ok("graph.info", "big")
        assert info["leaves"] == [0, 3001] and info["outputs"] == [3000, 3001]
