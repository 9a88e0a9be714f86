"""The language server's parts that need no editor: following edits, matching files, the views'
text, the statistics computed without ``graph.aggregate``, and the checks of a message's shape."""

from __future__ import annotations

import math
import os

import pytest
from opgraph_lsp import rpcio
from opgraph_lsp.fetch import group_diagnostics
from opgraph_lsp.lines import LineTracker, split_lines, to_index, unit_length
from opgraph_lsp.paths import KeyCache, file_key, path_to_uri, uri_to_path
from opgraph_lsp.views import LineData, NodeInfo, StatsAccumulator, num, summary_label

TEXT = "a = 1\nb = a * 2\nc = b + a\n"


def shown(t: LineTracker) -> list[tuple[int, int]]:
    return list(t.clean_lines())


# --- following edits ---------------------------------------------------------------------------


def test_split_lines_as_an_editor_counts_them():
    assert split_lines("a\nb") == ["a", "b"]
    assert split_lines("a\r\nb\n") == ["a", "b", ""]
    assert split_lines("") == [""]


def test_lines_inserted_above_shift_the_lines_below():
    t = LineTracker(TEXT)
    t.apply((0, 0), (0, 0), "# one\n# two\n")
    assert t.lines[:3] == ["# one", "# two", "a = 1"]
    assert shown(t) == [(2, 0), (3, 1), (4, 2), (5, 3)]
    assert t.buffer_line(1) == 3


def test_lines_deleted_shift_the_lines_below_and_vanish():
    t = LineTracker(TEXT)
    t.apply((0, 0), (1, 0), "")  # the whole first line, with its line break
    assert t.lines[0] == "b = a * 2"
    assert shown(t) == [(0, 1), (1, 2), (2, 3)]
    assert t.buffer_line(0) is None


def test_an_edited_line_shows_nothing_until_its_text_is_back():
    t = LineTracker(TEXT)
    t.apply((1, 8), (1, 9), "3")  # b = a * 3
    assert t.source_line(1) is None
    assert t.buffer_line(1) is None
    assert t.source_line(0) == 0 and t.source_line(2) == 2
    t.apply((1, 8), (1, 9), "2")  # undone
    assert t.source_line(1) == 1


def test_a_line_break_at_the_end_or_start_of_a_line_keeps_it():
    t = LineTracker(TEXT)
    t.apply((0, 5), (0, 5), "\n")  # Enter at the end of line 0 (o in Vim)
    assert shown(t) == [(0, 0), (2, 1), (3, 2), (4, 3)]
    t = LineTracker(TEXT)
    t.apply((1, 0), (1, 0), "\n")  # Enter at the start of line 1 (O in Vim)
    assert shown(t) == [(0, 0), (2, 1), (3, 2), (4, 3)]


def test_joining_lines_changes_the_first_and_removes_the_second():
    t = LineTracker(TEXT)
    t.apply((0, 5), (1, 0), " ")  # J in Vim: "a = 1 b = a * 2"
    assert t.lines[0] == "a = 1 b = a * 2"
    assert shown(t) == [(1, 2), (2, 3)]


def test_a_line_split_in_the_middle_shows_nothing():
    t = LineTracker(TEXT)
    t.apply((1, 3), (1, 3), "\n")
    assert shown(t) == [(0, 0), (3, 2), (4, 3)]


def test_pasted_lines_are_new_and_the_line_they_push_down_keeps_its_values():
    t = LineTracker(TEXT)
    t.apply((2, 0), (2, 0), "x = 1\ny = 2\n")
    assert shown(t) == [(0, 0), (1, 1), (4, 2), (5, 3)]


def test_a_whole_document_replaced_is_matched_by_diff():
    t = LineTracker(TEXT)
    t.replace_all("import x\na = 1\nb = a * 9\nc = b + a\n")
    assert shown(t) == [(1, 0), (3, 2), (4, 3)]  # line 2 edited in place: dirty


def test_rebase_after_a_save_maps_old_lines_to_new():
    t = LineTracker(TEXT)
    t.apply((0, 0), (0, 0), "import x\n")
    t.apply((2, 8), (2, 9), "5")
    moved = t.rebase()
    assert moved == {0: 1, 2: 3, 3: 4}
    assert shown(t) == [(i, i) for i in range(5)]


def test_rebase_with_the_saved_text():
    t = LineTracker(TEXT)
    moved = t.rebase("z = 0\n" + TEXT)
    assert moved == {0: 1, 1: 2, 2: 3, 3: 4}


