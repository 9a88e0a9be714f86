"""Graph files: round trips in msgpack and JSON, every refused file, and fuzzing."""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from neurons import NEURON_B, seed_neuron

from opgraph import Graph, Value, track_source
from opgraph import fileformat as ff
from opgraph.core import ops, topological_order
from opgraph.errors import GraphFileError, GraphLimitError, OpgraphError

# --- helpers -------------------------------------------------------------------------------------


neuron = seed_neuron


def neuron_graph() -> Graph:
    """The neuron built on an explicit graph, with source locations, after backward."""
    g = Graph("neuron")
    with track_source():
        x1 = g.leaf(2.0, "x1")
        x2 = g.leaf(0.0, "x2")
        w1 = g.leaf(-3.0, "w1")
        w2 = g.leaf(1.0, "w2")
        b = g.leaf(NEURON_B, "b")
        n = x1 * w1 + x2 * w2 + b
        n.label = "n"
        o = n.tanh()
        o.label = "o"
    g.backward(o)
    return g


def same_number(a: object, b: object) -> bool:
    """Equal and of the same type, with NaN equal to NaN and the sign of zero kept."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)  # type: ignore[arg-type]
    return a == b and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b))


def assert_same_graph(original: list[Value], loaded: Graph) -> None:
    """Every node of ``loaded`` matches ``original`` (values in id order) in every field."""
    assert len(loaded) == len(original)
    index = {id(v): i for i, v in enumerate(original)}
    for i, (a, b) in enumerate(zip(original, loaded.nodes, strict=True)):
        assert b.id == i
        assert b.graph is loaded
        assert a.op == b.op, i
        assert [index[id(v)] for v in a.inputs] == [v.id for v in b.inputs], i
        assert a.attrs == b.attrs, i
        for key, val in a.attrs.items():
            assert type(b.attrs[key]) is type(val), (i, key)
        assert a.label == b.label, i
        assert same_number(a.data, b.data), (i, a.data, b.data)
        assert same_number(a.grad, b.grad), (i, a.grad, b.grad)
        assert a._loc == b._loc, i


def roundtrips(obj: Graph | Value, tmp_path: Path) -> dict[str, Graph]:
    """The graph loaded back every way there is."""
    doc = ff.to_document(obj)
    wire = msgpack.unpackb(msgpack.packb(doc, unicode_errors="surrogatepass"), raw=False,
                           unicode_errors="surrogatepass")
    return {
        "opg file": ff.load(ff.save(obj, tmp_path / "g.opg")),
        "json file": ff.load(ff.save(obj, tmp_path / "g.json")),
        "bytes": ff.loads(ff.dumps(obj)),
        "json bytes": ff.loads(ff.dumps(obj, fmt="json")),
        "json text": ff.from_json(ff.to_json(obj)),
        "document": ff.from_document(doc),
        "document over msgpack": ff.from_document(wire),
        "parsed json": ff.from_document(ff.parse(ff.to_json(obj))),
    }


def nodes_of(obj: Graph | Value) -> list[Value]:
    return list(obj.nodes) if isinstance(obj, Graph) else topological_order(obj)


def refused(match: str) -> Any:
    return pytest.raises(GraphFileError, match=match)


# --- round trips ---------------------------------------------------------------------------------


def test_neuron_round_trips_every_way(tmp_path: Path) -> None:
    o = neuron()
    assert o.data == pytest.approx(0.7071067811865476)
    for how, g in roundtrips(o, tmp_path).items():
        assert_same_graph(topological_order(o), g), how
        by = {v.label: v for v in g}
        assert by["o"].data == pytest.approx(math.sqrt(0.5)), how
        assert by["o"].grad == 1.0
        assert by["n"].grad == pytest.approx(0.5)
        assert by["b"].grad == pytest.approx(0.5)
        assert by["x1"].grad == pytest.approx(-1.5)
        assert by["w1"].grad == pytest.approx(1.0)
        assert by["x2"].grad == pytest.approx(0.5)
        assert by["w2"].grad == 0.0
        assert by["b"].data == NEURON_B
        assert g.outputs == [by["o"]]


def test_neuron_graph_with_sources_round_trips(tmp_path: Path) -> None:
    g = neuron_graph()
    assert all(v._loc is not None and v._loc[0] == __file__ for v in g)
    for how, loaded in roundtrips(g, tmp_path).items():
        assert loaded.name == "neuron", how
        assert_same_graph(g.nodes, loaded)


def test_pow_const_keeps_its_exponent_and_type(tmp_path: Path) -> None:
    x = Value(3.0, label="x")
    y = x**2
    z = x**0.5
    w = y + z
    w.backward()
    doc = ff.to_document(w)
    pow_nodes = [n for n in doc["nodes"] if n["op"] == "pow_const"]
    assert [n["attrs"] for n in pow_nodes] == [{"exponent": 2}, {"exponent": 0.5}]
    for how, g in roundtrips(w, tmp_path).items():
        assert_same_graph(topological_order(w), g), how
        assert [v.attrs for v in g if v.op == "pow_const"] == [{"exponent": 2}, {"exponent": 0.5}]
        assert type(next(v for v in g if v.op == "pow_const").attrs["exponent"]) is int
        assert next(v for v in g if v.op == "pow_const")._op == "**2"


def test_every_installed_op_round_trips(tmp_path: Path) -> None:
    g = Graph("all ops")
    a = g.leaf(1.5, "a")
    b = g.leaf(0.75, "b")
    for name, op in ops().items():
        inputs = [a, b][: op.arity] if op.arity <= 2 else [a] * op.arity
        g.apply(name, inputs, dict(op.sample_attrs), label=f"{name} node")
    root = g.nodes[-1]
    for v in g.nodes[2:-1]:
        root = root + v
    g.backward(root)
    assert {v.op for v in g} >= set(ops())
    for how, loaded in roundtrips(g, tmp_path).items():
        assert_same_graph(g.nodes, loaded), how


def test_negative_zero_and_non_finite_numbers_round_trip(tmp_path: Path) -> None:
    g = Graph("numbers")
    i = g.leaf(7.0, "seven")
    g.leaf(-0.0, "negative zero")
    g.leaf(math.nan, "nan")
    g.leaf(math.inf, "inf")
    g.leaf(-math.inf, "-inf")
    g.leaf(2**63 - 1, "big int")
    sq = i * i
    sq.grad = math.nan
    for how, loaded in roundtrips(g, tmp_path).items():
        assert_same_graph(g.nodes, loaded), how
    text = ff.to_json(g)
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}"))
    assert '{"$float": "nan"}' in text and '{"$float": "-inf"}' in text


def _int_document(steps: int, leaf: object = 3) -> dict[str, Any]:
    """A leaf holding ``leaf`` (an int), then ``steps`` nodes each squaring the one before."""
    nodes = [{"id": 0, "op": None, "data": leaf}]
    nodes += [{"id": i, "op": "mul", "inputs": [i - 1, i - 1]} for i in range(1, steps + 1)]
    return {"format": "opgraph-graph", "version": 1, "name": "squares", "nodes": nodes}


def test_int_data_and_grads_are_read_as_doubles() -> None:
    """Files hold IEEE doubles: an int in 'data' or 'grad' is the float it stands for."""
    doc = {"format": "opgraph-graph", "version": 1, "nodes": [
        {"id": 0, "op": None, "data": 3, "grad": 2},
        {"id": 1, "op": None, "data": -(2**63), "grad": 0},
        {"id": 2, "op": "mul", "inputs": [0, 0], "data": 9, "grad": 1},
        {"id": 3, "op": "pow_const", "inputs": [0], "attrs": {"exponent": 2}},
    ]}
    for loaded in (ff.from_document(doc), ff.loads(msgpack.packb(doc)),
                   ff.from_json(json.dumps(doc)), ff.from_document(doc, strict=True)):
        assert [v.data for v in loaded] == [3.0, -(2.0**63), 9.0, 9.0]
        assert all(type(v.data) is float and type(v.grad) is float for v in loaded)
        assert [v.grad for v in loaded] == [2.0, 0.0, 1.0, 0.0]
        assert type(loaded.nodes[3].attrs["exponent"]) is int  # attributes keep their type
    assert doc["nodes"][3]["attrs"] == {"exponent": 2}  # the caller's document is unchanged
    # and the writer writes floats
    written = ff.to_document(ff.from_document(doc))
    assert [type(n["data"]) for n in written["nodes"]] == [float] * 4


def test_squaring_an_int_leaf_thirty_times_stays_small() -> None:
    """A file of a few hundred bytes cannot make the loader compute with ever longer exact
    integers (3 squared 30 times has 500 million digits): it is computed in floats."""
    data = msgpack.packb(_int_document(30), use_bin_type=True)
    assert len(data) < 1000
    for loaded in (ff.loads(data), ff.from_json(json.dumps(_int_document(30)))):
        assert all(type(v.data) is float for v in loaded)
        assert loaded.nodes[1].data == 9.0 and loaded.nodes[-1].data == math.inf


@pytest.mark.parametrize("field", ["data", "grad"])
def test_an_int_too_big_for_a_double_is_refused(field: str) -> None:
    doc = _int_document(1)
    doc["nodes"][1][field] = 10**400
    text = json.dumps(doc)
    with refused(rf"^node 1: '{field}' is an int of 401 digits, too big for a float") as info:
        ff.from_json(text)
    assert (info.value.node, info.value.field) == (1, field)


def test_int_attributes_beyond_64_bits_are_floats_and_too_big_ones_refused() -> None:
    doc = _int_document(0, leaf=1.0)
    doc["nodes"].append({"id": 1, "op": "pow_const", "inputs": [0],
                         "attrs": {"exponent": 2**70}})
    loaded = ff.from_json(json.dumps(doc))
    assert loaded.nodes[1].attrs == {"exponent": float(2**70)}
    doc["nodes"][1]["attrs"]["exponent"] = -(10**400)
    with refused(r"^node 1: attribute 'exponent' is an int of 401 digits, too big") as info:
        ff.from_json(json.dumps(doc))
    assert (info.value.node, info.value.field) == (1, "attrs")


def test_ints_beyond_64_bits_are_written_as_floats() -> None:
    g = Graph()
    g.leaf(1.0).data = 2**70  # set by hand: the engine itself converts ints on entry
    g.leaf(1.0).data = -(10**400)
    doc = ff.to_document(g)
    assert doc["nodes"][0]["data"] == float(2**70)
    assert doc["nodes"][1]["data"] == -math.inf
    assert ff.loads(ff.dumps(g)).nodes[0].data == float(2**70)


def test_unicode_labels_and_odd_source_paths_round_trip(tmp_path: Path) -> None:
    g = Graph("ünïcode ✓")
    a = g.leaf(1.0, "α", source=("/tmp/dir with spaces/x.py", 0))
    b = g.leaf(2.0, "\udc80 surrogate", source=("\udcff.py", 12))
    (a + b).label = "😀"
    for how, loaded in roundtrips(g, tmp_path).items():
        assert loaded.name == "ünïcode ✓", how
        assert_same_graph(g.nodes, loaded)


def test_saving_a_value_does_not_put_it_in_a_graph(tmp_path: Path) -> None:
    o = neuron()
    order = topological_order(o)
    ff.save(o, tmp_path / "o.opg")
    ff.dumps(o, fmt="json")
    assert all(v.graph is None and v.id is None for v in order)
    doc = ff.to_document(o)
    assert doc["name"] == ""
    assert ff.to_document(o, name="mine")["name"] == "mine"


def test_saving_a_value_of_a_graph_saves_what_it_depends_on() -> None:
    g = Graph("big")
    a = g.leaf(1.0, "a")
    g.leaf(5.0, "unused")
    b = a.exp()
    doc = ff.to_document(b)
    assert doc["name"] == "big"
    assert [n["label"] for n in doc["nodes"]] == ["a", ""]
    assert [n["inputs"] for n in doc["nodes"]] == [[], [0]]
    assert a.id == 0 and b.id == 2 and len(g) == 3  # unchanged


def test_the_empty_graph_round_trips(tmp_path: Path) -> None:
    g = Graph("empty")
    for how, loaded in roundtrips(g, tmp_path).items():
        assert len(loaded) == 0 and loaded.name == "empty", how


def test_the_document_schema() -> None:
    o = neuron()
    doc = ff.to_document(o)
    assert set(doc) == {"format", "version", "name", "producer", "nodes"}
    assert doc["format"] == "opgraph-graph" == ff.FORMAT
    assert doc["version"] == 1 == ff.VERSION
    assert doc["producer"].startswith("opgraph ")
    first, last = doc["nodes"][0], doc["nodes"][-1]
    assert first == {"id": 0, "op": None, "inputs": [], "attrs": {}, "label": "x1",
                     "data": 2.0, "grad": o.inputs[0].inputs[0].inputs[0].inputs[0].grad,
                     "source": None}
    assert last["op"] == "tanh" and last["label"] == "o" and last["grad"] == 1.0
    assert last["inputs"] == [len(doc["nodes"]) - 2]
    # plain data only: survives both encoders untouched
    assert msgpack.unpackb(msgpack.packb(doc), raw=False) == doc
    assert json.loads(json.dumps(doc)) == doc


def test_loaded_graph_is_live() -> None:
    g = ff.loads(ff.dumps(neuron()))
    o = g.find("o")[0]
    reached = g.backward(o)
    assert len(reached) == len(g)
    assert g.find("x1")[0].grad == pytest.approx(-1.5)
    x1 = g.find("x1")[0]
    g.set(x1.id, 3.0)
    assert o.data == pytest.approx(math.tanh(3.0 * -3.0 + NEURON_B))
    more = o * 2
    assert more.graph is g and more.id == len(g) - 1


def test_optional_fields_take_defaults() -> None:
    doc = {"format": "opgraph-graph", "version": 1,
           "nodes": [{"id": 0, "data": 2}, {"id": 1, "op": "neg", "inputs": [0]}]}
    g = ff.from_document(doc)
    assert g.name == ""
    assert [v.data for v in g] == [2, -2]
    assert [v.grad for v in g] == [0.0, 0.0]
    assert [v.label for v in g] == ["", ""]
    assert [v._loc for v in g] == [None, None]


def test_format_from_suffix_and_content_sniffing(tmp_path: Path) -> None:
    o = neuron()
    opg = ff.save(o, tmp_path / "n.opg")
    js = ff.save(o, tmp_path / "n.json")
    other = ff.save(o, tmp_path / "n.bin")
    forced = ff.save(o, tmp_path / "n.opg2", format="json")
    assert opg.read_bytes()[:1] == b"\x85"  # a msgpack map of five fields
    assert json.loads(js.read_text())["format"] == "opgraph-graph"
    assert other.read_bytes() == opg.read_bytes()
    assert forced.read_text() == js.read_text()
    assert ff.dumps(o, fmt="msgpack") == ff.dumps(o)
    assert ff.dumps(o, fmt="json").decode() == ff.to_json(o)
    # load tells the formats apart by content, not by name
    (tmp_path / "swapped.opg").write_bytes(js.read_bytes())
    assert_same_graph(topological_order(o), ff.load(tmp_path / "swapped.opg"))
    assert_same_graph(topological_order(o), ff.loads("\ufeff  " + js.read_text()))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "n.bin", "n.json", "n.opg", "n.opg2", "swapped.opg"]  # no temporary files left


def test_json_is_one_node_per_line() -> None:
    lines = ff.to_json(neuron()).splitlines()
    assert lines[0].startswith('{"format": "opgraph-graph", "version": 1')
    assert lines[1] == ' "nodes": ['
    assert len(lines) == 2 + len(topological_order(neuron())) + 1


def test_load_name_option_and_max_nodes() -> None:
    data = ff.dumps(neuron())
    assert ff.loads(data, name="renamed").name == "renamed"
    g = ff.loads(data, max_nodes=20)
    assert g.max_nodes == 20
    with pytest.raises(GraphLimitError,
                       match="the graph document has 10 nodes, more than the limit of 5"):
        ff.loads(data, max_nodes=5)


def test_stale_computed_data_is_recomputed_or_refused_when_strict() -> None:
    o = neuron()
    doc = ff.to_document(o)
    doc["nodes"][-1]["data"] = 0.25  # o says 0.25, tanh(n) is 0.7071...
    g = ff.from_document(doc)
    assert g.nodes[-1].data == pytest.approx(math.sqrt(0.5))
    assert g.nodes[-1].grad == 1.0
    with refused(r"node 9 \('o'\): stored data 0.25 differs from 0.70710678118654\d* "
                 r"recomputed by op 'tanh' \(load with strict=False"):
        ff.from_document(doc, strict=True)
    assert ff.from_document(ff.to_document(o), strict=True)  # a faithful file passes
    # after a micrograd-style update without a forward pass, the file still loads
    o.inputs[0].inputs[1].data += 1.0  # b
    g = ff.loads(ff.dumps(o))
    assert g.nodes[-1].data == pytest.approx(math.tanh(0.8813735870195432 + 1.0))


def test_a_free_value_cannot_be_saved_with_a_non_string_label() -> None:
    x = Value(1.0)
    x.label = 3  # type: ignore[assignment]
    with refused(r"node 0: label must be a string to be saved, got int 3"):
        ff.dumps(x)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown graph file format 'xml'"):
        ff.dumps(neuron(), fmt="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown graph file format 'yaml'"):
        ff.save(neuron(), "x.yaml", format="yaml")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a Graph or a Value to save, got float"):
        ff.to_document(1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="graph file data must be bytes or str, got int"):
        ff.loads(3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        ff.load("/nonexistent/graph.opg")


def test_graph_file_error_is_an_opgraph_value_error() -> None:
    assert issubclass(GraphFileError, OpgraphError)
    assert issubclass(GraphFileError, ValueError)
    with pytest.raises(GraphFileError) as info:
        ff.from_document(_mutated(lambda d: d["nodes"][3].update(label=5)))
    assert info.value.node == 3 and info.value.field == "label"


# --- refused files -------------------------------------------------------------------------------


def _doc() -> dict[str, Any]:
    return ff.to_document(neuron())


def _mutated(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    doc = copy.deepcopy(_doc())
    change(doc)
    return doc


def _set(node: int, **fields: Any) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["nodes"][node].update(fields)


def _drop(node: int, field: str) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["nodes"][node].pop(field)


# the neuron's nodes: 0 x1, 1 w1, 2 x1w1 (mul), 3 x2, 4 w2, 5 x2w2 (mul), 6 add, 7 b, 8 n (add),
# 9 o (tanh)
REFUSED: list[tuple[str, Callable[[dict[str, Any]], object], str, int | None, str | None]] = [
    ("newer version", lambda d: d.update(version=7),
     "written by a newer opgraph: format version 7, this opgraph reads up to 1", None, "version"),
    ("version zero", lambda d: d.update(version=0),
     r"unknown graph format version 0 \(versions start at 1\)", None, "version"),
    ("version a string", lambda d: d.update(version="1"),
     "graph 'version' must be an int, got a string '1'", None, "version"),
    ("version missing", lambda d: d.pop("version"),
     "graph 'version' must be an int, got nil None", None, "version"),
    ("no format marker", lambda d: d.pop("format"),
     "not an opgraph graph: the map has no 'format' marker", None, "format"),
    ("another format", lambda d: d.update(format="png"),
     "not an opgraph graph: 'format' is 'png', expected 'opgraph-graph'", None, "format"),
    ("unknown top-level field", lambda d: d.update(extra=1),
     "unknown top-level field 'extra' in a version 1 graph", None, "extra"),
    ("name not a string", lambda d: d.update(name=5),
     "graph 'name' must be a string, got an int 5", None, "name"),
    ("producer not a string", lambda d: d.update(producer=[]),
     "graph 'producer' must be a string, got a list", None, "producer"),
    ("nodes missing", lambda d: d.pop("nodes"), "graph has no 'nodes' list", None, "nodes"),
    ("nodes not a list", lambda d: d.update(nodes={}),
     "graph 'nodes' must be a list, got a map", None, "nodes"),
    ("node not a map", lambda d: d["nodes"].__setitem__(4, [1, 2]),
     r"node 4: expected a map, got a list \[1, 2\]", 4, None),
    ("unknown node field", _set(2, lable="x"), "node 2: unknown field 'lable'", 2, "lable"),
    ("id missing", _drop(5, "id"), "node 5: missing field 'id'", 5, "id"),
    ("id not an int", _set(5, id=5.0), "node 5: 'id' must be an int, got a float 5.0", 5, "id"),
    ("id out of place", _set(5, id=6),
     r"node 5: 'id' is 6, expected 5 \(a node's id is its position", 5, "id"),
    ("unknown op", _set(9, op="tanhh"),
     r"node 9 \('o'\): no op named 'tanhh'; did you mean 'tanh'\? \(no installed plugin "
     r"provides it\)", 9, "op"),
    ("unknown op without suggestion", _set(9, op="zzzzzz"),
     r"node 9 \('o'\): no op named 'zzzzzz' \(no installed plugin", 9, "op"),
    ("op not a string", _set(9, op=3),
     r"node 9 \('o'\): 'op' must be an op name \(a string\) or nil for a leaf, got an int 3",
     9, "op"),
    ("self reference", _set(9, inputs=[9]),
     r"node 9 \('o'\): input 0 refers to itself \(a cycle\); inputs must be earlier nodes",
     9, "inputs"),
    ("forward reference", _set(2, inputs=[0, 8]),
     "node 2 \\('x1w1'\\): input 1 refers to node 8, a later node; inputs must be earlier "
     "nodes, so a graph file cannot hold a cycle or a forward reference", 2, "inputs"),
    ("input does not exist", _set(8, inputs=[6, 42]),
     r"node 8 \('n'\): input 1 is node 42, which does not exist \(the graph has 10 nodes, "
     r"ids 0..9\)", 8, "inputs"),
    ("negative input", _set(8, inputs=[-1, 7]),
     "node 8 \\('n'\\): input 0 is node -1, which does not exist", 8, "inputs"),
    ("input not an int", _set(8, inputs=[6, "7"]),
     r"node 8 \('n'\): input 1 must be a node id \(an int\), got a string '7'", 8, "inputs"),
    ("input a float", _set(8, inputs=[6.0, 7]),
     r"node 8 \('n'\): input 0 must be a node id \(an int\), got a float 6.0", 8, "inputs"),
    ("inputs not a list", _set(8, inputs=7),
     r"node 8 \('n'\): 'inputs' must be a list of node ids, got an int 7", 8, "inputs"),
    ("too few inputs", _set(8, inputs=[6]),
     r"node 8 \('n'\): op 'add' takes 2 inputs, the file gives 1", 8, "inputs"),
    ("too many inputs", _set(9, inputs=[7, 8]),
     r"node 9 \('o'\): op 'tanh' takes 1 input, the file gives 2", 9, "inputs"),
    ("leaf with inputs", _set(7, inputs=[0]),
     r"node 7 \('b'\): a leaf \(op nil\) has no inputs, got \[0\]", 7, "inputs"),
    ("leaf with attrs", _set(7, attrs={"k": 1}),
     r"node 7 \('b'\): a leaf \(op nil\) has no attributes", 7, "attrs"),
    ("unexpected attr", _set(9, attrs={"exponent": 2}),
     r"node 9 \('o'\): bad attrs: op 'tanh' takes attributes none: unexpected \['exponent'\]",
     9, "attrs"),
    ("attrs not a map", _set(9, attrs=[1]),
     r"node 9 \('o'\): 'attrs' must be a map, got a list \[1\]", 9, "attrs"),
    ("attr value a list", _set(9, attrs={"k": [1]}),
     r"node 9 \('o'\): attribute 'k' must be a number or a string, got a list", 9, "attrs"),
    ("attr value a boolean", _set(9, attrs={"k": True}),
     r"node 9 \('o'\): attribute 'k' must be a number or a string, got a boolean True",
     9, "attrs"),
    ("attr name not a string", _set(9, attrs={1: 2}),
     r"node 9 \('o'\): attribute names must be strings, got an int 1", 9, "attrs"),
    ("data a string", _set(0, data="2.0"),
     r"node 0 \('x1'\): 'data' must be a number, got a string '2.0'", 0, "data"),
    ("data a boolean", _set(0, data=True),
     r"node 0 \('x1'\): 'data' must be a number, got a boolean True", 0, "data"),
    ("data nil", _set(0, data=None), r"node 0 \('x1'\): 'data' must be a number, got nil", 0,
     "data"),
    ("data a list", _set(9, data=[0.5]),
     r"node 9 \('o'\): 'data' must be a number, got a list \[0.5\]", 9, "data"),
    ("leaf without data", _drop(3, "data"), r"node 3 \('x2'\): a leaf needs 'data'", 3, "data"),
    ("grad a string", _set(4, grad="0"),
     r"node 4 \('w2'\): 'grad' must be a number, got a string '0'", 4, "grad"),
    ("label not a string", _set(1, label=["w1"]),
     r"node 1: 'label' must be a string, got a list \['w1'\]", 1, "label"),
    ("source not a pair", _set(1, source=["f.py"]),
     r"node 1 \('w1'\): 'source' must be nil or \[file: string, line: int >= 0\], got a list",
     1, "source"),
    ("source line a string", _set(1, source=["f.py", "3"]),
     r"node 1 \('w1'\): 'source' must be nil or \[file: string, line: int >= 0\]", 1, "source"),
    ("source line negative", _set(1, source=["f.py", -3]),
     r"node 1 \('w1'\): 'source' must be nil or \[file: string, line: int >= 0\], got a list "
     r"\['f.py', -3\]",
     1, "source"),
    ("op fails on the stored inputs", lambda d: (d["nodes"][8].update(op="div", inputs=[5, 3])),
     r"node 8 \('n'\): op 'div' cannot recompute this node from its inputs: op 'div' failed on "
     r"'x2w2' id 5 \(data 0.0\), 'x2' id 3 \(data 0.0\): forward rule raised ZeroDivisionError",
     8, "op"),
]


@pytest.mark.parametrize(("change", "message", "node", "field"),
                         [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_refused_documents(change: Callable[[dict[str, Any]], object], message: str,
                           node: int | None, field: str | None, tmp_path: Path) -> None:
    doc = _mutated(change)
    with refused(message) as info:
        ff.from_document(doc)
    assert (info.value.node, info.value.field) == (node, field)
    # the same document as a msgpack file and (where JSON can hold it) a JSON file
    path = tmp_path / "bad.opg"
    path.write_bytes(msgpack.packb(doc, use_bin_type=True))
    attrs = doc["nodes"][9].get("attrs") if node == 9 else None
    if isinstance(attrs, dict) and any(not isinstance(k, str) for k in attrs):
        # msgpack files may only have string keys: the decoder refuses this one itself
        message = "corrupt graph file: not valid msgpack .*map key"
    with refused(re.escape(str(path)) + ": " + message):
        ff.load(path)
    if "map key" not in message:
        with refused(message):
            ff.from_json(json.dumps(doc))


def test_top_level_that_is_not_a_graph() -> None:
    for value, kind in [([1, 2], "a list"), (3, "an int"), ("graph", "a string"),
                        (None, "nil"), (b"\x00", "bytes"), (1.5, "a float")]:
        with refused(f"not an opgraph graph: the top level is {kind}, expected a map with "
                     f"'format': 'opgraph-graph'"):
            ff.loads(msgpack.packb(value, use_bin_type=True))
        with refused(f"the top level is {kind}"):
            ff.from_document(value)
    with refused("the top level is a list"):
        ff.loads(b"[1, 2, 3]")
    with refused("not an opgraph graph: the map has no 'format' marker"):
        ff.loads(msgpack.packb({"nodes": []}))
    with refused("not an opgraph graph: the map has no 'format' marker"):
        ff.loads('{"some": "other json"}')


def test_truncated_files_are_refused_at_every_length() -> None:
    data = ff.dumps(neuron())
    with refused("empty graph file: no data"):
        ff.loads(data[:0])
    for end in range(1, len(data)):
        with refused(rf"^truncated (or corrupt )?graph file: .*\b{end} bytes"):
            ff.loads(data[:end])
    with refused(r"^truncated graph file: the data ends in the middle of a msgpack value "
                 r"\(\d+ bytes\)$"):
        ff.loads(data[:-1])
    with refused(r"^truncated or corrupt graph file: a msgpack length is more than the 1 bytes "
                 r"there are \(5 exceeds max_map_len\(1\)\)$"):
        ff.loads(data[:1])


def test_truncated_json_is_refused_at_every_length() -> None:
    text = ff.to_json(neuron()).rstrip()
    for end in range(1, len(text)):
        with refused("corrupt graph file: not valid JSON"):
            ff.loads(text[:end])


def test_corrupt_files() -> None:
    data = ff.dumps(neuron())
    with refused("corrupt graph file: 3 unexpected bytes after the graph"):
        ff.loads(data + b"\x01\x02\x03")
    with refused("corrupt graph file: 1 unexpected byte after the graph"):
        ff.loads(data + b"\x00")
    with refused(r"^corrupt graph file: not valid msgpack \(a byte that begins no msgpack "
                 r"value\)$"):
        ff.loads(b"\x81\xa1a\xc1")  # the one byte msgpack never uses
    with refused("corrupt graph file: not valid msgpack"):
        ff.loads(b"\x81\xa3abc\xa2\xff\xfe")  # a string that is not UTF-8
    with refused("corrupt graph file: not valid msgpack"):
        ff.loads(msgpack.packb({"format": msgpack.ExtType(5, b"12345")}))  # no extensions
    with refused("corrupt graph file: not valid msgpack"):
        ff.loads(b"\x82\xa1a\x00\x01\x02")  # map keys must be strings
    with refused(r"^corrupt graph file: not valid msgpack \(values nested too deeply\)$"):
        ff.loads(b"\x81\xa1a" + b"\x91" * 5000 + b"\x00")
    with refused("truncated or corrupt graph file: a msgpack length is more than the 5 bytes"):
        ff.loads(b"\xdf\xff\xff\xff\xff")  # claims four billion entries
    with refused(r"corrupt graph file: not valid JSON \(Expecting property name enclosed in "
                 r"double quotes at line 1 column 2\)"):
        ff.loads(b"{,}")
    with refused("corrupt graph file"):
        ff.loads(b"[" * 100_000)
    with refused("corrupt graph file: JSON that is not UTF-8"):
        ff.loads(b'{"format": "\xff"}')


@pytest.mark.parametrize("data", [
    b"garbage", b"garbage\n", b'"""A Python module."""\nimport os\n', b"#!/bin/sh\necho hi\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xc1", b"\x00\x01\x02", b"\x81\x01\x02",
    b"\xde\x00\x01\x01\x02",
])
def test_bytes_that_are_no_graph_file_at_all(data: bytes, tmp_path: Path) -> None:
    """Not a corrupt graph but no graph file at all: a text file, a picture, a script."""
    start = re.escape(repr(data[:16]))
    with refused(rf"^not an opgraph graph file: it begins with {start}, not with a graph "
                 r"document \(a msgpack map with string keys, or a JSON object\)$"):
        ff.loads(data)
    path = tmp_path / "renamed.opg"
    path.write_bytes(data)
    with refused(rf"^{re.escape(str(path))}: not an opgraph graph file"):
        ff.load(path)


def test_load_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "future.opg"
    doc = _doc()
    doc["version"] = 7
    path.write_bytes(msgpack.packb(doc))
    with refused(rf"^{re.escape(str(path))}: written by a newer opgraph: format version 7, "
                 rf"this opgraph reads up to 1$"):
        ff.load(path)
    path.write_bytes(b"")
    with refused(rf"^{re.escape(str(path))}: empty graph file: no data$"):
        ff.load(path)


def test_a_newer_version_is_refused_before_its_contents_are_read() -> None:
    with refused("written by a newer opgraph: format version 2"):
        ff.loads(msgpack.packb({"format": "opgraph-graph", "version": 2, "nodes": "anything",
                                "new_field": {"x": 1}}))


def test_json_non_finite_tags_and_tokens() -> None:
    text = ('{"format": "opgraph-graph", "version": 1, "nodes": ['
            '{"id": 0, "data": {"$float": "-inf"}}, {"id": 1, "data": NaN}, '
            '{"id": 2, "data": Infinity, "grad": {"$float": "nan"}}]}')
    g = ff.from_json(text)
    assert g.nodes[0].data == -math.inf and math.isnan(g.nodes[1].data)
    assert g.nodes[2].data == math.inf and math.isnan(g.nodes[2].grad)
    with refused(r"node 0: 'data' must be a number, got a map \{'\$float': 'big'\}"):
        ff.from_json('{"format": "opgraph-graph", "version": 1, "nodes": '
                     '[{"id": 0, "data": {"$float": "big"}}]}')


# --- fuzzing -------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seed_bytes() -> bytes:
    g = Graph("fuzz")
    a = g.leaf(0.5, "a")
    b = g.leaf(-1.25, "b")
    c = (a * b + a.exp() - b.sigmoid()) / (b.relu() + 2.0)
    d = (-c).tanh() + a.log()
    g.backward(d)
    return ff.dumps(g)


SEED = _seed_bytes()
SEED_JSON = ff.dumps(ff.loads(SEED), fmt="json")


def _try_load(data: bytes | str) -> None:
    try:
        g = ff.loads(data)
    except GraphFileError as exc:
        assert str(exc)
        return
    assert isinstance(g, Graph)


@FUZZ
@given(st.binary(max_size=2048))
@example(b"")
@example(b"\x85")
@example(SEED[:-1])
def test_fuzz_random_bytes(data: bytes) -> None:
    _try_load(data)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


@FUZZ
@given(mutated(SEED))
def test_fuzz_mutated_msgpack(data: bytes) -> None:
    _try_load(data)


@FUZZ
@given(mutated(SEED_JSON))
def test_fuzz_mutated_json(data: bytes) -> None:
    _try_load(data)


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-100, 100), st.floats(allow_nan=True),
    st.text(max_size=8), st.binary(max_size=4),
    st.sampled_from([*list(ops()), "nope", "opgraph-graph", "id", "data", "inputs"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=6), st.sampled_from(
                                sorted(ff._NODE_KEYS))), inner, max_size=4)),
    max_leaves=10,
)


@st.composite
def mutated_document(draw: st.DrawFn) -> dict[str, Any]:
    doc = ff.to_document(ff.loads(SEED))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "node", "field", "input", "attr"]))
        nodes = doc["nodes"] if isinstance(doc.get("nodes"), list) else []
        if where == "top" or not nodes:
            doc[draw(st.sampled_from([*sorted(ff._TOP_KEYS), "other"]))] = draw(_values)
            continue
        i = draw(st.integers(0, len(nodes) - 1))
        node = nodes[i]
        if where == "node" or not isinstance(node, dict):
            nodes[i] = draw(_values)
        elif where == "field":
            node[draw(st.sampled_from([*sorted(ff._NODE_KEYS), "other"]))] = draw(_values)
        elif where == "input" and isinstance(node.get("inputs"), list) and node["inputs"]:
            j = draw(st.integers(0, len(node["inputs"]) - 1))
            node["inputs"][j] = draw(st.one_of(st.integers(-3, 20), _values))
        else:
            node["attrs"] = draw(st.dictionaries(st.text(max_size=9), _scalars, max_size=2))
    return doc


@FUZZ
@given(mutated_document())
def test_fuzz_mutated_documents(doc: dict[str, Any]) -> None:
    try:
        g = ff.from_document(doc)
    except GraphFileError as exc:
        assert str(exc)
        return
    assert isinstance(g, Graph)
    # whatever loaded saves and loads again to the same graph
    assert_same_graph(g.nodes, ff.loads(ff.dumps(g)))


def test_loading_reports_progress(tmp_path: Path) -> None:
    g = Graph("wide")
    x = g.leaf(1.0, "x")
    for _ in range(10_000):
        x = g.apply("tanh", [x])
    path = ff.save(g, tmp_path / "wide.opg")
    seen: list[tuple[int, int]] = []
    loaded = ff.load(path, progress=lambda done, total: seen.append((done, total)))
    assert len(loaded) == 10_001
    assert seen[0] == (0, 10_001) and seen[-1] == (10_001, 10_001)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 4
