"""Higher order over the protocol: ``graph.backward`` and ``graph.grads`` with ``create_graph``
add the gradient graph to the served graph (ids, labels ``d o/d x``, the node limit, all or
nothing, durable), and ``graph.gradcheck`` with ``order: 2`` checks second derivatives, on a
real server."""

from __future__ import annotations

import math
import signal
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opgraph_client import (
    Client,
    InvalidParamsError,
    LimitExceededError,
    OpFailedError,
    UnknownNodeError,
)
from opgraph_server.demo import neuron
from server_harness import SEED, SEED_GRADS, TIMEOUT, ProcessServer, ThreadedServer

import opgraph
from opgraph import Graph, OpDef, expr, hookimpl, registry
from opgraph.higher import hessian


@pytest.fixture
def client(server: ThreadedServer) -> Iterator[Client]:
    with Client(server.tcp) as c:
        yield c


@pytest.fixture
def install_ops() -> Iterator[Callable[..., None]]:
    """``install_ops(plugin)``: the installed plugins plus ``plugin`` (a ``(name, object)``
    pair) as the process-wide op table (the in-process server's too); the old one after."""
    previous = registry.set_default_registry(registry.default_registry())

    def install(*plugins: tuple[str, Any]) -> None:
        registry.set_default_registry(registry.build_registry(plugins=plugins))

    yield install
    registry.set_default_registry(previous)


