"""Every door holds (issue 10): numbers enter as doubles, so no small request makes big work;
a change whose values could not be sent changes nothing; an option named like an argument is
refused by name."""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import select
import time
import types
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from opgraph_server.dispatch import Call
from opgraph_server.errors import RpcError
from opgraph_server.methods import METHODS
from opgraph_server.protocol import (
    Deferred,
    RemoteProtocolError,
    Request,
    RpcProtocol,
    pack_chunked,
    unpack_chunked,
)
from server_harness import TIMEOUT, Raw, ThreadedServer, pack

from opgraph import OpDef, hookimpl, registry

SQUARINGS = 30


def squaring_steps(count: int = SQUARINGS) -> list[dict[str, Any]]:
    """A leaf 3, then ``count`` steps each multiplying the previous node by itself."""
    steps: list[dict[str, Any]] = [{"leaf": 3}]
    steps += [{"op": "mul", "inputs": [f"${k}", f"${k}"]} for k in range(count)]
    return steps


def squaring_document(count: int = SQUARINGS) -> dict[str, Any]:
    """The same graph as a graph-file document (int data in its leaf)."""
    nodes = [{"id": 0, "op": None, "inputs": [], "attrs": {}, "label": "", "data": 3,
              "grad": 0, "source": None}]
    nodes += [{"id": k + 1, "op": "mul", "inputs": [k, k], "attrs": {}, "label": "",
               "data": 0, "grad": 0, "source": None} for k in range(count)]
    return {"format": "opgraph-graph", "version": 1, "name": "hostile", "nodes": nodes}


def error_text(error: Any) -> str:
    assert error is not None, "expected an error"
    return error[1]


def answered_while(raw: Raw, other_url: str, method: str, *params: Any) -> tuple[Any, Any]:
    """Send a request on ``raw`` and, until its answer comes, check that a second client is
    answered; returns the request's ``(error, result)``."""
    msgid = raw.request(method, *params)
    with Raw(other_url) as other:
        assert other.ok("node.get", "demo", [0])["nodes"][0]["id"] == 0
    return raw.response(msgid)


# --- defect 1: numbers enter as doubles ------------------------------------------------------


