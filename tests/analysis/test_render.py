"""Pictures: the seed's draw_dot, SVG/PNG/DOT through the real ``dot``, neighbourhoods,
summaries of big graphs, diagnostics in colour, and the committed picture of the neuron."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import struct
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import graphviz
import pytest

from opgraph import Graph, NodeNotFoundError, Value, draw_dot
from opgraph import render as rendering
from opgraph.render import (
    QUICK_LAYOUT,
    QUICK_LAYOUT_FROM,
    SEVERITY_COLOURS,
    LayoutTimeout,
    draw,
    format_from_suffix,
    graph_dot,
    layout_async,
    layout_size,
    plan,
    render,
    summary_dot,
)

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]

# (label, data, grad) of every value of the seed's neuron after o.backward(), as the seed's
# draw_dot prints them ("%.4f")
SEED_RECORDS = {
    ("x1", "2.0000", "-1.5000"),
    ("w1", "-3.0000", "1.0000"),
    ("x2", "0.0000", "0.5000"),
    ("w2", "1.0000", "0.0000"),
    ("b", "6.8814", "0.5000"),
    ("x1w1", "-6.0000", "0.5000"),
    ("x2w2", "0.0000", "0.5000"),
    ("x1w1 + x2w2", "-6.0000", "0.5000"),
    ("n", "0.8814", "0.5000"),
    ("o", "0.7071", "1.0000"),
}


def layout(dot: graphviz.Digraph) -> dict:
    """The picture as the real ``dot`` lays it out: nodes by name (their attributes) and edges
    as (tail name, head name)."""
    laid = json.loads(dot.pipe(format="json0", encoding="utf-8"))
    objects = laid.get("objects", [])
    return {
        "graph": laid,
        "nodes": {o["name"]: o for o in objects},
        "edges": {(objects[e["tail"]]["name"], objects[e["head"]]["name"])
                  for e in laid.get("edges", [])},
    }


def records_of_label(label: str) -> tuple[str, str, str]:
    match = re.fullmatch(r"\{ (.*) \| data (\S+) \| grad (\S+) \}", label)
    assert match, label
    return match.group(1), match.group(2), match.group(3)


def svg_records(svg: bytes | str) -> list[tuple[str, ...]]:
    """The text fields of every record node in an SVG drawn by graphviz."""
    root = ET.fromstring(svg)
    found = []
    for group in root.iter(f"{SVG}g"):
        if group.get("class") != "node":
            continue
        texts = tuple(t.text or "" for t in group.iter(f"{SVG}text"))
        if len(texts) == 3 and texts[1].startswith("data "):
            found.append((texts[0].strip(), texts[1][5:], texts[2][5:]))
    return found


def svg_texts(svg: bytes | str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text")]


def record_ids(dot: graphviz.Digraph) -> set[int]:
    """Ids of the value (record) nodes of a picture of a Graph (named ``n<id>``)."""
    return {int(name[1:]) for name, o in layout(dot)["nodes"].items()
            if o.get("shape") == "record"}


# --- draw_dot, as the seed draws it --------------------------------------------------------------


def test_draw_dot_of_the_seed_neuron(neuron: dict[str, Value]) -> None:
    dot = draw_dot(neuron["o"])
    assert dot.graph_attr["rankdir"] == "LR"
    assert "rankdir=LR" in dot.source
    laid = layout(dot)
    records = {records_of_label(o["label"]) for o in laid["nodes"].values()
               if o.get("shape") == "record"}
    assert records == SEED_RECORDS
    ops = sorted(o["label"] for o in laid["nodes"].values() if o.get("shape") != "record")
    assert ops == ["*", "*", "+", "+", "tanh"]
    # every value's op node points at it; every input points at the op node of its user
    by_label = {records_of_label(o["label"])[0]: name for name, o in laid["nodes"].items()
                if o.get("shape") == "record"}
    for value in neuron.values():
        if value.inputs:
            me = by_label[value.label]
            op_node = next(t for t, h in laid["edges"] if h == me)
            assert laid["nodes"][op_node]["label"] == value._op
            assert {t for t, h in laid["edges"] if h == op_node} == {
                by_label[i.label] for i in value.inputs}
    assert len(laid["edges"]) == 5 + 9


def test_draw_dot_escapes_record_specials() -> None:
    """A label with record syntax in it shows as written, still one record of three fields."""
    g = Graph("odd")
    x = g.leaf(1.0, "a|b {c} <d>")
    x.tanh()
    svg = draw_dot(g).pipe(format="svg")
    assert ("a|b {c} <d>", "1.0000", "0.0000") in svg_records(svg)


def test_unlabelled_nodes_of_a_graph_show_their_id_and_a_name() -> None:
    """The first cell of an unlabelled node names it (``#7 x1*w1``), so ``--around 7`` can be
    read off the picture; labelled nodes are drawn as the seed draws them."""
    g = Graph("ids")
    x1, w1 = g.leaf(2.0, "x1"), g.leaf(-3.0, "w1")
    c = g.leaf(1.0)
    n = (x1 * w1).tanh()
    total = (n + c) * (n + c)
    wide = total + total + total
    assert [v.id for v in (c, n, total)] == [2, 4, 7]
    records = {r[0] for r in svg_records(render(g, format="svg", diagnostics=False))}
    assert records == {"x1", "w1", "#2", "#3 x1*w1", "#4 tanh(x1*w1)", "#5 tanh(#3)+#2",
                       "#6 tanh(#3)+#2", "#7 (#4+#2)*(#4+#2)", "#8 (#5*#6)+(#5*#6)",
                       f"#{wide.id} (#7+#7)+(#5*#6)"}
    long = g.leaf(1.0, "first_long_label") * g.leaf(2.0, "second_long_label")
    assert f"{{ #{long.id} mul | data" in draw_dot(g).source  # too long a name: the op's
    assert "#7 (#4+#2)*(#4+#2)" in {r[0] for r in svg_records(render(g, around=7, depth=0))}


def test_draw_dot_of_free_values_is_the_seed_s() -> None:
    a, b = Value(2.0, label="a"), Value(-3.0)
    assert "{  | data -3.0000 | grad 0.0000 }" in draw_dot(a * b).source


def test_draw_dot_refuses_bad_arguments(neuron: dict[str, Value]) -> None:
    with pytest.raises(ValueError, match="format"):
        draw_dot(neuron["o"], format="gif")
    with pytest.raises(ValueError, match="rankdir"):
        draw_dot(neuron["o"], rankdir="XY")
    with pytest.raises(TypeError, match="expected a Value or a Graph"):
        draw_dot(42)


# --- render: SVG, PNG, DOT ---------------------------------------------------------------------


def test_render_svg_has_the_seed_records(neuron: dict[str, Value]) -> None:
    svg = render(neuron["o"], format="svg")
    assert svg.lstrip().startswith(b"<?xml")
    assert set(svg_records(svg)) == SEED_RECORDS
    assert len(svg_records(svg)) == 10
    texts = svg_texts(svg)
    assert sorted(t for t in texts if t in {"+", "*", "tanh"}) == ["*", "*", "+", "+", "tanh"]


def test_render_png(neuron: dict[str, Value]) -> None:
    png = render(neuron["o"], format="png")
    assert png.startswith(PNG_SIGNATURE)
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > height > 0  # left to right: wider than tall


def test_render_dot_is_the_source(neuron: dict[str, Value]) -> None:
    source = render(neuron["o"], format="dot").decode()
    assert source.startswith("digraph {")
    assert "rankdir=LR" in source
    assert source.count("shape=record") == 10
    assert "{ o | data 0.7071 | grad 1.0000 }" in source
    # the DOT text is something dot itself accepts, with the same records
    svg = graphviz.Source(source).pipe(format="svg")
    assert set(svg_records(svg)) == SEED_RECORDS


@pytest.mark.parametrize("rankdir", ["TB", "RL", "BT"])
def test_render_direction(neuron: dict[str, Value], rankdir: str) -> None:
    assert f"rankdir={rankdir}" in render(neuron["o"], format="dot", rankdir=rankdir).decode()


def test_render_refuses_an_unknown_format(neuron: dict[str, Value]) -> None:
    with pytest.raises(ValueError, match="format must be one of svg, png, dot"):
        render(neuron["o"], format="jpeg")


@pytest.mark.parametrize(
    ("path", "fmt"),
    [("out.svg", "svg"), ("OUT.PNG", "png"), ("g.dot", "dot"), ("g.gv", "dot"),
     ("picture", "svg"), ("dir.d/picture", "svg")],
)
def test_format_from_suffix(path: str, fmt: str) -> None:
    assert format_from_suffix(path) == fmt


def test_format_from_an_unknown_suffix() -> None:
    with pytest.raises(ValueError, match=r"cannot tell the picture format from 'x\.gif'"):
        format_from_suffix("x.gif")


# --- neighbourhoods and summaries ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "ids"),
    [(0, {4}), (1, {2, 3, 4, 5}), (2, {1, 2, 3, 4, 5, 6, 8})],
)
def test_neighbourhood_picture(hand: Graph, depth: int, ids: set[int]) -> None:
    dot = graph_dot(hand, around=4, depth=depth)
    assert record_ids(dot) == ids
    edges = layout(dot)["edges"]
    # edges only between drawn values: inputs outside the neighbourhood are left out
    shown = {int(t[1:]) for t, _ in edges if not t.endswith("_op")}
    assert shown <= ids
    if depth == 1:
        assert edges == {("n3_op", "n3"), ("n4_op", "n4"), ("n5_op", "n5"),
                         ("n3", "n4_op"), ("n2", "n4_op"), ("n4", "n5_op")}


def test_neighbourhood_svg(hand: Graph) -> None:
    svg = render(hand, around=4, depth=1)
    assert {r[0] for r in svg_records(svg)} == {"c", "d", "e", "f"}


def test_neighbourhood_of_an_unknown_node(hand: Graph) -> None:
    with pytest.raises(NodeNotFoundError, match="no node 99"):
        render(hand, around=99)


def test_a_neighbourhood_over_the_limit_is_refused(hand: Graph) -> None:
    with pytest.raises(ValueError, match=(
            r"the neighbourhood of node 4 to depth 2 has 7 nodes, over the drawing limit "
            r"of 5: use a smaller depth")):
        render(hand, around=4, depth=2, max_nodes=5)
    assert record_ids(graph_dot(hand, around=4, depth=1, max_nodes=5)) == {2, 3, 4, 5}


def layer_graph(width: int = 16, total: bool = False) -> Graph:
    """An input times ``width`` weights, each through tanh (and with ``total`` summed one by
    one, as ``sum()`` in a micrograd Neuron does)."""
    g = Graph("layer")
    x = g.leaf(0.5, "x")
    outs = [(x * g.leaf(0.1 * i, f"w{i}")).tanh() for i in range(width)]
    if total:
        acc = outs[0]
        for out in outs[1:]:
            acc = acc + out
    return g


def test_a_graph_at_the_limit_is_drawn_whole_one_over_is_not(hand: Graph) -> None:
    assert record_ids(graph_dot(hand, max_nodes=9)) == set(range(9))
    assert record_ids(graph_dot(hand, max_nodes=8)) == set()
    assert "9 nodes, summarised" in graph_dot(hand, max_nodes=8).graph_attr["label"]


def test_a_graph_over_the_limit_becomes_a_summary() -> None:
    g = layer_graph()
    assert len(g) == 1 + 16 * 3
    dot = graph_dot(g, max_nodes=40)
    laid = layout(dot)
    assert not any(o.get("shape") == "record" for o in laid["nodes"].values())
    labels = {o["label"] for o in laid["nodes"].values()}
    # the repeated structure, collapsed with counts
    assert labels == {"leaf ×17\\ngeneration 0", "mul ×16\\ngeneration 1",
                      "tanh ×16\\ngeneration 2"}
    assert "49 nodes, summarised by generation and op" in laid["graph"]["label"]
    svg = render(g, max_nodes=40)
    assert svg_records(svg) == []
    assert "tanh ×16" in svg.decode()


def test_a_summed_layer_is_summarised_by_op() -> None:
    """The sum chain pulls edges from generation 2 (every tanh) to each of 15 generations of
    adds: too long for a summary by generation at this limit, so one box per op."""
    g = layer_graph(total=True)
    laid = layout(graph_dot(g, max_nodes=40))
    assert "64 nodes, summarised by op" in laid["graph"]["label"]
    assert sorted(o["label"] for o in laid["nodes"].values()) == [
        "add ×15\\ngenerations 3-17", "leaf ×17\\ngeneration 0", "mul ×16\\ngeneration 1",
        "tanh ×16\\ngeneration 2"]
    assert laid["edges"] == {("op_leaf", "op_mul"), ("op_mul", "op_tanh"),
                             ("op_tanh", "op_add"), ("op_add", "op_add")}


def chain(length: int) -> Graph:
    """x, then alternately times a constant and tanh: every constant is a leaf."""
    g = Graph("chain")
    v = g.leaf(0.1, "x")
    for i in range(length):
        v = v.tanh() if i % 2 else v * 1.0001
    return g


def test_a_deep_graph_is_summarised_by_op_not_by_generation() -> None:
    """A chain's summary by generation is as big as the chain (and its constants, all in
    generation 0, pull edges across the whole picture): it falls back to a box per op."""
    g = chain(300)
    dot = summary_dot(g, max_nodes=100)
    laid = layout(dot)
    assert "451 nodes, summarised by op" in laid["graph"]["label"]
    labels = sorted(o["label"] for o in laid["nodes"].values())
    assert labels == ["leaf ×151\\ngenerations 0-298", "mul ×150\\ngenerations 1-299",
                      "tanh ×150\\ngenerations 2-300"]
    assert laid["edges"] == {("op_leaf", "op_mul"), ("op_mul", "op_tanh"),
                             ("op_tanh", "op_mul")}
    assert render(g, max_nodes=100).startswith(b"<?xml")


def test_a_summary_within_the_limit_keeps_generations_and_short_edges() -> None:
    """The constants sit next to their use, so no edge spans more than one generation."""
    g = chain(40)
    dot = summary_dot(g, max_nodes=400)
    laid = layout(dot)
    assert "summarised by generation and op" in laid["graph"]["label"]
    generation = {name: int(re.search(r"generation (\d+)", o["label"]).group(1))
                  for name, o in laid["nodes"].items()}
    assert len(generation) == 40 + 20  # 40 op generations, 20 of leaves (x with the first)
    assert all(generation[h] - generation[t] == 1 for t, h in laid["edges"])


def test_a_big_graph_is_never_piped_to_dot_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    piped: list[str] = []
    original = subprocess.run

    def spy(command, *args, **kwargs):
        piped.append(kwargs["input"].decode())
        return original(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    g = chain(600)
    for fmt in ("svg", "png"):
        render(g, format=fmt, max_nodes=50)
    assert len(piped) == 2
    for source in piped:
        assert "shape=record" not in source
        assert len(re.findall(r"^\s*(?!graph )\w+ \[label=", source, re.M)) <= 50


def skip_chain(length: int, window: int = 50, seed: int = 0) -> Graph:
    """Each node adds the one before it and one of the ``window`` before that: few nodes, but
    edges that span many ranks, which is what takes ``dot`` long."""
    rng = random.Random(seed)
    g = Graph("skips")
    g.leaf(0.5)
    g.leaf(0.3)
    while len(g) < length:
        k = len(g)
        g.apply("add", [k - 1, rng.randrange(max(0, k - window), k - 1)])
    return g


def test_layout_size_counts_the_ranks_long_edges_cross() -> None:
    straight = chain(100)  # every edge between neighbouring ranks; constants next to their use
    assert layout_size(straight) == 151 + 100  # 151 records, 100 op nodes
    # x, then x * c: the record of x, an op node, the record of the product; c moves next to
    # its use (rank 1 becomes 0): nothing to cross
    g = Graph("one")
    x = g.leaf(1.0, "x")
    y = x * 2.0
    assert layout_size(g) == 4
    (x + y).tanh()  # x (rank 0) -> (+) (rank 3) crosses ranks 1 and 2
    assert layout_size(g) == 4 + 2 + 2 + 2
    skips = skip_chain(200)
    assert layout_size(skips) > 20 * len(skips)
    assert layout_size(skips, skips.nodes[:10]) < layout_size(skips)


def test_a_graph_too_costly_to_lay_out_is_summarised_and_says_why() -> None:
    g = skip_chain(400)  # dot takes minutes over this one by default, seconds when quick
    picture = plan(g, max_nodes=400)
    assert picture.drawn == "summary" and picture.nodes == 0 and picture.total == 400
    assert "edges span too many ranks to lay out quickly" in picture.reason
    assert "shape=record" not in picture.source
    laid = plan(g, max_nodes=400, max_layout=10**9)
    assert laid.drawn == "graph" and laid.nodes == 400 and laid.reason == ""
    assert plan(layer_graph()).describe() == {"drawn": "graph", "nodes": 49, "total": 49,
                                              "reason": None}
    over = plan(layer_graph(), max_nodes=40).describe()
    assert over == {"drawn": "summary", "nodes": 0, "total": 49,
                    "reason": "49 nodes, more than the 40 drawn whole"}


def test_a_neighbourhood_too_costly_to_lay_out_is_refused() -> None:
    g = skip_chain(300)
    with pytest.raises(ValueError, match=r"the neighbourhood of node 150 to depth 40 has \d+ "
                                         r"nodes whose edges span too many ranks .* use a "
                                         r"smaller depth"):
        plan(g, around=150, depth=40, max_nodes=400, max_layout=2000)
    assert plan(g, around=150, depth=1).drawn == "neighbourhood"


def _dot_children() -> list[int]:
    """Pids of this process's ``dot`` children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        if name == "dot" and parent == os.getpid():
            found.append(int(entry.name))
    return found