def test_positions_in_client_units():
    line = "x = '😋' + 'é'"
    assert unit_length(line, "utf-16") == len(line) + 1
    assert unit_length(line, "utf-8") == len(line.encode())
    assert unit_length(line, "utf-32") == len(line)
    # the closing quote after the emoji: index 6; utf-16 unit 7; utf-8 byte 9
    assert to_index(line, 7, "utf-16") == 6
    assert to_index(line, 9, "utf-8") == 6
    assert to_index(line, 6, "utf-32") == 6
    assert to_index(line, 999, "utf-16") == len(line)


def test_edits_at_and_past_the_end_are_clamped():
    t = LineTracker("a\n")
    t.apply((1, 0), (1, 0), "b\n")
    assert t.lines == ["a", "b", ""]
    t.apply((9, 0), (9, 0), "c")
    assert t.lines[-1] == "c"


# --- matching files ----------------------------------------------------------------------------


def test_uri_percent_encoding_and_hosts(tmp_path):
    path = tmp_path / "my proj" / "tränen.py"
    path.parent.mkdir()
    path.write_text("x = 1\n")
    uri = path_to_uri(str(path))
    assert "%20" in uri and "%C3%A4" in uri
    assert uri_to_path(uri) == str(path)
    assert uri_to_path("file://localhost" + uri[len("file://"):]) == str(path)
    assert uri_to_path("file://elsewhere/x.py") is None
    assert uri_to_path("untitled:Untitled-1") is None


def test_a_symlink_and_its_target_are_one_file(tmp_path):
    real = tmp_path / "real.py"
    real.write_text("x = 1\n")
    link = tmp_path / "link.py"
    os.symlink(real, link)
    other = tmp_path / "other.py"
    other.write_text("x = 1\n")
    assert file_key(str(link)) == file_key(str(real))
    assert file_key(str(tmp_path / "." / "real.py")) == file_key(str(real))
    assert file_key(str(other)) != file_key(str(real))


def test_files_that_cannot_be_reached_compare_by_path_and_case_where_ignored(tmp_path):
    gone = str(tmp_path / "Gone.py")
    assert file_key(gone) == file_key(str(tmp_path / "sub" / ".." / "Gone.py"))
    assert file_key(gone) != file_key(gone.lower())
    assert file_key(gone, case_insensitive=True) == file_key(gone.lower(),
                                                             case_insensitive=True)


def test_key_cache_is_bounded(tmp_path):
    cache = KeyCache(size=2)
    for i in range(5):
        cache.key(str(tmp_path / f"{i}.py"))
    assert len(cache._keys) == 2


# --- the views --------------------------------------------------------------------------------


def node(i, label="", op=None, inputs=(), data=1.0, grad=0.5, symbol=""):
    return NodeInfo(i, op, symbol, list(inputs), data, grad, label)


def test_numbers_read_as_four_digits():
    assert num(0.7071067811865476) == "0.7071"
    assert num(-1.4999999999999996) == "-1.5"
    assert num(0.0) == "0"
    assert num(1e-9) == "1e-9"
    assert num(123456789.0) == "1.235e8"
    assert num(math.nan) == "nan" and num(-math.inf) == "-inf" and num(None) == "–"


def test_a_few_nodes_are_listed_by_name():
    x1, w1 = node(0, "x1", data=2.0), node(1, "w1", data=-3.0)
    prod = node(2, op="mul", inputs=[0, 1], data=-6.0, grad=0.5, symbol="*")
    d = LineData("demo", 7, 20, 1, None, nodes=[prod], inputs={0: x1, 1: w1})
    assert d.label() == "x1*w1 = -6 ∇ 0.5"
    assert d.label(graph_prefix=True) == "demo: x1*w1 = -6 ∇ 0.5"
    md = d.tooltip()
    assert "`demo` version 7" in md and "| `x1*w1` #2 | `mul` | `x1`, `w1` | -6 | 0.5 |" in md


def test_many_nodes_are_summarised():
    stats = {"count": 64000, "leaves": 0, "ops": {"mul": 40000, "add": 24000},
             "data": {"min": -1.25, "mean": 0.1, "max": 3.5},
             "grad": {"min": -0.01, "mean": 0.0, "max": 0.02}, "grad_norm": 0.5321,
             "zero_grad": 12, "nonfinite_data": 0, "nonfinite_grad": 2, "first": 976}
    d = LineData("moons", 3, 66, 64000, stats, period=640, calls=100)
    assert d.label() == "64,000 nodes · data [-1.25, 3.5] · ‖∇‖ 0.5321 · 2 non-finite"
    md = d.tooltip()
    assert "100 calls of 640 nodes each" in md
    assert "`mul` 40,000, `add` 24,000" in md
    assert "| grad | -0.01 | 0 | 0.02 |" in md
    assert "non-finite data 0, grad 2" in md and "first node #976" in md