def softplus_plugin(grad_graph: Any = None, grad_rule: Any = None) -> tuple[str, Any]:
    """A plugin with one op, softplus, whose graph rule is ``grad_graph`` (None: none) and
    float rule ``grad_rule`` (None: the right one)."""

    def forward(x: float) -> float:
        return math.log1p(math.exp(x))

    def sigmoid_rule(x: float, out: float) -> tuple[float]:
        return (sigmoid(x),)

    @hookimpl
    def opgraph_register_ops() -> list[OpDef]:
        return [OpDef("softplus", 1, forward, grad_rule or sigmoid_rule, grad_graph=grad_graph)]

    return ("softplus-test", types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def seed_function(c: Client, name: str = "f") -> tuple[int, int]:
    """The seed's f(x) = 3x**2 - 4x + 5 at x = 3, built over the protocol: (f, x) ids."""
    c.call("graph.create", name)
    made = c.call("graph.eval", name, "3*x**2 - 4*x + 5", {"x": 3.0}, label="f")
    return made["root"], made["leaves"]["x"]


def labels(c: Client, graph: str = "demo") -> dict[str, int]:
    return {n["label"]: n["id"] for n in c.call("graph.nodes", graph)["nodes"] if n["label"]}


def record(c: Client, graph: str, node: int) -> dict[str, Any]:
    return c.call("node.get", graph, [node])["nodes"][0]


def state(c: Client, graph: str) -> dict[str, Any]:
    """Everything a client can see of a graph: its nodes (values, grads, labels), its count
    and version."""
    return c.call("graph.nodes", graph, count=100_000)


# --- create_graph ------------------------------------------------------------------------------


def test_the_seed_function_gives_20_14_and_6(client: Client) -> None:
    f, x = seed_function(client)
    assert record(client, "f", f)["data"] == 20.0
    first = client.call("graph.grads", "f", f, [x], create_graph=True)
    assert first["grads"] == {str(x): 14.0}
    df = first["grad_ids"][str(x)]
    got = record(client, "f", df)
    assert (got["data"], got["label"]) == (14.0, "d f/d x")
    assert state(client, "f")["total"] == df + 1  # the gradient node is the newest
    assert first["added"] == df + 1 - (f + 1)  # (f was the newest node before)
    # the slope of the slope: graph.grads from the gradient node, as numbers and as nodes
    assert client.call("graph.grads", "f", df, [x])["grads"] == {str(x): 6.0}
    second = client.call("graph.grads", "f", df, x, create_graph=True)
    assert second["grads"] == {str(x): 6.0}
    d2 = record(client, "f", second["grad_ids"][str(x)])
    assert (d2["data"], d2["label"]) == (6.0, "d (d f/d x)/d x")
    # the gradient nodes are nodes of the graph: node.set recomputes them with the rest
    client.call("node.set", "f", x, 2.0)
    assert record(client, "f", f)["data"] == 9.0
    assert record(client, "f", df)["data"] == 8.0  # 6x - 4


def test_tanh_gives_one_minus_t2_and_minus_2t_one_minus_t2(client: Client) -> None:
    client.call("graph.create", "t")
    made = client.call("graph.eval", "t", "tanh(x)", {"x": 0.7}, label="t")
    t, x = made["root"], made["leaves"]["x"]
    value = math.tanh(0.7)
    first = client.call("graph.backward", "t", t, create_graph=True)
    assert set(first["grad_ids"]) == {str(x)}
    d1 = first["grad_ids"][str(x)]
    got = record(client, "t", d1)
    assert got["label"] == "d t/d x"
    assert got["data"] == pytest.approx(1 - value**2, rel=1e-12)
    assert record(client, "t", x)["grad"] == pytest.approx(1 - value**2, rel=1e-12)
    second = client.call("graph.backward", "t", d1, create_graph=True)
    d2 = record(client, "t", second["grad_ids"][str(x)])
    assert d2["data"] == pytest.approx(-2 * value * (1 - value**2), rel=1e-12)
    assert d2["label"] == "d (d t/d x)/d x"


def test_backward_adds_a_gradient_node_per_leaf_and_keeps_grads_floats(client: Client) -> None:
    ids = labels(client)
    before = state(client, "demo")
    done = client.call("graph.backward", "demo", ids["o"], create_graph=True)
    after = state(client, "demo")
    assert done["reached"] == before["total"] == 10
    assert done["added"] == after["total"] - before["total"] > 0
    assert done["version"] == after["version"] > before["version"]
    leaves = {name: ids[name] for name in SEED}
    assert done["grad_ids"].keys() == {str(i) for i in leaves.values()}
    nodes = after["nodes"]
    for name, leaf in leaves.items():
        grad_node = nodes[done["grad_ids"][str(leaf)]]
        assert grad_node["label"] == f"d o/d {name}"
        assert grad_node["data"] == pytest.approx(SEED_GRADS[name], abs=1e-12)
        assert grad_node["id"] >= before["total"]  # each a new node, even d o/d w2 (0)
        assert type(nodes[leaf]["grad"]) is float  # .grad is the number, as without it
        assert nodes[leaf]["grad"] == pytest.approx(SEED_GRADS[name], abs=1e-12)
    assert all(type(n["grad"]) is float for n in nodes)
    assert all(n["grad"] == 0.0 for n in nodes[before["total"]:])  # (not reached by o)
    # the old nodes are as a plain backward pass leaves them
    plain = client.call("graph.backward", "demo", ids["o"])
    assert plain["reached"] == 10 and "grad_ids" not in plain
    assert state(client, "demo")["nodes"][:10] == nodes[:10]


def test_grads_of_computed_nodes_repeated_ids_and_unreached_nodes(client: Client) -> None:
    ids = labels(client)
    unused = client.call("node.leaf", "demo", 5.0, label="z")["id"]
    done = client.call("graph.grads", "demo", ids["o"], [ids["n"], ids["x1"], ids["n"], unused],
                       create_graph=True)
    assert done["grad_ids"].keys() == {str(ids["n"]), str(ids["x1"]), str(unused)}
    assert done["grads"][str(unused)] == 0.0
    zero = record(client, "demo", done["grad_ids"][str(unused)])
    assert (zero["data"], zero["label"], zero["op"]) == (0.0, "d o/d z", None)
    dn = record(client, "demo", done["grad_ids"][str(ids["n"])])
    assert dn["label"] == "d o/d n"
    assert dn["data"] == pytest.approx(1 - math.tanh(record(client, "demo", ids["n"])["data"])
                                       ** 2, rel=1e-12)


def test_subscribers_see_the_new_version(server: ThreadedServer, client: Client) -> None:
    ids = labels(client)
    with Client(server.tcp) as watcher:
        watcher.call("graph.subscribe", "demo")
        done = client.call("graph.grads", "demo", ids["o"], [ids["x1"]], create_graph=True)
        deadline = time.monotonic() + TIMEOUT
        seen: list[dict[str, Any]] = []
        while not any(p["version"] == done["version"] for p in seen):
            assert time.monotonic() < deadline, seen
            seen += [params[0] for method, params in watcher.poll(0.05)
                     if method == "graph.changed"]
        last = next(p for p in seen if p["version"] == done["version"])
        assert last["nodes"] == 10 + done["added"]


def test_remote_graph_takes_create_graph(client: Client) -> None:
    demo = client.graph("demo")
    ids = labels(client)
    made = demo.grads(ids["o"], [ids["b"]], create_graph=True)
    assert record(client, "demo", made["grad_ids"][str(ids["b"])])["label"] == "d o/d b"
    every = demo.backward(ids["o"], create_graph=True)
    assert len(every["grad_ids"]) == 5
    assert "grad_ids" not in demo.backward(ids["o"])
    assert "grad_ids" not in demo.grads(ids["o"], [ids["b"]])


# --- refusals: nothing changes -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["graph.backward", "graph.grads"])
def test_over_the_node_limit_is_refused_and_nothing_changes(
        make_server: Callable[..., ThreadedServer], method: str) -> None:
    srv = make_server(max_nodes=13)  # the demo's 10 nodes fit, its 7 gradient nodes do not
    with Client(srv.tcp) as c:
        ids = labels(c)
        c.call("node.set", "demo", ids["x1"], 1.5)  # (grads now stale: they must stay so)
        before = state(c, "demo")
        extra = [[ids[name] for name in SEED]] if method == "graph.grads" else []
        with pytest.raises(LimitExceededError) as caught:
            c.call(method, "demo", ids["o"], *extra, create_graph=True)
        assert f"{method}: create_graph: the gradient graph of node {ids['o']} does not fit " \
               "in graph 'demo', which holds 10 nodes of its limit of 13" in str(caught.value)
        assert caught.value.data == {"limit": "max_nodes", "max": 13}
        assert state(c, "demo") == before
        c.call(method, "demo", ids["o"], *extra)  # a plain pass still works
        assert state(c, "demo")["total"] == 10


def test_an_op_without_a_graph_rule_is_op_failed_naming_op_and_plugin(
        client: Client, install_ops: Callable[..., None]) -> None:
    install_ops(softplus_plugin())
    client.call("graph.create", "s")
    made = client.call("graph.eval", "s", "softplus(x*x) + tanh(x)", {"x": 0.5}, label="y")
    y, x = made["root"], made["leaves"]["x"]
    before = state(client, "s")
    for call in (lambda: client.call("graph.backward", "s", y, create_graph=True),
                 lambda: client.call("graph.grads", "s", y, [x], create_graph=True)):
        with pytest.raises(OpFailedError) as caught:
            call()
        message = str(caught.value)
        assert "create_graph: op 'softplus' from plugin 'softplus-test' at node" in message
        assert "OpDef.grad_graph" in message
        assert caught.value.data["op"] == "softplus"
        assert caught.value.data["plugin"] == "softplus-test"
        assert caught.value.data["reason"] == "no_grad_graph"
        assert state(client, "s") == before
    expected = 2 * 0.5 * sigmoid(0.25) + 1 - math.tanh(0.5) ** 2
    assert client.call("graph.grads", "s", y, [x])["grads"][str(x)] == pytest.approx(expected)


def test_a_float_rule_failing_after_the_gradient_nodes_were_made_adds_nothing(
        client: Client, install_ops: Callable[..., None]) -> None:
    """The gradient nodes are made first, then the plain pass runs: when it fails (here the
    float rule raises, while the graph rule works), the nodes made are taken back."""
    def right(x: Any, out: Any) -> tuple[Any]:
        return ((-x).exp().__radd__(1.0).__rtruediv__(1.0),)  # 1 / (1 + e^-x), from ops

    def broken(x: float, out: float) -> tuple[float]:
        raise ZeroDivisionError("the float rule is broken")

    install_ops(softplus_plugin(right, broken))
    client.call("graph.create", "s")
    made = client.call("graph.eval", "s", "softplus(x) * 2", {"x": 0.5}, label="y")
    y, x = made["root"], made["leaves"]["x"]
    before = state(client, "s")
    with pytest.raises(OpFailedError, match="the float rule is broken"):
        client.call("graph.grads", "s", y, [x], create_graph=True)
    assert state(client, "s") == before


def test_a_big_graph_gets_its_gradient_nodes_too(client: Client) -> None:
    """A chain of 3,000 tanh: a pass big enough for a worker thread, all its numbers right."""
    client.call("graph.create", "chain")
    x = client.call("node.leaf", "chain", 0.3, label="x")["id"]
    steps = [{"op": "tanh", "inputs": [x]}] + [{"op": "tanh", "inputs": [f"${k}"]}
                                               for k in range(2_999)]
    end = client.call("graph.batch", "chain", steps)["ids"][-1]

    def first(value: float) -> float:  # d end/d x, as the float pass computes it
        slope = 1.0
        for _ in range(3_000):
            value = math.tanh(value)
            slope *= 1 - value * value
        return slope

    done = client.call("graph.grads", "chain", end, [x], create_graph=True)
    assert done["added"] > 3_000
    d1 = done["grad_ids"][str(x)]
    assert record(client, "chain", d1)["data"] == pytest.approx(first(0.3), rel=1e-12)
    second = client.call("graph.grads", "chain", d1, [x])["grads"][str(x)]
    h = 1e-5
    assert second == pytest.approx((first(0.3 + h) - first(0.3 - h)) / (2 * h), rel=1e-5)


@pytest.mark.parametrize("bad", [1, 0, "yes", None, [True], {"a": 1}])
@pytest.mark.parametrize("method", ["graph.backward", "graph.grads"])
def test_create_graph_must_be_a_bool(client: Client, method: str, bad: Any) -> None:
    ids = labels(client)
    extra = [[ids["x1"]]] if method == "graph.grads" else []
    before = state(client, "demo")
    with pytest.raises(InvalidParamsError, match=rf"{method}: create_graph must be true or "
                                                 "false, got"):
        client.call(method, "demo", ids["o"], *extra, create_graph=bad)
    assert state(client, "demo") == before


def test_unknown_nodes_and_misspelt_option(client: Client) -> None:
    ids = labels(client)
    before = state(client, "demo")
    with pytest.raises(UnknownNodeError):
        client.call("graph.backward", "demo", 99, create_graph=True)
    with pytest.raises(UnknownNodeError):
        client.call("graph.grads", "demo", ids["o"], [ids["x1"], 99], create_graph=True)
    with pytest.raises(InvalidParamsError, match="create_graph"):
        client.call("graph.backward", "demo", ids["o"], create_grpah=True)
    assert state(client, "demo") == before


# --- gradcheck order 2 -------------------------------------------------------------------------


def test_gradcheck_order_2_on_the_neuron(client: Client) -> None:
    ids = labels(client)
    before = state(client, "demo")
    report = client.call("graph.gradcheck", "demo", ids["o"], order=2)
    assert report["ok"] is True and report["order"] == 2
    assert (report["chosen"], report["total_leaves"], report["eps"]) == ("all", 5, 1e-5)
    leaf_ids = sorted(ids[name] for name in SEED)
    assert sorted(report["columns"]) == leaf_ids
    assert [row["id"] for row in report["leaves"]] == report["columns"]
    graph = neuron()  # (the served graph's twin, same ids)
    expected = hessian(graph.nodes[ids["o"]], [graph.nodes[i] for i in report["columns"]])
    for row, want in zip(report["leaves"], expected, strict=True):
        assert row["analytic"] == pytest.approx(want, abs=1e-12)
        assert row["numeric"] == pytest.approx(want, rel=1e-4, abs=1e-6)
        assert row["ok"] is True and row["error"] < 1e-6
    assert state(client, "demo") == before  # a private copy: the graph is as it was
    first = client.call("graph.gradcheck", "demo", ids["o"])
    assert first["order"] == 1 and "bad_ops" in first


def test_gradcheck_order_2_sample_seed_and_leaves(client: Client) -> None:
    ids = labels(client)
    o = ids["o"]
    first = client.call("graph.gradcheck", "demo", o, sample=2, seed=3)
    second = client.call("graph.gradcheck", "demo", o, sample=2, seed=3, order=2)
    assert (second["chosen"], second["sample"], second["seed"]) == ("sample", 2, 3)
    assert [r["id"] for r in second["leaves"]] == [r["id"] for r in first["leaves"]]
    assert all(len(r["analytic"]) == 2 for r in second["leaves"])
    given = client.call("graph.gradcheck", "demo", o, leaves=[ids["b"], ids["x1"]], order=2)
    assert given["chosen"] == "given" and sorted(given["columns"]) == sorted([ids["b"],
                                                                              ids["x1"]])
    with pytest.raises(InvalidParamsError, match="does not depend on leaf"):
        unused = client.call("node.leaf", "demo", 1.0)["id"]
        client.call("graph.gradcheck", "demo", o, leaves=[unused], order=2)


def test_gradcheck_order_2_counts_against_the_leaf_limit(
        make_server: Callable[..., ThreadedServer]) -> None:
    srv = make_server(max_gradcheck_leaves=3)
    with Client(srv.tcp) as c:
        o = labels(c)["o"]
        with pytest.raises(LimitExceededError, match="gradcheck checks at most 3"):
            c.call("graph.gradcheck", "demo", o, order=2)
        assert len(c.call("graph.gradcheck", "demo", o, order=2, sample=3)["leaves"]) == 3


@pytest.mark.parametrize("bad", [0, 3, -1, "2", 2.0, True, None])
def test_a_bad_order_is_invalid_params(client: Client, bad: Any) -> None:
    with pytest.raises(InvalidParamsError, match=r"graph.gradcheck: order must be"):
        client.call("graph.gradcheck", "demo", labels(client)["o"], order=bad)


def test_gradcheck_order_2_reports_a_wrong_graph_rule(
        server: ThreadedServer, client: Client, install_ops: Callable[..., None]) -> None:
    def constant(x: Any, out: Any) -> tuple[float]:
        # the right first derivative, as a constant: its own derivative is 0, not s(1 - s)
        return (sigmoid(x.data),)

    install_ops(softplus_plugin(constant))
    graph = Graph("wrong")
    x, y = graph.leaf(0.5, "x"), graph.leaf(2.0, "y")
    out = x.softplus() * y
    server.sync(server.server.add_graph, graph)
    assert client.call("graph.gradcheck", "wrong", out.id)["ok"] is True  # order 1 is right
    report = client.call("graph.gradcheck", "wrong", out.id, order=2)
    assert report["ok"] is False
    bad = [row for row in report["leaves"] if not row["ok"]]
    assert [row["label"] for row in bad] == ["x"]
    column = report["columns"].index(x.id)
    assert bad[0]["analytic"][column] == 0.0
    s = sigmoid(0.5)
    assert bad[0]["numeric"][column] == pytest.approx(2 * s * (1 - s), rel=1e-4)


def test_gradcheck_order_2_over_an_op_without_a_graph_rule(
        server: ThreadedServer, client: Client, install_ops: Callable[..., None]) -> None:
    install_ops(softplus_plugin())
    graph = Graph("none")
    x = graph.leaf(0.5, "x")
    out = x.softplus()
    server.sync(server.server.add_graph, graph)
    with pytest.raises(OpFailedError, match=r"graph.gradcheck: order 2: op 'softplus' from "
                                            r"plugin 'softplus-test'"):
        client.call("graph.gradcheck", "none", out.id, order=2)


# --- durability --------------------------------------------------------------------------------


def test_a_data_server_keeps_the_gradient_nodes_across_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "graphs.sqlite3"
    server = ProcessServer("--no-demo", "--data", str(store))
    try:
        with Client(server.url) as c:
            f, x = seed_function(c)
            done = c.call("graph.grads", "f", f, [x], create_graph=True)
            df = done["grad_ids"][str(x)]
            second = c.call("graph.grads", "f", df, [x], create_graph=True)
            before = state(c, "f")
        server.process.send_signal(signal.SIGKILL)  # answered, so committed: no clean stop
        server.process.wait(TIMEOUT)
    finally:
        server.stop()
    server = ProcessServer("--no-demo", "--data", str(store))
    try:
        with Client(server.url) as c:
            assert state(c, "f") == before
            got = record(c, "f", second["grad_ids"][str(x)])
            assert (got["data"], got["label"]) == (6.0, "d (d f/d x)/d x")
            assert record(c, "f", x)["grad"] == 6.0
            assert c.call("graph.grads", "f", df, [x])["grads"] == {str(x): 6.0}
    finally:
        server.stop()


def test_the_library_agrees(client: Client) -> None:
    """The server adds the nodes the library's `opgraph.grad` adds to a local twin (the same
    expression built the way graph.eval builds it), with the same ops, labels and numbers."""
    f, x = seed_function(client)
    local = Graph("f")
    lf, lx = expr.build("3*x**2 - 4*x + 5", {"x": 3.0}, graph=local)
    lf.label = "f"
    size = len(local)
    opgraph.grad(lf, lx["x"], create_graph=True)
    served = client.call("graph.grads", "f", f, [x], create_graph=True)
    assert served["added"] == len(local) - size
    nodes = state(client, "f")["nodes"]
    assert [(n["op"], n["label"], n["data"], n["inputs"]) for n in nodes] == [
        (v.op, v.label, v.data, [i.id for i in v.inputs]) for v in local.nodes]