def test_data_enters_as_doubles_at_every_door(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        raw.ok("graph.create", "ints")
        leaf = raw.ok("node.leaf", "ints", 3)
        assert type(leaf["data"]) is float and leaf["data"] == 3.0
        raw.ok("node.set", "ints", leaf["id"], 7)
        batch = raw.ok("graph.batch", "ints", [{"leaf": 2}, {"leaf": -(2**63)},
                                               {"leaf": 2**64 - 1}])
        evaluated = raw.ok("graph.eval", "ints", "a * a", {"a": 5})
        nodes = raw.ok("graph.nodes", "ints")["nodes"]
        assert [n["data"] for n in nodes] == [7.0, 2.0, -(2.0**63), 2.0**64, 5.0, 25.0]
        assert all(type(n["data"]) is float and type(n["grad"]) is float for n in nodes)
        assert batch["ids"] == [1, 2, 3] and evaluated["data"] == 25.0

        for method in ("graph.import", "graph.publish"):
            doc = squaring_document(2)
            raw.ok(method, f"doc-{method}", doc)
            nodes = raw.ok("graph.nodes", f"doc-{method}")["nodes"]
            assert [n["data"] for n in nodes] == [3.0, 9.0, 81.0]
            assert all(type(n["data"]) is float and type(n["grad"]) is float for n in nodes)


def test_booleans_are_not_numbers(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        raw.ok("graph.create", "b")
        error, _ = raw.call("node.leaf", "b", True)
        assert error_text(error).startswith("invalid_params: node.leaf: data must be a number, "
                                            "got bool True")
        error, _ = raw.call("graph.batch", "b", [{"leaf": False}])
        assert "step 0 leaf must be a number, got bool False" in error_text(error)
        assert raw.ok("graph.info", "b")["nodes"] == 0


def test_an_int_too_big_for_a_double_is_refused_naming_the_field() -> None:
    # MessagePack carries 64-bit integers at most (all of which fit a double), so only the
    # check itself can be given a bigger one.
    call = Call(None, None, "node.leaf")  # type: ignore[arg-type]
    with pytest.raises(RpcError, match=r"node.leaf: data is an integer too big for a double "
                                       r"\(1329 bits\)") as caught:
        call.data(10**400, "data")
    assert caught.value.name == "invalid_params"


def test_a_730_byte_batch_squaring_an_int_is_cheap(server: ThreadedServer) -> None:
    steps = squaring_steps()
    assert len(pack([0, 1, "graph.batch", ["sq", steps]])) < 800
    with Raw(server.tcp) as raw:
        raw.ok("graph.create", "sq")
        error, result = answered_while(raw, server.unix, "graph.batch", "sq", steps)
        assert error is None, error
        last = raw.ok("node.get", "sq", result["ids"][-1])["nodes"][0]["data"]
        assert last == math.inf  # 3 ** (2 ** 30) as a double: it overflows, cheaply
        assert raw.ok("node.get", "sq", result["ids"][4])["nodes"][0]["data"] == 3.0**16


@pytest.mark.parametrize("form", ["document", "msgpack", "json"])
def test_importing_a_hostile_file_is_cheap(server: ThreadedServer, form: str) -> None:
    doc = squaring_document()
    data: Any = {"document": doc, "msgpack": msgpack.packb(doc),
                 "json": json.dumps(doc).encode()}[form]
    with Raw(server.tcp) as raw:
        for method, name in (("graph.import", "hostile"), ("graph.publish", "published")):
            error, result = answered_while(raw, server.unix, method, name, data)
            assert error is None, error
            assert result["nodes"] == SQUARINGS + 1
            assert raw.ok("node.get", name, SQUARINGS)["nodes"][0]["data"] == math.inf


def test_a_json_file_with_an_int_too_big_for_a_double_is_refused(server: ThreadedServer) -> None:
    doc = squaring_document(1)
    doc["nodes"][0]["data"] = 10**400
    with Raw(server.tcp) as raw:
        error, _ = raw.call("graph.import", "big", json.dumps(doc).encode())
        assert error_text(error) == ("bad_file: node 0: 'data' is an integer too big for a "
                                     "double (1329 bits)")
        doc["nodes"][0]["data"] = 1
        doc["nodes"][1]["grad"] = -(10**400)
        error, _ = raw.call("graph.import", "big", json.dumps(doc).encode())
        assert error_text(error).startswith("bad_file: node 1: 'grad' is an integer too big")
        assert "big" not in [g["name"] for g in raw.ok("graph.list")]


# --- defect 2: a failed request changes nothing; every value can be sent --------------------


def test_the_issue_s_int64_leaf_times_itself(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        raw.ok("graph.create", "ints")
        raw.ok("node.leaf", "ints", 2**63 - 1)
        made = raw.ok("node.apply", "ints", "mul", [0, 0])
        assert made["data"] == float(2**63) ** 2
        assert len(raw.ok("node.get", "ints", [0, 1])["nodes"]) == 2


@contextlib.contextmanager
def ops_installed(*opdefs: OpDef) -> Iterator[None]:
    """The installed plugins plus one delivering ``opdefs``, as the process's registry."""

    @hookimpl
    def opgraph_register_ops() -> list[OpDef]:
        return list(opdefs)

    plugin = types.SimpleNamespace(opgraph_register_ops=opgraph_register_ops)
    previous = registry.set_default_registry(registry.default_registry())
    registry.set_default_registry(registry.build_registry(plugins=[("int_ops", plugin)]))
    try:
        yield
    finally:
        registry.set_default_registry(previous)


def _huge(x: float) -> int:
    return 10**30 if x > 0 else 7  # an int: 10**30 is more than MessagePack can carry


def _huge_grad(x: float, out: float) -> tuple[float]:
    return (0.0,)


def _biggest(x: float) -> int:
    return 10**400 if x > 0 else 1  # an int not even a double can hold


@pytest.fixture
def int_ops() -> Iterator[None]:
    with ops_installed(OpDef("huge", 1, _huge, _huge_grad, doc="an int result"),
                       OpDef("biggest", 1, _biggest, _huge_grad, doc="a huge int result")):
        yield


def test_an_op_returning_an_int_gives_a_double(server: ThreadedServer, int_ops: None) -> None:
    with Raw(server.tcp) as raw:
        raw.ok("graph.create", "h")
        raw.ok("node.leaf", "h", 1.0)
        made = raw.ok("node.apply", "h", "huge", [0])
        assert made["data"] == 1e30 and type(made["data"]) is float
        batch = raw.ok("graph.batch", "h", [{"op": "huge", "inputs": [0]},
                                             {"op": "mul", "inputs": ["$0", "$0"]}])
        assert raw.ok("node.get", "h", batch["ids"])["nodes"][1]["data"] == 1e30 * 1e30
        evaluated = raw.ok("graph.eval", "h", "huge(x) * 2", {"x": 1.0})
        assert evaluated["data"] == 2e30
        raw.ok("node.set", "h", 0, -1.0)  # huge(-1) is the int 7
        nodes = raw.ok("graph.nodes", "h")["nodes"]
        assert nodes[1]["data"] == 7.0 and type(nodes[1]["data"]) is float
        assert nodes[3]["data"] == 49.0


def test_a_value_too_big_to_send_changes_nothing(server: ThreadedServer, int_ops: None) -> None:
    with Raw(server.tcp) as raw:
        raw.ok("graph.create", "h")
        raw.ok("node.leaf", "h", -1.0)
        raw.ok("node.apply", "h", "biggest", [0])  # 1 for now
        before = raw.ok("graph.nodes", "h")
        attempts = [
            ("node.apply", ["h", "biggest", [1]]),
            ("graph.batch", ["h", [{"leaf": 1.0}, {"op": "biggest", "inputs": ["$0"]}]]),
            ("graph.eval", ["h", "biggest(y)", {"y": 2.0}]),
            ("node.set", ["h", 0, 5.0]),
        ]
        for method, params in attempts:
            error, _ = raw.call(method, *params)
            assert error_text(error).startswith("op_failed: "), method
            assert "'biggest'" in error_text(error) and "too big" in error_text(error), method
            assert raw.ok("graph.nodes", "h") == before, method


def test_an_imported_value_that_cannot_be_sent_is_refused(server: ThreadedServer) -> None:
    doc = squaring_document(1)
    doc["nodes"][1]["label"] = "bad \ud800 label"  # a lone surrogate: no UTF-8 for it
    data = msgpack.packb(doc, unicode_errors="surrogatepass")
    with Raw(server.tcp) as raw:
        error, _ = raw.call("graph.import", "odd", data)
        assert error_text(error).startswith("invalid_params: graph.import: node 1 label is not "
                                            "valid Unicode")
        doc = squaring_document(0)
        doc["nodes"].append({"id": 1, "op": "pow_const", "inputs": [0], "attrs": {
            "exponent": 10**30}, "label": "", "data": 1.0})
        error, _ = raw.call("graph.import", "odd", json.dumps(doc).encode())
        assert "attribute 'exponent' is an integer of 100 bits" in error_text(error)
        assert "odd" not in [g["name"] for g in raw.ok("graph.list")]


# --- defect 3: an option named like an argument ----------------------------------------------


def _collisions() -> list[tuple[str, str]]:
    """(method, name) for each method taking options and each name of its handler's
    parameters that is not an option (``call`` and the positional arguments)."""
    found = []
    for name, spec in sorted(METHODS.items()):
        if spec.allowed_options is False:
            continue
        for p in inspect.signature(spec.handler).parameters.values():
            if p.kind is not p.VAR_KEYWORD and p.name not in spec.options:
                found.append((name, p.name))
    return found


def test_the_issue_s_inputs_option(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        raw.ok("graph.create", "f0")
        raw.ok("node.leaf", "f0", 1.0)
        error, _ = raw.call("node.apply", "f0", "add", [0, 0], {"inputs": 1})
        assert error_text(error).startswith(
            "invalid_params: node.apply: option 'inputs' has the name of an argument")
        assert raw.ok("graph.info", "f0")["nodes"] == 1


@pytest.mark.parametrize(("method", "name"), _collisions())
def test_no_option_may_be_named_like_an_argument(server: ThreadedServer, method: str,
                                                 name: str) -> None:
    spec = METHODS[method]
    params: list[Any] = ["demo"] * len(spec.required) + [None] * len(spec.optional)
    with Raw(server.tcp) as raw:
        error, _ = raw.call(method, *params, {name: 1})
        assert error_text(error).startswith(f"invalid_params: {method}: option '{name}' has "
                                            "the name of an argument"), error


def test_every_method_with_options_is_checked() -> None:
    checked = {method for method, _ in _collisions()}
    assert checked == {name for name, spec in METHODS.items()
                       if spec.allowed_options is not False}
    assert ("node.apply", "inputs") in _collisions()
    assert ("node.apply", "call") in _collisions()



# --- graph.eval without keeping the nodes ----------------------------------------------------


def test_eval_with_keep_false_leaves_the_graph_as_it_was(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw, Raw(server.unix) as watcher:
        watcher.ok("graph.subscribe", "demo")
        before = raw.ok("graph.nodes", "demo")
        result = raw.ok("graph.eval", "demo", "o * k + x1", {"k": 2}, {"keep": False})
        assert result == {"root": None, "data": 0.7071067811865476 * 2 + 2.0, "leaves": {},
                          "version": before["version"]}
        again = raw.ok("graph.eval", "demo", "tanh(n)", None, {"keep": False})
        assert again["data"] == before["nodes"][9]["data"]  # o = tanh(n)
        assert raw.ok("graph.nodes", "demo") == before
        assert not watcher.closed(0.3) and watcher.received == []  # no graph.changed
        kept = raw.ok("graph.eval", "demo", "o * 2")  # the default: the nodes join the graph
        assert kept["version"] > before["version"] and kept["root"] == 11  # 10: the 2


@pytest.mark.parametrize(("options", "message"), [
    ({"keep": 0}, "keep must be true or false, got int 0"),
    ({"keep": False, "label": "x"}, "with keep false nothing is added"),
])
def test_eval_keep_is_checked(server: ThreadedServer, options: dict[str, Any],
                              message: str) -> None:
    with Raw(server.tcp) as raw:
        error, _ = raw.call("graph.eval", "demo", "o * 2", {}, options)
        assert error[1].startswith("invalid_params: graph.eval: ") and message in error[1]


# --- big reads: built and encoded off the event loop -----------------------------------------


@pytest.mark.parametrize("obj", [
    [], {}, [1, 2.5, "x", b"y", None, True],
    list(range(5000)),
    {"version": 3, "nodes": [{"id": i, "inputs": [i - 1], "attrs": {}, "source": None}
                             for i in range(3000)]},
    {str(i): i * 0.5 for i in range(2000)},
    {"a": {"b": [[1, 2]] * 600}, "t": (1, (2, 3))},
])
def test_pack_chunked_gives_msgpack_s_own_bytes(obj: Any) -> None:
    assert pack_chunked(obj) == msgpack.packb(obj, use_bin_type=True)


def test_big_reads_answer_as_small_ones(server: ThreadedServer) -> None:
    from opgraph import fileformat

    steps = [{"leaf": 0.5}] + [{"op": "tanh", "inputs": [f"${k}"]} for k in range(4_999)]
    with Raw(server.tcp) as raw:
        raw.ok("graph.create", "wide")
        raw.ok("graph.batch", "wide", steps)
        pages = [raw.ok("node.get", "wide", list(range(k, k + 1000)))["nodes"]
                 for k in range(0, 5000, 1000)]
        whole = raw.ok("node.get", "wide", list(range(5000)))
        assert whole["nodes"] == [n for page in pages for n in page]
        assert raw.ok("graph.nodes", "wide", {"count": 5000})["nodes"] == whole["nodes"]
        exported = raw.ok("graph.export", "wide", {"format": "msgpack"})
        graph = server.sync(lambda: server.server.graphs["wide"].graph)
        assert exported == fileformat.dumps(graph)
        document = raw.ok("graph.export", "wide")
        assert document == fileformat.to_document(graph)


def test_a_big_node_get_does_not_hold_up_other_clients(server: ThreadedServer) -> None:
    steps = [{"leaf": 0.5}] + [{"op": "tanh", "inputs": [f"${k}"]} for k in range(99_999)]
    with Raw(server.tcp) as big, Raw(server.unix) as small:
        big.ok("graph.create", "wide")
        big.ok("graph.batch", "wide", steps)
        for method, params in (("node.get", ["wide", list(range(100_000))]),
                               ("graph.nodes", ["wide", {"count": 100_000}])):
            msgid = big.request(method, *params)
            time.sleep(0.05)
            assert small.ok("node.get", "demo", 0)["nodes"][0]["id"] == 0
            ready, _, _ = select.select([big.sock], [], [], 0)
            assert not ready, f"{method} of 100,000 records held up another client"
            error, result = big.response(msgid, TIMEOUT * 3)
            assert error is None and len(result["nodes"]) == 100_000


@pytest.mark.parametrize("obj", [
    [0, 7, "graph.import", ["g", {"format": "opgraph-graph", "nodes": [
        {"id": i, "op": None, "data": 0.5, "label": "é", "source": ["f.py", i]}
        for i in range(2000)]}]],
    [0, 1, "node.get", ["g", list(range(3000))]],
    [0, 2, "graph.batch", ["g", [{"leaf": float(i)} for i in range(1500)]]],
    [2, "note", [{"k": b"bin", "nested": [[[1]]] * 700}]],
    {"a": 1}, 5, [],
])
def test_unpack_chunked_gives_msgpack_s_own_objects(obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    assert unpack_chunked(data) == msgpack.unpackb(data, raw=False, strict_map_key=True)


def test_a_big_message_is_deferred_and_decodes_as_any() -> None:
    proto = RpcProtocol(defer_size=1000)
    request = [0, 9, "node.get", ["g", list(range(2000))]]
    proto.receive_data(pack(request) + pack([0, 10, "graph.list", []]))
    deferred = proto.next_event()
    assert isinstance(deferred, Deferred) and deferred.head() == (9, "node.get")
    assert deferred.decode() == Request(9, "node.get", ["g", list(range(2000))])
    assert proto.next_event() == Request(10, "graph.list", [])  # the next one as usual
    bad = RpcProtocol(defer_size=1000)
    keys: dict[Any, int] = {f"k{i}": i for i in range(600)}
    keys[599] = 1  # an int key, deep in a big map: refused as by strict_map_key
    bad.receive_data(pack([0, 3, "x", [keys]]))
    event = bad.next_event()
    assert isinstance(event, Deferred)
    with pytest.raises(RemoteProtocolError, match="not valid MessagePack"):
        event.decode()


def test_a_big_graph_file_imports_as_a_small_one(server: ThreadedServer) -> None:
    from opgraph import fileformat

    steps = [{"leaf": 0.5, "label": "x"}] + [{"op": "tanh", "inputs": [f"${k}"]}
                                             for k in range(40_000)]
    with Raw(server.tcp) as raw:
        raw.ok("graph.create", "wide")
        raw.ok("graph.batch", "wide", steps)
        data = raw.ok("graph.export", "wide", {"format": "msgpack"})
        assert len(data) > 1 << 20
        raw.ok("graph.import", "copy", data)
        assert raw.ok("graph.export", "copy", {"format": "msgpack"}) == fileformat.dumps(
            fileformat.loads(data, name="copy"))
        error, _ = raw.call("graph.import", "broken", data[:-1])
        assert error[1].startswith("bad_file: truncated graph file")