def test_dot_is_killed_when_its_time_is_up() -> None:
    picture = plan(skip_chain(400), max_nodes=400, max_layout=10**9)
    start = time.monotonic()
    with pytest.raises(LayoutTimeout, match=r"within 0\.3 s"):
        rendering.layout(picture, timeout=0.3)
    assert time.monotonic() - start < 5
    assert _dot_children() == []


def test_dot_is_killed_when_the_task_is_cancelled() -> None:
    picture = plan(skip_chain(400), max_nodes=400, max_layout=10**9)

    async def main() -> list[int]:
        task = asyncio.ensure_future(layout_async(picture))
        await asyncio.sleep(0.3)
        running = _dot_children()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return running

    assert len(asyncio.run(main())) == 1
    assert _dot_children() == []


def test_a_picture_dot_cannot_finish_in_time_becomes_its_summary() -> None:
    g = skip_chain(800)  # dot takes 20 s and more over it whole
    data, picture = draw(g, max_nodes=800, max_layout=10**9, timeout=4.0)
    assert picture.drawn == "summary"
    assert re.match(r"800 nodes, which dot did not lay out within [\d.]+ s", picture.reason)
    assert b"summarised" in data and data.lstrip().startswith(b"<?xml")
    assert _dot_children() == []


def test_layout_of_a_small_picture_is_graphviz_s_default(neuron: dict[str, Value]) -> None:
    picture = plan(neuron["o"])
    assert picture.command == ["dot", "-Kdot", "-Tsvg"]
    assert rendering.layout(picture) == graphviz.Source(picture.source).pipe(format="svg")
    big = plan(layer_graph(200), max_nodes=1000)
    assert big.size >= QUICK_LAYOUT_FROM and big.command[3:] == list(QUICK_LAYOUT)


