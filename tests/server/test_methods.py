"""Every method against a real server: the seed's neuron built and differentiated remotely."""

from __future__ import annotations

import math
import sys
from typing import Any

import msgpack
import pytest
from opgraph_client import (
    BadExpressionError,
    BadFileError,
    Client,
    GraphExistsError,
    InvalidParamsError,
    NotALeafError,
    OpFailedError,
    ServerError,
    UnknownGraphError,
)
from server_harness import SEED, SEED_GRADS, SEED_O, Raw, ThreadedServer

import opgraph
from opgraph import Value

CORE_METHODS = {
    "initialize", "shutdown", "ops.list", "graph.create", "graph.list", "graph.drop",
    "graph.export", "graph.import", "node.leaf", "node.apply", "node.set", "node.get",
    "graph.batch", "graph.eval", "graph.backward", "graph.grads", "graph.gradcheck",
    "graph.analyze", "graph.diagnostics", "graph.render", "graph.subscribe",
    "graph.unsubscribe", "graph.publish",
}


def grads_by_label(client: Client, graph: str, ids: list[int]) -> dict[str, float]:
    nodes = client.call("node.get", graph, ids)["nodes"]
    return {n["label"]: n["grad"] for n in nodes}


def labelled(client: Client, graph: str = "demo") -> dict[str, dict[str, Any]]:
    """The graph's labelled node records by label (ids depend on how a graph was built)."""
    return {n["label"]: n for n in client.call("graph.nodes", graph)["nodes"] if n["label"]}


def assert_seed_grads(grads: dict[str, float]) -> None:
    for label, expected in SEED_GRADS.items():
        assert grads[label] == pytest.approx(expected, abs=1e-9), label


def test_initialize_describes_the_server(url: str) -> None:
    with Client(url) as client:
        info = client.server_info
    assert info["name"] == "opgraph"
    assert info["version"] == opgraph.__version__
    assert info["protocol"] == 1
    assert set(info["methods"]) >= CORE_METHODS
    ops = {op["name"]: op for op in info["ops"]}
    assert {"add", "mul", "tanh", "exp", "log", "relu"} <= set(ops)
    assert ops["tanh"]["arity"] == 1 and ops["mul"]["symbol"] == "*"
    assert ops["mul"]["plugin"] and ops["mul"]["doc"]
    assert info["limits"]["max_nodes"] == 2_000_000
    assert info["limits"]["max_message_bytes"] == 64 * 1024 * 1024


def test_neuron_step_by_step(url: str) -> None:
    with Client(url) as c:
        created = c.call("graph.create", "n")
        assert created == {"name": "n", "nodes": 0, "version": 0, "subscribers": 0}
        ids: dict[str, int] = {}
        version = 0
        for name in ("x1", "x2", "w1", "w2", "b"):
            made = c.call("node.leaf", "n", SEED[name], {"label": name})
            assert made["data"] == SEED[name] and made["version"] > version
            version = made["version"]
            ids[name] = made["id"]
        x1w1 = c.call("node.apply", "n", "mul", [ids["x1"], ids["w1"]], {"label": "x1*w1"})
        x2w2 = c.call("node.apply", "n", "mul", [ids["x2"], ids["w2"]], {"label": "x2*w2"})
        s = c.call("node.apply", "n", "add", [x1w1["id"], x2w2["id"]])
        n = c.call("node.apply", "n", "add", [s["id"], ids["b"]], {"label": "n"})
        o = c.call("node.apply", "n", "tanh", n["id"], {"label": "o"})
        assert x1w1["data"] == -6.0
        assert n["data"] == pytest.approx(0.8813735870195432)
        assert o["data"] == pytest.approx(SEED_O)
        assert o["version"] > n["version"] > version
        back = c.call("graph.backward", "n", o["id"])
        assert back["root"] == o["id"] and back["reached"] == 10
        assert back["version"] > o["version"]
        assert_seed_grads(grads_by_label(c, "n", list(ids.values())))
        record = c.call("node.get", "n", o["id"])["nodes"][0]
        assert record == {"id": o["id"], "op": "tanh", "symbol": "tanh", "inputs": [n["id"]],
                          "attrs": {}, "data": pytest.approx(SEED_O), "grad": 1.0,
                          "label": "o", "source": None}
        grads = c.call("graph.grads", "n", o["id"], [ids["x1"], ids["w1"]])
        assert grads["grads"] == {str(ids["x1"]): pytest.approx(-1.5),
                                  str(ids["w1"]): pytest.approx(1.0)}
        info = c.call("graph.info", "n")
        assert info["nodes"] == 10 and info["outputs"] == [o["id"]]
        assert sorted(info["leaves"]) == sorted(ids.values())


