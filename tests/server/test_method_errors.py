"""Every method's bad arguments get an error of the right name and code, in both shapes.

Also: pynvim's ``tcp_session`` (bin method names, a ``nvim_set_client_info`` notification
first, ``Exception(error[1])`` for errors) works against the server and shows errors properly,
and Neovim's empty options (an empty Lua table arrives as an empty array) are no options.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import pytest
from opgraph_client import Client
from opgraph_server.errors import BAD_REQUEST, CATALOGUE, SERVER_FAILURE
from opgraph_server.methods import METHODS
from server_harness import TIMEOUT, Raw, ThreadedServer, ids_by_label, intact

# (method, params, expected error name). Each method appears at least once. "@label" stands for
# the id of the demo node with that label; "DOC" for the demo graph's exported document.
CASES: list[tuple[str, list[Any], str]] = [
    ("initialize", [{"errors": "fancy"}], "invalid_params"),
    ("initialize", [{"client": 5}], "invalid_params"),
    ("initialize", [{"tokn": "x"}], "invalid_params"),
    ("initialize", ["positional"], "invalid_params"),
    ("shutdown", [1], "invalid_params"),
    ("ops.list", [1], "invalid_params"),
    ("graph.create", [], "invalid_params"),
    ("graph.create", [5], "invalid_params"),
    ("graph.create", [""], "invalid_params"),
    ("graph.create", ["x" * 201], "invalid_params"),
    ("graph.create", ["demo"], "graph_exists"),
    ("graph.create", ["x", {"replace": True, "bogus": 1}], "invalid_params"),
    ("graph.create", ["x", "not options"], "invalid_params"),
    ("graph.list", [{"all": True}], "invalid_params"),
    ("graph.info", [], "invalid_params"),
    ("graph.info", [1], "invalid_params"),
    ("graph.info", ["nope"], "unknown_graph"),
    ("graph.drop", ["nope"], "unknown_graph"),
    ("graph.drop", [None], "invalid_params"),
    ("graph.export", ["nope"], "unknown_graph"),
    ("graph.export", ["demo", {"format": "xml"}], "invalid_params"),
    ("graph.export", ["demo", {"fromat": "json"}], "invalid_params"),
    ("graph.import", ["x"], "invalid_params"),
    ("graph.import", ["x", 5], "invalid_params"),
    ("graph.import", ["x", {"nodes": 1}], "bad_file"),
    ("graph.import", ["x", b"\xc1garbage"], "bad_file"),
    ("graph.import", ["demo", "DOC"], "graph_exists"),
    ("graph.import", ["", "DOC"], "invalid_params"),
    ("graph.publish", ["x", "text"], "invalid_params"),
    ("graph.publish", ["x", {}], "bad_file"),
    ("graph.publish", [5, "DOC"], "invalid_params"),
    ("graph.publish", ["x", "DOC", {"replace": True}], "invalid_params"),
    ("graph.publish_values", ["demo", "token", b"", b""], "content_modified"),
    ("graph.publish_values", ["demo", 5, b"", b""], "invalid_params"),
    ("graph.publish_values", ["demo", "token", [1.0], b""], "invalid_params"),
    ("graph.publish_values", ["nope", "token", b"", b""], "unknown_graph"),
    ("graph.publish_values", ["demo", "token", b""], "invalid_params"),
    ("node.leaf", ["demo"], "invalid_params"),
    ("node.leaf", ["demo", "1"], "invalid_params"),
    ("node.leaf", ["demo", True], "invalid_params"),
    ("node.leaf", ["demo", None], "invalid_params"),
    ("node.leaf", ["nope", 1.0], "unknown_graph"),
    ("node.leaf", ["demo", 1.0, {"label": 3}], "invalid_params"),
    ("node.leaf", ["demo", 1.0, {"source": "file.py"}], "invalid_params"),
    ("node.leaf", ["demo", 1.0, {"colour": "red"}], "invalid_params"),
    ("node.apply", ["demo", "mul"], "invalid_params"),
    ("node.apply", ["demo", "sofplus", ["@x1"]], "unknown_op"),
    ("node.apply", ["demo", "mul", ["@x1", 99]], "unknown_node"),
    ("node.apply", ["demo", "mul", ["@x1"]], "invalid_params"),
    ("node.apply", ["demo", "mul", "0,1"], "invalid_params"),
    ("node.apply", ["demo", 5, ["@x1"]], "invalid_params"),
    ("node.apply", ["demo", "pow_const", ["@x1"], {"exponent": "x"}], "op_failed"),
    ("node.apply", ["demo", "pow_const", ["@x1"], {"exponent": [2]}], "invalid_params"),
    ("node.apply", ["demo", "tanh", ["@x1"], {"exponent": 2}], "invalid_params"),
    ("node.apply", ["demo", "log", ["@w1"]], "op_failed"),
    ("node.apply", ["demo", "mul", ["@x1", "@w1"], {"label": []}], "invalid_params"),
    ("node.apply", ["nope", "mul", ["@x1", "@w1"]], "unknown_graph"),
    ("node.set", ["demo", "@o", 1.0], "not_a_leaf"),
    ("node.set", ["demo", 99, 1.0], "unknown_node"),
    ("node.set", ["demo", -1, 1.0], "unknown_node"),
    ("node.set", ["demo", "0", 1.0], "invalid_params"),
    ("node.set", ["demo", "@x1", "x"], "invalid_params"),
    ("node.set", ["demo", "@x1"], "invalid_params"),
    ("node.get", ["demo", ["@x1", 99]], "unknown_node"),
    ("node.get", ["demo", "0"], "invalid_params"),
    ("node.get", ["demo", [0.5]], "invalid_params"),
    ("node.get", ["demo", ["x"] * 100_001], "invalid_params"),  # not ids: said before too many
    ("node.get", ["demo", [0] * 100_001], "limit_exceeded"),
    ("node.get", ["demo"], "invalid_params"),
    ("node.get", ["demo", ["@x1"], {"fields": ["data"]}], "invalid_params"),
    ("node.get", ["nope", ["@x1"]], "unknown_graph"),
    ("graph.nodes", ["demo", {"start": -1}], "invalid_params"),
    ("graph.nodes", ["demo", {"count": "5"}], "invalid_params"),
    ("graph.nodes", ["demo", {"count": 10**6}], "invalid_params"),
    ("graph.nodes", ["nope"], "unknown_graph"),
    ("graph.batch", ["demo", {}], "invalid_params"),
    ("graph.batch", ["demo", [{"op": "nope", "inputs": []}]], "unknown_op"),
    ("graph.batch", ["demo", [{"op": "mul", "inputs": ["@x1", 99]}]], "unknown_node"),
    ("graph.batch", ["demo", [{"op": "mul", "inputs": ["@x1", "$x"]}]], "invalid_params"),
    ("graph.batch", ["demo", [{"op": "mul", "inputs": "$0"}]], "invalid_params"),
    ("graph.batch", ["nope", []], "unknown_graph"),
    ("graph.eval", ["demo", 5], "invalid_params"),
    ("graph.eval", ["demo", "x +"], "bad_expression"),
    ("graph.eval", ["demo", "__import__('os')"], "bad_expression"),
    ("graph.eval", ["demo", "unbound_name * 2"], "bad_expression"),
    ("graph.eval", ["demo", "x", {"x": "s"}], "invalid_params"),
    ("graph.eval", ["demo", "x", 5], "invalid_params"),
    ("graph.eval", ["demo", "x", {"x": {"id": 99}}], "unknown_node"),
    ("graph.eval", ["demo", "x", {"x": 1.0}, {"labl": "x"}], "invalid_params"),
    ("graph.eval", ["demo", "1+" * 100_000 + "1"], "invalid_params"),
    ("graph.eval", ["nope", "1"], "unknown_graph"),
    ("graph.backward", ["demo", 99], "unknown_node"),
    ("graph.backward", ["demo", "9"], "invalid_params"),
    ("graph.backward", ["demo"], "invalid_params"),
    ("graph.grads", ["demo", "@o", [99]], "unknown_node"),
    ("graph.grads", ["demo", "@o", "x"], "invalid_params"),
    ("graph.grads", ["demo", 99, ["@x1"]], "unknown_node"),
    ("graph.gradcheck", ["demo", 99], "unknown_node"),
    ("graph.gradcheck", ["demo", "@o", {"eps": 0}], "invalid_params"),
    ("graph.gradcheck", ["demo", "@o", {"eps": "x"}], "invalid_params"),
    ("graph.gradcheck", ["demo", "@o", {"epsilon": 1e-3}], "invalid_params"),
    ("graph.gradcheck", ["demo", "@o", {"sample": 0}], "invalid_params"),
    ("graph.gradcheck", ["demo", "@o", {"leaves": ["@o"]}], "not_a_leaf"),
    ("graph.analyze", ["demo", {"root": "x"}], "invalid_params"),
    ("graph.analyze", ["demo", {"root": 99}], "unknown_node"),
    ("graph.analyze", ["demo", {"depth": 1}], "invalid_params"),
    ("graph.analyze", ["nope"], "unknown_graph"),
    ("graph.diagnostics", ["nope"], "unknown_graph"),
    ("graph.diagnostics", ["demo", {"limit": -1}], "invalid_params"),
    ("graph.diagnostics", ["demo", {"group": 1}], "invalid_params"),
    ("graph.aggregate", ["nope"], "unknown_graph"),
    ("graph.aggregate", ["demo", {"by": "sample"}], "invalid_params"),
    ("graph.aggregate", ["demo", {"part": "nowhere", "call": 1}], "invalid_params"),
    ("graph.aggregate", ["demo", {"limit": 1.5}], "invalid_params"),
    ("graph.diagnostics", [3], "invalid_params"),
    ("graph.render", ["demo", {"format": "gif"}], "invalid_params"),
    ("graph.render", ["demo", {"depth": 99}], "invalid_params"),
    ("graph.render", ["demo", {"around": 99}], "unknown_node"),
    ("graph.render", ["demo", {"around": "o"}], "invalid_params"),
    ("graph.render", ["demo", {"rankdir": "XY"}], "invalid_params"),
    ("graph.render", ["demo", {"max_nodes": "x"}], "invalid_params"),
    ("graph.render", ["nope"], "unknown_graph"),
    ("graph.subscribe", [""], "invalid_params"),
    ("graph.subscribe", [[]], "invalid_params"),
    ("graph.unsubscribe", [1], "invalid_params"),
    ("graph.unsubscribe", ["nope"], "unknown_graph"),
    ("graph.lst", [], "method_not_found"),
    ("", [], "method_not_found"),
]


def resolve(params: Any, document: dict[str, Any], ids: dict[str, int]) -> Any:
    if params == "DOC":
        return document
    if isinstance(params, str) and params.startswith("@"):
        return ids[params[1:]]
    if isinstance(params, list):
        return [resolve(p, document, ids) for p in params]
    if isinstance(params, dict):
        return {k: resolve(v, document, ids) for k, v in params.items()}
    return params


def test_every_method_has_error_cases() -> None:
    assert {m for m, _, _ in CASES} - {"graph.lst", ""} == set(METHODS)


def test_errors_default_shape(server: ThreadedServer) -> None:
    """``[kind, "name: message"]``, kind 1 for a bad request, 0 for a server-side failure."""
    with intact(server.tcp), Raw(server.tcp) as raw:
        document = raw.ok("graph.export", "demo")
        ids = ids_by_label(raw)
        for method, params, name in CASES:
            error, result = raw.call(method, *resolve(params, document, ids))
            assert result is None, (method, params)
            assert isinstance(error, list) and len(error) == 2, (method, params, error)
            kind, message = error
            assert message.startswith(f"{name}: "), (method, params, error)
            assert kind == CATALOGUE[name].kind, (method, params, error)
            assert len(message) < 2000
        # The connection is still good after all of that.
        assert raw.ok("node.get", "demo", ids["o"])["nodes"][0]["label"] == "o"
    assert CATALOGUE["op_failed"].kind == SERVER_FAILURE
    assert CATALOGUE["unknown_node"].kind == BAD_REQUEST


def test_errors_structured_shape(server: ThreadedServer) -> None:
    """``{code, name, message, data}`` once initialize asked for ``errors: structured``."""
    with intact(server.tcp), Raw(server.tcp) as raw:
        raw.ok("initialize", {"errors": "structured"})
        document = raw.ok("graph.export", "demo")
        ids = ids_by_label(raw)
        for method, params, name in CASES:
            error, _ = raw.call(method, *resolve(params, document, ids))
            assert isinstance(error, dict), (method, params, error)
            assert set(error) == {"code", "name", "message", "data"}
            assert error["name"] == name, (method, params, error)
            assert error["code"] == CATALOGUE[name].code
            assert not error["message"].startswith(f"{name}:")


def test_error_messages_name_the_problem(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        raw.ok("initialize", {"errors": "structured"})
        error, _ = raw.call("node.apply", "demo", "tahn", [0])
        assert "did you mean 'tanh'" in error["message"]
        error, _ = raw.call("graph.lst")
        assert "did you mean 'graph.list'" in error["message"]
        error, _ = raw.call("node.leaf", "demo")
        assert "missing argument 'data'" in error["message"]
        assert error["data"]["argument"] == "data"
        error, _ = raw.call("node.leaf", "demo", 1, {"lable": "x"})
        assert "unknown option 'lable'" in error["message"] and "'label'" in error["message"]
        o = ids_by_label(raw)["o"]
        error, _ = raw.call("node.set", "demo", o, 1.0)
        assert f"node {o}" in error["message"]


def test_method_names_and_option_names_may_be_bin(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        o = ids_by_label(raw)["o"]
        result = raw.ok(b"node.get", "demo", [o])
        assert result["nodes"][0]["label"] == "o"
        made = raw.ok(b"node.leaf", "demo", 1.0, {b"label": "bin"})
        assert raw.ok("node.get", "demo", made["id"])["nodes"][0]["label"] == "bin"


def test_unknown_notifications_are_ignored(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        raw.send_obj([2, "nvim_set_client_info", ["client", {}, "remote", {}, {}]])
        raw.send_obj([2, "no.such.method", []])
        raw.send_obj([2, "graph.create", ["via-notification"]])  # no reply, no effect needed
        raw.send_obj([1, 77, None, "a stray response"])
        assert raw.ok("graph.info", "demo")["nodes"] == 10
        # Even a method's name sent as a notification does nothing (documented: ignored).
        assert "via-notification" not in [g["name"] for g in raw.ok("graph.list")]


def test_msgid_zero_and_max_are_real_ids(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        for msgid in (0, 2**32 - 1, 5):
            raw.request("graph.list", msgid=msgid)
        answered = [raw.read()[1] for _ in range(3)]
        assert answered == [0, 2**32 - 1, 5]


def test_requests_answered_in_order_when_pipelined(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        blob = b"".join(
            msgpack.packb([0, i, "node.get", ["demo", i % 10]]) for i in range(200))
        raw.send(blob)
        for i in range(200):
            message = raw.read()
            assert message[1] == i and message[3]["nodes"][0]["id"] == i % 10


# --- pynvim as an independent client -------------------------------------------------------


def in_thread(func: Any, timeout: float = TIMEOUT) -> Any:
    """Run ``func`` in a daemon thread; fail (rather than hang) if it takes too long."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = func()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "pynvim got no answer"
    if "error" in box:
        raise box["error"]
    return box["result"]


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_pynvim_session(server: ThreadedServer, transport: str) -> None:
    from pynvim.msgpack_rpc import socket_session, tcp_session

    with Raw(server.tcp) as raw:
        ids = ids_by_label(raw)

    def talk() -> dict[str, Any]:
        if transport == "tcp":
            session = tcp_session("127.0.0.1", server.port)
        else:
            session = socket_session(server.unix_path)
        try:
            out: dict[str, Any] = {}
            out["get"] = session.request("node.get", "demo", [ids["x1"], ids["o"]])
            out["leaf"] = session.request("node.leaf", "demo", 2.5, {"label": "from pynvim"})
            for method, args in (("node.get", ("demo", [99])), ("graph.lst", ()),
                                 ("node.leaf", ("demo",))):
                try:
                    session.request(method, *args)
                except Exception as exc:  # pynvim raises Exception(error[1])
                    out[method] = str(exc)
            session.request("graph.subscribe", "demo")
            session.request("node.set", "demo", ids["x1"], 3.0)
            out["notification"] = session.next_message()
            return out
        finally:
            session.close()

    out = in_thread(talk)
    labels = [n["label"] for n in out["get"]["nodes"]]
    assert labels == ["x1", "o"]
    assert out["leaf"]["id"] == 10
    assert out["node.get"].startswith("unknown_node: graph 'demo' has no node 99")
    assert out["graph.lst"].startswith("method_not_found: no method named 'graph.lst'")
    assert out["node.leaf"].startswith("invalid_params: node.leaf: missing argument 'data'")
    kind, method, params = out["notification"]
    assert (kind, method) == ("notification", "graph.changed")
    assert params[0]["graph"] == "demo" and params[0]["version"] > out["leaf"]["version"]


def test_empty_options_from_neovim_are_no_options(server: ThreadedServer) -> None:
    with Client(server.tcp) as c:
        assert c.call("graph.list", [])[0]["name"] == "demo"
        assert c.call("graph.info", "demo", [])["name"] == "demo"
        assert c.call("node.get", "demo", 0, None)["nodes"][0]["id"] == 0