# --- diagnostics in the picture ------------------------------------------------------------------


def diagnosed_graph() -> tuple[Graph, dict[str, Value]]:
    g = Graph("sick")
    g.leaf(1.0, "spare")  # unused: a hint
    x = g.leaf(5.0, "x")
    t = x.tanh()  # saturated: a warning
    t.label = "t"
    bad = g.leaf(float("inf"), "bad")
    s = (t + bad).tanh()  # tanh(inf) = 1 saturated; the sum is not finite: an error and more
    s.label = "s"
    fine = g.leaf(0.5, "fine")
    y = s * fine
    y.label = "y"
    g.backward(y)
    return g, {v.label: v for v in g.nodes if v.label}


def test_diagnosed_nodes_carry_a_colour_and_their_codes() -> None:
    g, v = diagnosed_graph()
    nodes = layout(graph_dot(g))["nodes"]

    def node(label: str) -> dict:
        return nodes[f"n{v[label].id}"]

    assert node("spare")["fillcolor"] == SEVERITY_COLOURS["hint"]
    assert node("spare")["tooltip"].startswith("unused-leaf: ")
    assert node("t")["fillcolor"] == SEVERITY_COLOURS["warning"]
    assert node("t")["tooltip"].startswith("saturated-tanh: tanh at 't'")
    assert node("bad")["fillcolor"] == SEVERITY_COLOURS["error"]
    assert "non-finite-value" in node("bad")["tooltip"]
    for label in ("x", "fine", "y"):
        assert "fillcolor" not in node(label) and "tooltip" not in node(label)
    assert all(o.get("style") == "filled" for o in nodes.values() if "fillcolor" in o)
    # filled, with the outline left black: the record's field separators stay visible
    assert not any("color" in o for o in nodes.values())