def test_summary_label_without_data():
    assert summary_label(5, {"count": 5, "data": None}) == "5 nodes · data – · ‖∇‖ –"


def test_statistics_computed_here_match_a_plain_recomputation():
    records = [{"id": i, "op": None if i % 3 == 0 else "mul", "data": d, "grad": g}
               for i, (d, g) in enumerate([(1.0, 0.0), (-2.0, 3.0), (math.inf, 4.0),
                                           (0.5, math.nan), (7.0, -1.0)])]
    acc = StatsAccumulator()
    for r in records:
        acc.add(r)
    s = acc.stats()
    assert s["count"] == 5 and s["leaves"] == 2 and s["ops"] == {"mul": 3}
    assert s["data"] == {"min": -2.0, "mean": pytest.approx(6.5 / 4), "max": 7.0}
    assert s["grad"] == {"min": -1.0, "mean": pytest.approx(6.0 / 4), "max": 4.0}
    assert s["grad_norm"] == pytest.approx(math.sqrt(9 + 16 + 1))
    assert s["zero_grad"] == 1 and s["nonfinite_data"] == 1 and s["nonfinite_grad"] == 1
    assert s["first"] == 0


def test_diagnostics_grouped_by_code_and_line():
    items = [{"code": "dead-relu", "severity": "warning", "node": i, "message": "off"}
             for i in range(4)]
    items.append({"code": "non-finite-value", "severity": "error", "node": 9,
                  "message": "inf", "count": 3})
    items.append({"code": "dead-relu", "severity": "info", "node": 99, "message": "?"})
    sources = {0: ("/a.py", 3), 1: ("/a.py", 3), 2: ("/a.py", 4), 3: ("/b.py", 1),
               9: ("/a.py", 3)}
    groups = group_diagnostics(items, sources, lambda f: f == "/a.py")
    assert [(g.line, g.code, g.count, g.occurrences, g.nodes) for g in groups] == [
        (3, "dead-relu", 2, 2, [0, 1]), (3, "non-finite-value", 1, 3, [9]),
        (4, "dead-relu", 1, 1, [2])]


# --- the shape of messages ---------------------------------------------------------------------


@pytest.mark.parametrize(("data", "answer_id", "problem"), [
    ({"jsonrpc": "2.0", "id": 1, "method": "x"}, 1, None),
    ({"jsonrpc": "2.0", "method": "x", "params": {}}, None, None),
    ({"jsonrpc": "2.0", "id": "a", "result": None}, "a", None),
    ([{"jsonrpc": "2.0", "id": 1, "method": "x"}], None, "batch"),
    (3, None, "JSON object"),
    ({"id": 4, "method": "x"}, 4, "jsonrpc"),
    ({"jsonrpc": "2.0", "id": [1], "method": "x"}, None, "number or a string"),
    ({"jsonrpc": "2.0", "id": 5, "method": 7}, 5, "method must be a string"),
    ({"jsonrpc": "2.0", "id": 6, "method": "x", "params": 3}, 6, "params"),
    ({"jsonrpc": "2.0", "id": 7}, 7, "no method"),
])
def test_message_shapes(data, answer_id, problem):
    msgid, found = rpcio.check_message(data)
    assert msgid == answer_id
    if problem is None:
        assert found is None
    else:
        assert problem in found


def test_unlabelled_nodes_are_named_by_their_inputs_two_levels_deep():
    x1, w1, x2, w2 = (node(i, name) for i, name in enumerate(["x1", "w1", "x2", "w2"]))
    a = node(4, op="mul", inputs=[0, 1], symbol="*")
    b = node(5, op="mul", inputs=[2, 3], symbol="*")
    s = node(6, op="add", inputs=[4, 5], symbol="+")
    far = node(7, op="tanh", inputs=[6], symbol="tanh")
    known = {n.id: n for n in (x1, w1, x2, w2, a, b, s)}
    from opgraph_lsp.views import node_name

    assert node_name(s, known) == "x1*w1+x2*w2"
    assert node_name(far, {**known, 7: far}) == "tanh(add#6)"  # two levels only
    bare = node(8, op="mul", inputs=[])  # known only by its name: its inputs were not read
    assert node_name(node(9, op="add", inputs=[8, 0], symbol="+"), {8: bare, 0: x1}) \
        == "mul#8+x1"
