"""Requests that are wrong or ambiguous are refused in words that say so, and change nothing:
a backward pass that fails half-way, an eval label naming an existing node, a label standing
for several nodes, batch steps with unknown or mixed keys."""

from __future__ import annotations

import pytest
from opgraph_client import Client, InvalidParamsError, OpFailedError
from server_harness import ThreadedServer


def test_failed_backward_keeps_every_gradient(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        c.call("graph.create", "bw")
        a = c.call("node.leaf", "bw", 0.0, {"label": "a"})["id"]
        root = c.call("node.apply", "bw", "pow_const", [a], {"exponent": 0.5})["id"]
        c.call("node.apply", "bw", "mul", [a, a])
        before = c.call("graph.nodes", "bw")
        with pytest.raises(OpFailedError, match="pow_const"):
            c.call("graph.backward", "bw", root)  # d/da a**0.5 at 0 divides by zero
        assert c.call("graph.nodes", "bw") == before


def test_eval_label_names_only_a_new_node(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        before = c.call("graph.info", "demo")
        with pytest.raises(InvalidParamsError, match="existing node"):
            c.call("graph.eval", "demo", "o", {}, {"label": "renamed"})
        assert c.call("graph.info", "demo") == before
        made = c.call("graph.eval", "demo", "o * 2", {}, {"label": "twice"})
        assert c.call("node.get", "demo", made["root"])["nodes"][0]["label"] == "twice"


def test_eval_with_an_ambiguous_label_says_so(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        c.call("graph.create", "dup")
        c.call("node.leaf", "dup", 1.0, {"label": "d"})
        c.call("node.leaf", "dup", 2.0, {"label": "d"})
        with pytest.raises(InvalidParamsError, match=r"'d' labels 2 nodes \(ids 0, 1\)"):
            c.call("graph.eval", "dup", "d * 2")
        assert c.call("graph.eval", "dup", "d * 2", {"d": {"id": 1}})["data"] == 4.0


@pytest.mark.parametrize(("step", "message"), [
    ({"leaf": 1.0, "lable": "x"}, "unknown key 'lable'; did you mean 'label'"),
    ({"leaf": 1.0, "op": "tanh", "inputs": [0]}, "exactly one of 'leaf' and 'op'"),
    ({"label": "x"}, "exactly one of 'leaf' and 'op'"),
])
def test_batch_refuses_unknown_or_mixed_step_keys(server: ThreadedServer, step, message) -> None:
    with Client(server.tcp) as c:
        before = c.call("graph.info", "demo")
        with pytest.raises(InvalidParamsError, match=message):
            c.call("graph.batch", "demo", [{"leaf": 3.0}, step])
        assert c.call("graph.info", "demo") == before