def test_the_worst_severity_wins_and_every_code_is_in_the_tooltip() -> None:
    g = Graph("two")
    x = g.leaf(5.0, "x")
    t = x.tanh()  # saturated: a warning
    g.backward(t)
    t.grad = float("inf")  # and a non-finite gradient: an error
    node = layout(graph_dot(g))["nodes"][f"n{t.id}"]
    assert node["fillcolor"] == SEVERITY_COLOURS["error"]
    assert "saturated-tanh: " in node["tooltip"] and "non-finite-grad: " in node["tooltip"]


def test_diagnostics_in_the_svg_and_switched_off() -> None:
    g, _ = diagnosed_graph()
    svg = render(g).decode()
    assert f'fill="{SEVERITY_COLOURS["warning"]}"' in svg
    assert "saturated&#45;tanh: tanh at &#39;t&#39;" in svg  # the tooltip, as xlink:title
    plain = render(g, diagnostics=False).decode()
    assert not any(colour in plain for colour in SEVERITY_COLOURS.values())
    assert "saturated" not in plain
    assert svg_records(plain) == svg_records(svg)


# --- the committed picture -------------------------------------------------------------------


def test_committed_picture_of_the_seed_neuron() -> None:
    """docs/seed-neuron.svg was drawn by `opgraph render` from the seed's neuron after
    backward (see the README); it shows every value as a record."""
    svg = (REPO / "docs" / "seed-neuron.svg").read_bytes()
    records = svg_records(svg)
    assert len(records) == 10
    assert set(records) == SEED_RECORDS
    ops = sorted(t for t in svg_texts(svg) if t in {"+", "*", "tanh"})
    assert ops == ["*", "*", "+", "+", "tanh"]