def test_op_attributes_as_options(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        c.call("graph.create", "p")
        x = c.call("node.leaf", "p", 3.0)["id"]
        cube = c.call("node.apply", "p", "pow_const", [x], {"exponent": 3, "label": "x**3"})
        assert cube["data"] == 27.0
        c.call("graph.backward", "p", cube["id"])
        assert c.call("node.get", "p", x)["nodes"][0]["grad"] == pytest.approx(27.0)
        with pytest.raises(InvalidParamsError):
            c.call("node.apply", "p", "pow_const", [x], {"exponentt": 3})


def seed_steps() -> list[dict[str, object]]:
    return [
        {"leaf": SEED["x1"], "label": "x1"},                     # $0
        {"leaf": SEED["x2"], "label": "x2"},                     # $1
        {"leaf": SEED["w1"], "label": "w1"},                     # $2
        {"leaf": SEED["w2"], "label": "w2"},                     # $3
        {"leaf": SEED["b"], "label": "b"},                       # $4
        {"op": "mul", "inputs": ["$0", "$2"], "label": "x1*w1"},  # $5
        {"op": "mul", "inputs": ["$1", "$3"], "label": "x2*w2"},  # $6
        {"op": "add", "inputs": ["$5", "$6"]},                   # $7
        {"op": "add", "inputs": ["$7", "$4"], "label": "n"},     # $8
        {"op": "tanh", "inputs": ["$8"], "label": "o"},          # $9
    ]


def test_neuron_through_batch(url: str) -> None:
    with Client(url) as c:
        c.call("graph.create", "nb")
        c.call("node.leaf", "nb", 42.0)  # ids in the batch start after existing nodes
        result = c.call("graph.batch", "nb", seed_steps())
        assert result["ids"] == list(range(1, 11))
        o = result["ids"][9]
        assert c.call("node.get", "nb", o)["nodes"][0]["data"] == pytest.approx(SEED_O)
        c.call("graph.backward", "nb", o)
        assert_seed_grads(grads_by_label(c, "nb", result["ids"][:5]))
        # Steps may also refer to existing nodes by id.
        more = c.call("graph.batch", "nb", [{"leaf": 3}, {"op": "mul", "inputs": [o, "$0"]}])
        assert c.call("node.get", "nb", more["ids"][1])["nodes"][0]["data"] == \
            pytest.approx(SEED_O * 3)


def test_neuron_through_eval(url: str) -> None:
    with Client(url) as c:
        c.call("graph.create", "ne")
        bindings = dict(SEED)
        result = c.call("graph.eval", "ne", "tanh(x1*w1 + x2*w2 + b)", bindings, {"label": "o"})
        assert result["data"] == pytest.approx(SEED_O)
        assert set(result["leaves"]) == set(SEED)
        root = result["root"]
        assert c.call("node.get", "ne", root)["nodes"][0]["label"] == "o"
        grads = c.call("graph.grads", "ne", root, [result["leaves"][k] for k in SEED])
        by_name = {k: grads["grads"][str(result["leaves"][k])] for k in SEED}
        assert_seed_grads(by_name)
        # Names bound to existing nodes by id, or found by label.
        x1 = result["leaves"]["x1"]
        again = c.call("graph.eval", "ne", "x1 * 2 + w1", {"x1": {"id": x1}})
        assert again["data"] == pytest.approx(2.0 * 2 + -3.0)
        assert again["leaves"]["x1"] == x1
        # Neovim sends an empty table as an empty array.
        assert c.call("graph.eval", "ne", "1 + 2", [])["data"] == 3.0


def test_eval_refuses_python(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        before = c.call("graph.info", "demo")
        for text in ("__import__('os').system('true')", "x.__class__", "open('f')",
                     "lambda: 1", "[1, 2]", "x1 +"):
            with pytest.raises(BadExpressionError) as err:
                c.call("graph.eval", "demo", text)
            assert err.value.name == "bad_expression", text
        with pytest.raises(BadExpressionError, match=r"no op named 'sofplus'.*column 1"):
            c.call("graph.eval", "demo", "sofplus(x1)")
        assert c.call("graph.info", "demo") == before


def test_export_import_round_trip(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        original = c.call("node.get", "demo", list(range(10)))["nodes"]
        document = c.call("graph.export", "demo")
        assert document["name"] == "demo" and len(document["nodes"]) == 10
        made = c.call("graph.import", "copy", document)
        assert made["name"] == "copy" and made["nodes"] == 10
        assert c.call("node.get", "copy", list(range(10)))["nodes"] == original
        # The msgpack bytes and JSON text forms too.
        blob = c.call("graph.export", "demo", {"format": "msgpack"})
        assert isinstance(blob, bytes)
        c.call("graph.import", "copy2", blob)
        assert c.call("node.get", "copy2", list(range(10)))["nodes"] == original
        text = c.call("graph.export", "demo", {"format": "json"})
        assert isinstance(text, str) and '"x1"' in text
        # An existing name needs replace; replacing bumps the version.
        with pytest.raises(GraphExistsError):
            c.call("graph.import", "copy", document)
        old_version = c.call("graph.info", "copy")["version"]
        replaced = c.call("graph.import", "copy", document, {"replace": True})
        assert replaced["version"] > old_version
        assert c.call("node.get", "copy", list(range(10)))["nodes"] == original


def test_import_refuses_bad_documents(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        document = c.call("graph.export", "demo")
        bad_op = {**document, "nodes": [dict(n) for n in document["nodes"]]}
        bad_op["nodes"][9]["op"] = "tahn"
        newer = {**document, "version": 999}
        for data in (bad_op, newer, {"nodes": "x"}, b"\x93\x01\x02", b"not msgpack"):
            with pytest.raises(BadFileError) as err:
                c.call("graph.import", "bad", data)
            assert err.value.name == "bad_file", data
        with pytest.raises(InvalidParamsError):
            c.call("graph.import", "bad", 12)
        assert "bad" not in {g["name"] for g in c.call("graph.list")}
        # A failed replacement leaves the old graph as it was.
        before = c.call("graph.info", "demo")
        with pytest.raises(BadFileError):
            c.call("graph.import", "demo", bad_op, {"replace": True})
        assert c.call("graph.info", "demo") == before
        assert c.call("graph.export", "demo") == document


def test_publish_sends_local_graph_with_sources(url: str) -> None:
    here = __file__
    with opgraph.track_source():
        x1 = Value(2.0, label="x1"); line_x1 = sys._getframe().f_lineno  # noqa: E702
        w1 = Value(-3.0, label="w1")
        x2 = Value(0.0, label="x2")
        w2 = Value(1.0, label="w2")
        b = Value(6.8813735870195432, label="b")
        o = (x1 * w1 + x2 * w2 + b).tanh(); line_o = sys._getframe().f_lineno  # noqa: E702
        o.label = "o"
    o.backward()
    with Client(url) as c:
        published = c.publish("local", o)
        assert published["name"] == "local" and published["nodes"] == 10
        nodes = c.call("graph.nodes", "local")["nodes"]
        by_label = {n["label"]: n for n in nodes if n["label"]}
        assert by_label["x1"]["source"] == [here, line_x1]
        assert by_label["o"]["source"] == [here, line_o]
        assert all(n["source"] and n["source"][0] == here for n in nodes)
        assert by_label["o"]["data"] == pytest.approx(SEED_O)
        assert_seed_grads({k: by_label[k]["grad"] for k in SEED_GRADS})
        # Publishing again replaces the graph; the version moves on.
        v1 = c.call("graph.info", "local")["version"]
        again = c.publish("local", o)
        assert again["version"] > v1
    # The local values are untouched: they joined no graph.
    assert o.data == pytest.approx(SEED_O) and x1.grad == pytest.approx(-1.5)


def test_node_set_recomputes_downstream(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        version = c.call("graph.info", "demo")["version"]
        ids = {label: n["id"] for label, n in labelled(c).items()}
        result = c.call("node.set", "demo", ids["x2"], 1.5)
        assert result["version"] > version
        downstream = ["x2", "x2*w2", "x1*w1 + x2*w2", "n", "o"]
        assert sorted(result["changed"]) == sorted(ids[k] for k in downstream)
        nodes = labelled(c)
        assert nodes["x2"]["data"] == 1.5
        assert nodes["x2*w2"]["data"] == 1.5
        assert nodes["o"]["data"] == pytest.approx(math.tanh(-6.0 + 1.5 + SEED["b"]))
        assert nodes["x1*w1"]["data"] == -6.0  # upstream of nothing that changed
        with pytest.raises(NotALeafError) as err:
            c.call("node.set", "demo", ids["o"], 1.0)
        assert err.value.name == "not_a_leaf"


def test_node_set_that_breaks_an_op_changes_nothing(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        c.call("graph.create", "l")
        x = c.call("node.leaf", "l", 2.0)["id"]
        y = c.call("node.apply", "l", "log", [x])["id"]
        before = c.call("node.get", "l", [x, y])
        with pytest.raises(OpFailedError):
            c.call("node.set", "l", x, -1.0)
        assert c.call("node.get", "l", [x, y]) == before


def test_batch_is_all_or_nothing(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        before_doc = c.call("graph.export", "demo")
        before = c.call("graph.info", "demo")
        failing = [
            [{"leaf": 1.0}, {"op": "mul", "inputs": ["$0", 0]}, {"op": "nope", "inputs": [0]}],
            [{"leaf": 1.0}, {"op": "add", "inputs": ["$0", "$5"]}],
            [{"leaf": 1.0}, {"op": "add", "inputs": ["$0", 999]}],
            [{"leaf": -1.0}, {"op": "log", "inputs": ["$0"]}],
            [{"leaf": 1.0}, {"op": "add", "inputs": ["$0"]}],
            [{"leaf": 1.0}, {"op": "add", "inputs": ["$0", "$0"], "label": 5}],
            [{"leaf": 1.0}, {"leaf": "one"}],
            [{"leaf": 1.0}, {"what": 1}],
            [{"leaf": 1.0}, "step"],
            [{"leaf": 1.0}, {"op": "pow_const", "inputs": ["$0"], "attrs": {"bad": 1}}],
        ]
        names = []
        for steps in failing:
            with pytest.raises(ServerError) as err:  # (of the kinds listed below)
                c.call("graph.batch", "demo", steps)
            names.append(err.value.name)
            assert c.call("graph.info", "demo") == before, steps
        assert names == ["unknown_op", "invalid_params", "unknown_node", "op_failed",
                         "invalid_params", "invalid_params", "invalid_params",
                         "invalid_params", "invalid_params", "invalid_params"]
        assert c.call("graph.export", "demo")["nodes"] == before_doc["nodes"]
        # The next node gets the id the failed batches would have used.
        assert c.call("node.leaf", "demo", 1.0)["id"] == 10


def test_eval_failure_changes_nothing(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        before = c.call("graph.info", "demo")
        # An op failing on the way is op_failed (the work failed, not the request), and the
        # message says where it is in the expression.
        with pytest.raises(OpFailedError, match=r"'log' failed.*column 10"):
            c.call("graph.eval", "demo", "x1 * 3 + log(0 - x)", {"x": 1.0})
        assert c.call("graph.info", "demo") == before


def test_render_formats(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        svg = c.call("graph.render", "demo")
        assert svg["format"] == "svg" and svg["data"].lstrip().startswith(("<?xml", "<svg"))
        assert "data 2.0000" in svg["data"] and "grad &#45;1.5000" in svg["data"]
        assert ">x1<" in svg["data"] and ">tanh<" in svg["data"]
        dot = c.call("graph.render", "demo", {"format": "dot", "rankdir": "TB"})["data"]
        assert "{ x1 | data 2.0000 | grad -1.5000 }" in dot and "rankdir=TB" in dot
        png = c.call("graph.render", "demo", {"format": "png"})["data"]
        assert isinstance(png, bytes) and png.startswith(b"\x89PNG")
        x1 = labelled(c)["x1"]["id"]
        around = c.call("graph.render", "demo", {"format": "dot", "around": x1, "depth": 1})
        assert "x1" in around["data"] and "{ o |" not in around["data"]


def test_analyze(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        ids = {label: n["id"] for label, n in labelled(c).items()}
        report = c.call("graph.analyze", "demo")
        assert report["nodes"] == 10 and report["edges"] == 9
        assert report["root"] == ids["o"] and report["depth"] == 5
        assert report["leaves"] == sorted(ids[k] for k in SEED)
        assert report["outputs"] == [ids["o"]]
        assert report["ops"] == {"add": 2, "mul": 2, "tanh": 1}
        assert report["critical_path"][-1] == ids["o"] and len(report["critical_path"]) == 5
        assert ids["n"] in report["dominators"]
        assert report["version"] == c.call("graph.info", "demo")["version"]
        focused = c.call("graph.analyze", "demo", {"leaf": ids["x1"], "node": ids["n"]})
        affected = focused["affects"][str(ids["x1"])]
        assert sorted(affected) == sorted(ids[k] for k in ("x1*w1", "x1*w1 + x2*w2", "n", "o"))
        assert sorted(focused["influences"][str(ids["n"])]) == sorted(ids[k] for k in SEED)


def test_diagnostics(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        assert c.call("graph.diagnostics", "demo")["diagnostics"] == []
        c.call("graph.create", "sat")
        made = c.call("graph.eval", "sat", "tanh(x * 10) + 0 * y", {"x": 3.0, "y": 1.0})
        found = c.call("graph.diagnostics", "sat")
        codes = {d["code"] for d in found["diagnostics"]}
        assert "saturated-tanh" in codes
        assert found["version"] >= made["version"] and found["problems"] == []
        for d in found["diagnostics"]:
            assert set(d) == {"code", "severity", "node", "message", "plugin"}


def test_gradcheck(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        ids = {label: n["id"] for label, n in labelled(c).items()}
        report = c.call("graph.gradcheck", "demo", ids["o"])
        assert report["ok"] is True and report["root"] == ids["o"] and report["bad_ops"] == []
        leaves = {leaf["label"]: leaf for leaf in report["leaves"]}
        assert set(leaves) == set(SEED_GRADS)
        for label, expected in SEED_GRADS.items():
            assert leaves[label]["analytic"] == pytest.approx(expected, abs=1e-9)
            assert leaves[label]["numeric"] == pytest.approx(expected, abs=1e-6)
        # The graph's own gradients are left as they were.
        assert_seed_grads(grads_by_label(c, "demo", [ids[k] for k in SEED]))
        with pytest.raises(InvalidParamsError):
            c.call("graph.gradcheck", "demo", ids["o"], {"eps": 2})


def test_graph_lifecycle(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        assert [g["name"] for g in c.call("graph.list")] == ["demo"]
        c.call("graph.create", "b")
        c.call("graph.create", "a")
        assert [g["name"] for g in c.call("graph.list")] == ["a", "b", "demo"]
        with pytest.raises(GraphExistsError):
            c.call("graph.create", "a")
        c.call("node.leaf", "a", 1.0)
        replaced = c.call("graph.create", "a", {"replace": True})
        assert replaced["nodes"] == 0 and replaced["version"] > 1
        assert c.call("graph.drop", "a") == {"graph": "a", "dropped": True}
        with pytest.raises(UnknownGraphError) as err:
            c.call("graph.info", "a")
        assert "no graph named 'a'" in err.value.message
        with pytest.raises(UnknownGraphError) as err:
            c.call("graph.info", "dem")
        assert "did you mean 'demo'" in err.value.message
        page = c.call("graph.nodes", "demo", {"start": 8, "count": 5})
        assert page["total"] == 10 and [n["id"] for n in page["nodes"]] == [8, 9]
        assert c.call("ops.list") == c.server_info["ops"]


def test_shutdown_answers_then_closes(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        assert raw.call("shutdown") == (None, None)
        assert raw.closed()


def test_results_survive_msgpack_edge_values(server: ThreadedServer) -> None:
    """Infinities and NaN travel as msgpack floats; huge ints as exact ints."""
    with Client(server.tcp) as c:
        c.call("graph.create", "edge")
        big = c.call("node.leaf", "edge", 2**62)
        assert big["data"] == 2**62
        inf = c.call("node.leaf", "edge", float("inf"))
        assert inf["data"] == float("inf")
        e = c.call("node.apply", "edge", "exp", [c.call("node.leaf", "edge", 1000.0)["id"]])
        assert e["data"] == float("inf") or math.isinf(e["data"])
        doc = c.call("graph.export", "edge", {"format": "msgpack"})
        assert msgpack.unpackb(doc, raw=False) is not None