# --- summaries at scale: the moons step by model part -------------------------------------------


@pytest.fixture(scope="module")
def moons_graph() -> Graph:
    from scale_graphs import moons_step

    return moons_step(track=False)[0]


def boxes(source: str) -> dict[str, list[str]]:
    """The boxes of a summary's DOT source: name -> the lines of its label."""
    return {name: label.split("\\n") for name, label in
            re.findall(r'^\s*(p\d+) \[label="(.*?)"', source, re.M)}


def box_names(source: str) -> dict[str, str]:
    return {name: lines[0] for name, lines in boxes(source).items()}


def arrows(source: str) -> dict[tuple[str, str], int]:
    """``(from box, to box) -> uses`` of a summary by part (names as the boxes are titled)."""
    names = box_names(source)
    return {(names[a], names[b]): int(n.replace(",", "")) for a, b, n in
            re.findall(r'^\s*(p\d+) -> (p\d+) \[label="?([\d,]+)"?\]', source, re.M)}


def plain_parts(graph: Graph) -> list[str | None]:
    """Each node's part, recomputed plainly: a dotted label names it; an unlabelled node takes
    the part its users all share (a labelled user counts as its label's parent); else None."""
    nodes = graph.nodes
    users: list[list[int]] = [[] for _ in nodes]
    for v in nodes:
        for i in v.inputs:
            users[i.id].append(v.id)
    part: list[str | None] = [None] * len(nodes)
    inherited: list[str | None] = [None] * len(nodes)  # what a node passes on to its inputs
    for v in reversed(nodes):
        if v.label:
            part[v.id] = v.label if "." in v.label else None
            inherited[v.id] = v.label.rpartition(".")[0] or None
            continue
        found = {inherited[u] for u in users[v.id]}
        if len(found) == 1 and None not in found:
            part[v.id] = inherited[v.id] = found.pop()
    return part


def test_the_moons_step_is_summarised_by_model_part(moons_graph: Graph) -> None:
    g = moons_graph
    picture = plan(g)
    assert (picture.drawn, picture.summary, picture.total) == ("summary", "model part", 65818)
    assert picture.reason == "65818 nodes, more than the 400 drawn whole"
    assert "moons: 65818 nodes, summarised by model part" in picture.source
    parts = plain_parts(g)
    top = [p.split(".")[0] if p else None for p in parts]
    expected = {}
    for v, key in zip(g.nodes, top, strict=True):
        if key is None:
            key = f"{'leaf' if v.is_leaf else v.op} (in no part)"
        expected.setdefault(key, []).append(v)
    drawn = boxes(picture.source)
    assert sorted(lines[0] for lines in drawn.values()) == sorted(expected)
    for lines in drawn.values():
        members = expected[lines[0]]
        count = len(members)
        leaves = sum(v.is_leaf for v in members)
        assert any(line.startswith(f"{count:,} ") for line in lines), (lines, count)
        if leaves and leaves < count:
            assert f"{count:,} nodes ({leaves:,} leaves)" in lines
        norm = math.sqrt(sum(v.grad ** 2 for v in members))
        if count > 1:
            assert f"grad norm {norm:.3g}" in " ".join(lines)
    layer0 = next(lines for lines in drawn.values() if lines[0] == "layer0")
    assert layer0[1] == "16 parts: neuron0 … neuron15"
    assert layer0[3] == "3,200 mul, 3,200 add, 1,600 relu"
    # the arrows count the uses between boxes
    uses: dict[tuple[str, str], int] = {}
    box_of = {v.id: key for key, members in expected.items() for v in members}
    for v in g.nodes:
        for i in v.inputs:
            a, b = box_of[i.id], box_of[v.id]
            if a != b:
                uses[a, b] = uses.get((a, b), 0) + 1
    assert arrows(picture.source) == uses
    assert uses["layer0", "layer1"] == 25_600
    # the dead unit's layer is coloured, and says so
    layer1 = re.search(r'p\d+ \[label="layer1\\n[^"]*"([^\]]*)\]', picture.source).group(1)
    assert f'fillcolor="{SEVERITY_COLOURS["warning"]}"' in layer1
    assert 'tooltip="dead-relu ×1"' in layer1
    png = layout_picture(picture, "png")
    assert png.startswith(PNG_SIGNATURE)


def layout_picture(picture, fmt: str) -> bytes:
    from opgraph.render import Picture
    from opgraph.render import layout as run_dot

    return run_dot(Picture(picture.source, fmt, picture.drawn, 0, picture.total,
                           picture.size))


def test_a_summary_by_part_goes_as_deep_as_stays_readable(moons_graph: Graph,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """One level down, the moons step would be 41 boxes and 329 arrows (16 neurons each fed by
    the 16 before): too many; allowed that many, the summary is by neuron."""
    shallow = box_names(plan(moons_graph).source).values()
    assert set(shallow) == {"layer0", "layer1", "layer2", "svm_loss", "l2",
                            "leaf (in no part)", "add (in no part)"}
    monkeypatch.setattr(rendering, "MAX_LINKS", 329)
    assert set(box_names(plan(moons_graph).source).values()) == set(shallow)  # (41 boxes)
    monkeypatch.setattr(rendering, "MAX_BOXES", 41)
    deep = set(box_names(plan(moons_graph).source).values())
    assert {f"layer{k}.neuron{i}" for k in (0, 1) for i in range(16)} <= deep
    assert {"layer2.neuron0", "svm_loss.hinge", "l2.square", "svm_loss", "l2"} <= deep
    assert len(deep) == 41


def test_the_inside_of_a_part(moons_graph: Graph) -> None:
    layer = plan(moons_graph, part="layer1")
    assert layer.drawn == "summary" and layer.reason == "the inside of part 'layer1' was asked for"
    assert "summarised by model part (inside layer1)" in layer.source
    names = set(box_names(layer.source).values())
    assert names == {f"layer1.neuron{i}" for i in range(16)} | {"layer0", "layer2", "l2"}
    outside = re.findall(r'label="(layer0|layer2|l2)\\n[^"]*"[^\]]*style=dashed', layer.source)
    assert sorted(outside) == ["l2", "layer0", "layer2"]
    assert arrows(layer.source)["layer0", "layer1.neuron3"] == 1_600  # 16 inputs, 100 samples
    neuron = plan(moons_graph, part="layer1.neuron3")
    inside = set(box_names(neuron.source).values())
    assert inside == ({f"layer1.neuron3.w{i}" for i in range(16)} | {
        "layer1.neuron3.b", "layer1.neuron3.sum", "layer1.neuron3.act", "layer1.neuron3",
        "layer0", "layer2", "l2"})
    act = boxes(neuron.source)[next(k for k, n in box_names(neuron.source).items()
                                    if n == "layer1.neuron3.act")]
    assert act[1:4] == ["100 nodes", "100 relu", "data 0 to 0, mean 0"]
    assert act[-1] == "dead-relu ×1"
    w0 = moons_graph.find("layer1.neuron3.w0")[0]
    weight = next(lines for lines in boxes(neuron.source).values()
                  if lines[0] == "layer1.neuron3.w0")
    assert weight == ["layer1.neuron3.w0", "1 leaf", f"data {w0.data:.3g}, grad {w0.grad:.3g}"]


def test_summaries_refuse_what_they_cannot_draw(moons_graph: Graph) -> None:
    with pytest.raises(ValueError, match=r"graph 'moons' has no node in part 'layer9' \(parts "
                                         r"at that depth: l2, layer0, layer1, layer2, "
                                         r"svm_loss\)"):
        plan(moons_graph, part="layer9")
    with pytest.raises(ValueError, match=r"give around .* or part .*, not both"):
        plan(moons_graph, part="layer1", around=3)
    with pytest.raises(ValueError, match="by must be one of auto, part, op, got 'line'"):
        plan(moons_graph, by="line")
    with pytest.raises(ValueError, match="summarised by part: give by='part'"):
        plan(moons_graph, part="layer1", by="op")
    with pytest.raises(ValueError, match=r"graph 'chain' has no model parts .*: summarise it "
                                         "by op"):
        plan(chain(600), by="part")
    assert plan(chain(20), by="part").drawn == "graph"  # (small: drawn whole, no summary)


def test_the_moons_step_by_op_and_its_neighbourhoods(moons_graph: Graph) -> None:
    by_op = plan(moons_graph, by="op")
    assert by_op.summary == "op" and "summarised by op" in by_op.source
    assert "relu ×3300" in by_op.source
    near = plan(moons_graph, around=343, depth=2)
    assert near.drawn == "neighbourhood"
    from opgraph.structure import near as around
    from opgraph.structure import structure

    assert record_ids(graph_dot(moons_graph, around=343, depth=2)) == set(
        around(structure(moons_graph), 343, 2).tolist())


def test_the_summary_by_generation_and_op_is_what_networkx_gives() -> None:
    """The arrays give the boxes and arrows of the summary networkx's generations gave."""
    import networkx as nx

    from opgraph.analysis import to_networkx

    rng = random.Random(5)
    g = Graph("random")
    for i in range(30):
        g.leaf(rng.uniform(-1, 1), f"x{i}")
    for _ in range(150):
        a, b = rng.randrange(len(g)), rng.randrange(len(g))
        g.apply(rng.choice(["add", "mul"]), [a, b]) if rng.random() < 0.7 else g.apply(
            "tanh", [a])
    nxg = to_networkx(g)
    gen = {n: k for k, members in enumerate(nx.topological_generations(nxg)) for n in members}
    for n in list(gen):
        if g.nodes[n].op is None and nxg.out_degree(n):
            gen[n] = min(gen[s] for s in nxg.successors(n)) - 1
    group = {n: (gen[n], g.nodes[n].op or "leaf") for n in gen}
    sizes: dict[tuple, int] = {}
    for key in group.values():
        sizes[key] = sizes.get(key, 0) + 1
    links: dict[tuple, int] = {}
    for a, b in nxg.edges:
        links[group[a], group[b]] = links.get((group[a], group[b]), 0) + 1
    laid = layout(summary_dot(g, max_nodes=10_000))
    assert "summarised by generation and op" in laid["graph"]["label"]
    assert {o["label"] for o in laid["nodes"].values()} == {
        f"{op} ×{n}\\ngeneration {k}" for (k, op), n in sizes.items()}
    assert laid["edges"] == {(f"g{a[0]}_{a[1]}", f"g{b[0]}_{b[1]}") for a, b in links}
    edge_labels = re.findall(r"^\s*(g\S+) -> (g\S+) \[label=\"?(\d*)\"?\]",
                             summary_dot(g, max_nodes=10_000).source, re.M)
    assert {(a, b): int(n or 1) for a, b, n in edge_labels} == {
        (f"g{a[0]}_{a[1]}", f"g{b[0]}_{b[1]}"): n for (a, b), n in links.items()}


def test_a_graph_with_a_cycle_is_summarised_by_op() -> None:
    g = Graph("loop")
    x = g.leaf(0.3, "x")
    y = x.tanh()
    z = y.exp()
    y._inputs = (z,)  # what a corrupt import could produce: y -> z -> y
    source = summary_dot(g, max_nodes=1).source
    assert "summarised by op" in source
    assert {"leaf ×1", "tanh ×1", "exp ×1"} == set(re.findall(r'label="(\w+ ×\d+)"', source))


def test_a_neighbourhood_through_a_hub_shows_a_few_of_its_users_and_counts_the_rest() -> None:
    """In a long accumulation every term uses ``x`` (and every 100th the same weight): a
    neighbourhood that reaches them walks to the 10 users nearest the centre, and a note
    counts the others."""
    from scale_graphs import accumulation

    from opgraph.analysis import neighbourhood

    g = accumulation(20_000, shared=100)
    x = g.find("x")[0]
    users = len({v.id for v in g.nodes if x in v.inputs})
    center = 10_002  # a product w * x, half way along
    assert g.nodes[center].op == "mul"
    assert len(neighbourhood(g, center, 2)) > users  # every user of x, uncapped
    ids, hidden = rendering.capped_neighbourhood(g, center, 2)
    (w,) = [i for i in g.nodes[center].inputs if i is not x]  # a shared weight: 200 uses
    w_users = len({v.id for v in g.nodes if w in v.inputs})
    assert hidden == {x.id: (0, users - 10), w.id: (0, w_users - 10)}
    for hub in (x, w):
        nearest = sorted((v.id for v in g.nodes if hub in v.inputs),
                         key=lambda i: abs(i - center))
        assert set(nearest[:10]) <= set(ids)
    picture = plan(g, around=center, depth=2, format="dot")
    assert picture.drawn == "neighbourhood" and picture.nodes == len(ids) < 40
    assert f'n{x.id}_more_out [label="… {users - 10:,} more users"' in picture.source
    assert f"n{x.id} -> n{x.id}_more_out" in picture.source
    assert record_ids(graph_dot(g, around=center, depth=2)) == set(ids)


@pytest.mark.parametrize("seed", range(5))
def test_a_neighbourhood_without_hubs_is_the_whole_neighbourhood(seed: int) -> None:
    from opgraph.analysis import neighbourhood

    rng = random.Random(seed)
    g = Graph("random")
    for i in range(6):
        g.leaf(rng.uniform(-1, 1), f"x{i}")
    for _ in range(60):
        k = len(g)
        g.apply("add", [rng.randrange(max(0, k - 8), k), rng.randrange(max(0, k - 8), k)])
    for center in range(0, len(g), 7):
        for depth in (0, 1, 3):
            whole = [v.id for v in neighbourhood(g, center, depth)]
            ids, hidden = rendering.capped_neighbourhood(g, center, depth, fan=1000)
            assert (ids, hidden) == (whole, {})
