"""The typer CLI: every command through CliRunner, and each at least once as a real process.

Exit codes: 0 done, 1 the work failed (bad file, failed check), 2 bad usage. Errors are one line
on stderr, usage errors too (at a terminal a refused expression adds the text with carets under
the place), never a traceback.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import msgpack
import pytest

import opgraph
from opgraph.registry import default_registry

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"

SEED_BINDINGS = ["x1=2", "x2=0", "w1=-3", "w2=1", "b=6.8813735870195432"]


def svg_records(svg: bytes | str) -> set[tuple[str, ...]]:
    """(label, data, grad) of every record node of an SVG drawn by graphviz."""
    found = set()
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        if group.get("class") == "node":
            texts = tuple(t.text or "" for t in group.iter(f"{SVG}text"))
            if len(texts) == 3 and texts[1].startswith("data "):
                found.add((texts[0].strip(), texts[1][5:], texts[2][5:]))
    return found


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """Exactly one line on stderr, ``error: ...``, holding every fragment; no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, stderr)


def assert_usage_error(result, *fragments: str) -> None:
    """Exit code 2 and one line on stderr, ``error: ... (see 'opgraph CMD --help')``: not
    click's four-line block; nothing on stdout, no traceback."""
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert_one_line_error(result.stderr, *fragments)
    assert re.search(r" \(see 'opgraph[a-z ]*--help'\)$", result.stderr.strip()), result.stderr
    assert "Usage:" not in result.stderr


# --- opgraph ops ---------------------------------------------------------------------------------


def test_ops_table(invoke) -> None:
    result = invoke("ops")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert f"{len(default_registry())} ops" in out
    header = next(line for line in out.splitlines() if "arity" in line)
    assert re.search(r"op\W+arity\W+symbol\W+plugin\W+doc", header)
    assert re.search(r"tanh\s*│\s*1\s*│\s*tanh\s*│\s*activations\s*│\s*hyperbolic tangent", out)
    assert re.search(r"mul\s*│\s*2\s*│\s*\*\s*│\s*arithmetic", out)
    assert "pow_const" in out and "(exponent)" in out


def test_ops_json(invoke) -> None:
    result = invoke("ops", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == default_registry().names()
    by_name = {r["name"]: r for r in rows}
    assert by_name["tanh"] == {"name": "tanh", "arity": 1, "symbol": "tanh",
                               "plugin": "activations", "attrs": [],
                               "doc": "hyperbolic tangent", "clash": False}
    assert by_name["pow_const"]["attrs"] == ["exponent"]
    assert by_name["add"]["symbol"] == "+" and by_name["add"]["plugin"] == "arithmetic"


def test_ops_check_passes(invoke) -> None:
    result = invoke("ops", "check", "--points", "5")
    assert result.exit_code == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(default_registry())
    assert all(line.startswith("ok    ") for line in lines)
    assert any(line.startswith("ok    tanh (activations)") for line in lines)


def test_ops_check_json_and_one_op(invoke) -> None:
    result = invoke("ops", "check", "--op", "tanh", "--op", "log", "--points", "4", "--json")
    assert result.exit_code == 0
    reports = json.loads(result.stdout)
    assert [(r["op"], r["ok"], r["points"]) for r in reports] == [("tanh", True, 4),
                                                                 ("log", True, 4)]


def test_ops_check_unknown_op_is_bad_usage(invoke) -> None:
    assert_usage_error(invoke("ops", "check", "--op", "tahn"), "did you mean 'tanh'")


def test_ops_check_names_the_op_whose_rule_is_wrong(invoke, bad_ops_installed) -> None:
    result = invoke("ops", "check", "--points", "3")
    assert result.exit_code == 1
    assert re.search(r"^FAIL  badsquare \(badops\): 3 disagreement", result.stdout, re.M)
    assert "ok    tanh" in result.stdout  # the others were checked too
    assert_one_line_error(result.stderr, "badsquare")


def test_ops_and_ops_check_as_processes(opgraph_cmd, bad_ops_site: Path) -> None:
    table = opgraph_cmd("ops")
    assert table.returncode == 0 and "activations" in table.stdout and "tanh" in table.stdout
    as_json = opgraph_cmd("ops", "--json")
    assert {r["name"] for r in json.loads(as_json.stdout)} >= {"add", "tanh", "pow_const"}
    ok = opgraph_cmd("ops", "check", "--points", "3")
    assert ok.returncode == 0, ok.stderr
    assert "badsquare" not in ok.stdout
    # the same command with a distribution on PYTHONPATH whose plugin has a wrong rule
    bad = opgraph_cmd("ops", "check", "--points", "3", pythonpath=bad_ops_site)
    assert bad.returncode == 1
    assert "FAIL  badsquare (badops)" in bad.stdout
    assert_one_line_error(bad.stderr,
                          "gradient rule disagrees with finite differences: badsquare")


# --- opgraph eval --------------------------------------------------------------------------------


def test_eval_table(invoke) -> None:
    result = invoke("eval", "3*x**2 - 4*x + 5", "x=3")
    assert result.exit_code == 0, result.stderr
    assert re.search(r"│ x\s*│ 3\.0\s*│ 14\.0\s*│", result.stdout)
    assert re.search(r"│ \(result\)\s*│ 20\.0\s*│", result.stdout)
    assert result.stderr == ""


def test_eval_json(invoke) -> None:
    result = invoke("eval", "3*x**2 - 4*x + 5", "x=3", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"value": 20.0, "grads": {"x": 14.0}}


def test_eval_the_seed_neuron(invoke) -> None:
    result = invoke("eval", "tanh(x1*w1 + x2*w2 + b)", *SEED_BINDINGS, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["value"] == pytest.approx(0.7071067811865476)
    assert data["grads"] == pytest.approx({"x1": -1.5, "w1": 1.0, "x2": 0.5, "w2": 0.0,
                                           "b": 0.5})


def test_eval_saves_and_draws(invoke, tmp_path: Path) -> None:
    saved, drawn = tmp_path / "f.opg", tmp_path / "f.svg"
    result = invoke("eval", "3*x**2 - 4*x + 5", "x=3", "--save", saved, "--svg", drawn)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {saved}" in result.stderr and f"wrote {drawn}" in result.stderr
    g = opgraph.load(saved)
    assert len(g) == 9  # 3, x, x**2, 3*x**2, 4, 4*x, -, 5, +
    assert g.outputs[-1].data == 20.0
    (x,) = g.find("x")
    assert (x.data, x.grad) == (3.0, 14.0)
    records = svg_records(drawn.read_bytes())
    assert len(records) == 9
    assert ("x", "3.0000", "14.0000") in records
    assert any(record[1:] == ("20.0000", "1.0000") for record in records)  # the result


@pytest.mark.parametrize(
    ("expression", "reason", "column"),
    [
        ("x.real", "attribute access ('x.real') is not allowed", 2),
        ("x + y.real", "attribute access ('y.real') is not allowed", 6),
        ("x[0]", "subscripts ('x[0]') are not allowed", 2),
        ("__import__('os')", "no op named '__import__'", 1),
        ("1 + foo(x)", "no op named 'foo'", 5),
        ("print(x)", "no op named 'print'", 1),
        ("x if y else 1", "conditional expressions", 1),
    ],
)
def test_eval_refuses_with_the_position(invoke, expression: str, reason: str,
                                        column: int) -> None:
    result = invoke("eval", expression, "x=1", "y=2")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    (first,) = result.stderr.splitlines()  # one line when stderr is not a terminal
    assert first.startswith(f"error: {reason}")
    assert first.endswith(f"(at column {column})")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "missing argument 'expression'"),
        (["x+1", "x=abc"], "'abc' is not a number"),
        (["x+1", "x=1", "x=2"], "'x' is given twice"),
        (["x+1", "3"], "is not name=value"),
        (["x+1", "--bogus"], "no such option: --bogus"),
    ],
)
def test_eval_bad_usage(invoke, args: list[str], fragment: str) -> None:
    assert_usage_error(invoke("eval", *args), fragment)


def test_eval_unbound_name(invoke) -> None:
    result = invoke("eval", "x + y", "x=1")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unbound name 'y' (at column 5)")


def test_eval_as_a_process(opgraph_cmd, tmp_path: Path) -> None:
    table = opgraph_cmd("eval", "3*x**2 - 4*x + 5", "x=3", "--save", "f.opg", "--svg", "f.svg")
    assert table.returncode == 0, table.stderr
    assert "20.0" in table.stdout and "14.0" in table.stdout
    assert opgraph.load(tmp_path / "f.opg").outputs[-1].data == 20.0
    assert ("x", "3.0000", "14.0000") in svg_records((tmp_path / "f.svg").read_bytes())
    as_json = opgraph_cmd("eval", "3*x**2 - 4*x + 5", "x=3", "--json")
    assert json.loads(as_json.stdout) == {"value": 20.0, "grads": {"x": 14.0}}
    refused = opgraph_cmd("eval", "__import__('os').system('echo hi')")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: ")
    assert "(at column " in refused.stderr.splitlines()[0]


# --- opgraph plot --------------------------------------------------------------------------------


def test_plot_writes_a_png(invoke, tmp_path: Path) -> None:
    out = tmp_path / "f.png"
    result = invoke("plot", "3*x**2 - 4*x + 5", "-o", out, "--at", "3", "--points", "40")
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert result.stderr == f"wrote {out} (40 points)\n"


def test_plot_skips_where_the_function_is_undefined(invoke, tmp_path: Path) -> None:
    """log(x) on -5:5: the points at or below 0 are left out (the first one included, and
    log(0) = -inf, which cannot be drawn), and the tangent at 1 still has finite axes."""
    out = tmp_path / "log.png"
    result = invoke("plot", "log(x)", "-o", out, "--points", "11", "--at", "1")
    assert result.exit_code == 0, result.stderr
    assert "(5 points; 6 of 11 left out, where f or f' is undefined or infinite" in (
        result.stderr)  # 1, 2, 3, 4, 5 drawn
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_with_a_bound_name_and_a_range(invoke, tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    result = invoke("plot", "a*x**2", "a=2", "-o", out, "--range", "0:1", "--points", "5")
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["x*y"], "exactly one free name"),
        (["x", "--range", "5:1"], "LOW must be below HIGH"),
        (["x", "--range", "a:b"], "is not LOW:HIGH"),
        (["x", "--points", "1"], "--points"),
    ],
)
def test_plot_bad_usage(invoke, tmp_path: Path, args: list[str], fragment: str) -> None:
    assert_usage_error(invoke("plot", *args, "-o", tmp_path / "p.png"), fragment)
    assert not (tmp_path / "p.png").exists()


def test_plot_undefined_everywhere(invoke, tmp_path: Path) -> None:
    result = invoke("plot", "log(x)", "-o", tmp_path / "p.png", "--range", "-5:-1")
    assert result.exit_code == 1  # a well-formed expression whose op fails: the work failed
    assert result.stderr.startswith("error: op 'log' failed")
    assert "Traceback" not in result.stderr


def test_plot_as_a_process(opgraph_cmd, tmp_path: Path) -> None:
    result = opgraph_cmd("plot", "3*x**2 - 4*x + 5", "-o", "out.png", "--at", "3")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.png").read_bytes().startswith(PNG_SIGNATURE)


# --- opgraph analyze -----------------------------------------------------------------------------


def test_analyze_table(invoke, neuron_file: Path, neuron_ids: dict[str, int]) -> None:
    result = invoke("analyze", neuron_file)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "graph neuron" in out
    for key, value in [("nodes", "10"), ("edges", "9"), ("leaves", "5"),
                       ("depth (generations)", "5"), ("widest generation", "5"),
                       ("root", f"{neuron_ids['o']} (o)"),
                       ("dominators", f"{neuron_ids['n']} (n)"), ("unused", "-")]:
        assert re.search(rf"│ {re.escape(key)}\s*│ {re.escape(value)}\s*│", out), key
    assert re.search(r"critical path\s*│ 5 nodes: .* -> \d+ \(n\) -> \d+ \(o\)", out)
    for op, count in [("add", 2), ("mul", 2), ("tanh", 1)]:
        assert re.search(rf"│ {op}\s*│ {count}\s*│", out)
    assert "no diagnostics" in out


def test_analyze_json(invoke, neuron_file: Path, neuron_ids: dict[str, int]) -> None:
    result = invoke("analyze", neuron_file, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert {"nodes", "edges", "depth", "critical_path", "ops", "diagnostics"} <= set(report)
    assert (report["nodes"], report["edges"], report["depth"]) == (10, 9, 5)
    assert report["ops"] == {"add": 2, "mul": 2, "tanh": 1}
    assert report["diagnostics"] == []
    assert report["critical_path"][-2:] == [neuron_ids["n"], neuron_ids["o"]]
    assert len(report["critical_path"]) == 5
    assert report["dominators"] == [neuron_ids["n"]]


def test_analyze_influences_and_affects(invoke, neuron_file: Path,
                                        neuron_ids: dict[str, int]) -> None:
    ids = neuron_ids
    result = invoke("analyze", neuron_file, "--json", "--node", ids["x1w1"], "--leaf", ids["b"])
    report = json.loads(result.stdout)
    assert report["influences"] == {str(ids["x1w1"]): sorted([ids["x1"], ids["w1"]])}
    assert report["affects"] == {str(ids["b"]): sorted([ids["n"], ids["o"]])}
    table = invoke("analyze", neuron_file, "--leaf", ids["b"]).stdout
    assert re.search(rf"affects of {ids['b']}\s*│ {ids['n']} \(n\), {ids['o']} \(o\)", table)


def test_analyze_shows_diagnostics(invoke, tmp_path: Path) -> None:
    g = opgraph.Graph("sick")
    x = g.leaf(5.0, "x")
    g.leaf(1.0, "spare")
    t = x.tanh()
    t.label = "t"
    path = opgraph.save(g, tmp_path / "sick.json")
    result = invoke("analyze", path)
    assert result.exit_code == 0
    assert re.search(r"warning\s*│ saturated-tanh\s*│ 2 \(t\)", result.stdout)
    assert re.search(r"hint\s*│ unused-leaf\s*│ 1 \(spare\)", result.stdout)
    report = json.loads(invoke("analyze", path, "--json").stdout)
    assert [(d["code"], d["node"]) for d in report["diagnostics"]] == [
        ("unused-leaf", 1), ("saturated-tanh", 2)]


def test_analyze_unknown_node(invoke, neuron_file: Path) -> None:
    result = invoke("analyze", neuron_file, "--node", "99")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "no node 99")


def test_analyze_as_a_process(opgraph_cmd, neuron_file: Path) -> None:
    result = opgraph_cmd("analyze", neuron_file, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["nodes"], report["depth"]) == (10, 5)
    table = opgraph_cmd("analyze", neuron_file)
    assert table.returncode == 0 and "critical path" in table.stdout


# --- opgraph render ------------------------------------------------------------------------------

SEED_RECORDS = {
    ("x1", "2.0000", "-1.5000"), ("w1", "-3.0000", "1.0000"), ("x2", "0.0000", "0.5000"),
    ("w2", "1.0000", "0.0000"), ("b", "6.8814", "0.5000"), ("x1w1", "-6.0000", "0.5000"),
    ("x2w2", "0.0000", "0.5000"), ("x1w1 + x2w2", "-6.0000", "0.5000"),
    ("n", "0.8814", "0.5000"), ("o", "0.7071", "1.0000"),
}


def check_picture(data: bytes, fmt: str) -> None:
    if fmt == "svg":
        assert svg_records(data) == SEED_RECORDS
    elif fmt == "png":
        assert data.startswith(PNG_SIGNATURE)
    else:
        text = data.decode()
        assert text.startswith("digraph {") and "rankdir=LR" in text
        assert text.count("shape=record") == 10
        assert "{ o | data 0.7071 | grad 1.0000 }" in text


@pytest.mark.parametrize(("name", "fmt"), [("out.svg", "svg"), ("out.png", "png"),
                                           ("out.dot", "dot")])
def test_render_format_from_the_suffix(invoke, neuron_file: Path, tmp_path: Path,
                                       name: str, fmt: str) -> None:
    out = tmp_path / name
    result = invoke("render", neuron_file, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(f"wrote {out} ({fmt}, ")
    check_picture(out.read_bytes(), fmt)


@pytest.mark.parametrize("fmt", ["svg", "png", "dot"])
def test_render_format_option(invoke, neuron_file: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "picture.out"
    result = invoke("render", neuron_file, "-o", out, "--format", fmt)
    assert result.exit_code == 0, result.stderr
    check_picture(out.read_bytes(), fmt)


def test_render_around_a_node(invoke, neuron_file: Path, neuron_ids: dict[str, int],
                              tmp_path: Path) -> None:
    out = tmp_path / "near.svg"
    result = invoke("render", neuron_file, "-o", out, "--around", neuron_ids["n"],
                    "--depth", "1")
    assert result.exit_code == 0, result.stderr
    assert {r[0] for r in svg_records(out.read_bytes())} == {"x1w1 + x2w2", "b", "n", "o"}


def test_render_direction(invoke, neuron_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "tb.dot"
    assert invoke("render", neuron_file, "-o", out, "--rankdir", "TB").exit_code == 0
    assert "rankdir=TB" in out.read_text()


def test_render_a_big_graph_as_a_summary(invoke, neuron_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.dot"
    assert invoke("render", neuron_file, "-o", out, "--max-nodes", "5").exit_code == 0
    text = out.read_text()
    assert "summarised" in text and "shape=record" not in text


def test_render_neighbourhood_over_the_limit(invoke, neuron_file: Path,
                                             neuron_ids: dict[str, int],
                                             tmp_path: Path) -> None:
    out = tmp_path / "x.svg"
    result = invoke("render", neuron_file, "-o", out, "--around", neuron_ids["n"],
                    "--depth", "2", "--max-nodes", "3")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "over the drawing limit of 3")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-o", "x.gif"], "cannot tell the picture format"),
        (["-o", "x.svg", "--format", "gif"], "'gif' is not one of svg, png, dot"),
        (["-o", "x.svg", "--rankdir", "XY"], "'XY' is not one of LR, RL, TB, BT"),
        (["-o", "x.svg", "--depth", "-1"], "--depth"),
        ([], "missing option '-o' / '--output'"),
    ],
)
def test_render_bad_usage(invoke, neuron_file: Path, args: list[str], fragment: str) -> None:
    assert_usage_error(invoke("render", neuron_file, *args), fragment)


def test_render_as_a_process(opgraph_cmd, neuron_file: Path, tmp_path: Path) -> None:
    result = opgraph_cmd("render", neuron_file, "-o", "neuron.svg")
    assert result.returncode == 0, result.stderr
    assert svg_records((tmp_path / "neuron.svg").read_bytes()) == SEED_RECORDS
    png = opgraph_cmd("render", neuron_file, "-o", "neuron.img", "--format", "png")
    assert png.returncode == 0
    assert (tmp_path / "neuron.img").read_bytes().startswith(PNG_SIGNATURE)


# --- opgraph gradcheck ---------------------------------------------------------------------------


def test_gradcheck_ok(invoke, neuron_file: Path) -> None:
    result = invoke("gradcheck", neuron_file)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.startswith("gradcheck of ") and ": ok" in result.stdout.splitlines()[0]
    report = json.loads(invoke("gradcheck", neuron_file, "--json").stdout)
    assert report["ok"] is True and len(report["leaves"]) == 5 and report["bad_ops"] == []


def test_gradcheck_fails_on_a_wrong_gradient_rule(invoke, bad_grad_file: Path) -> None:
    result = invoke("gradcheck", bad_grad_file)
    assert result.exit_code == 1
    assert "FAILED" in result.stdout
    assert re.search(r"BAD 'x' id 0 \(data 3\.0\): analytic 3, numeric 6", result.stdout)
    assert "op 'badsquare' (plugin 'badops')" in result.stdout
    report = json.loads(invoke("gradcheck", bad_grad_file, "--json").stdout)
    assert report["ok"] is False


def test_gradcheck_as_a_process(opgraph_cmd, neuron_file: Path, bad_grad_file: Path,
                                bad_ops_site: Path) -> None:
    ok = opgraph_cmd("gradcheck", neuron_file)
    assert ok.returncode == 0, ok.stderr
    bad = opgraph_cmd("gradcheck", bad_grad_file, pythonpath=bad_ops_site)
    assert bad.returncode == 1, bad.stderr
    assert "FAILED" in bad.stdout and "badsquare" in bad.stdout
    assert "Traceback" not in bad.stderr
    # without the plugin installed, the file cannot be read: its op is unknown
    missing = opgraph_cmd("gradcheck", bad_grad_file)
    assert missing.returncode == 1
    assert_one_line_error(missing.stderr, str(bad_grad_file),
                          "no op named 'badsquare' (no installed plugin provides it)")


def test_gradcheck_of_an_empty_graph(invoke, tmp_path: Path) -> None:
    path = opgraph.save(opgraph.Graph("empty"), tmp_path / "empty.opg")
    result = invoke("gradcheck", path)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "the graph is empty")


# --- bad files and bad usage, for every file command -----------------------------------------


def write_bad_file(kind: str, tmp_path: Path, neuron_file: Path) -> tuple[Path, str]:
    """A file that is not a readable graph, and a phrase its error message must hold."""
    if kind == "missing":
        return tmp_path / "nope.opg", "No such file or directory"
    path = tmp_path / f"{kind}.opg"
    if kind == "truncated":
        path.write_bytes(neuron_file.read_bytes()[:60])
        return path, "truncated graph file"
    if kind == "not a graph":
        path.write_bytes(msgpack.packb({"hello": "world"}))
        return path, "not an opgraph graph"
    if kind == "newer version":
        path.write_text(json.dumps({"format": "opgraph-graph", "version": 99, "nodes": []}))
        return path, "format version 99, this opgraph reads up to 1"
    if kind == "empty file":
        path.write_bytes(b"")
        return path, "empty graph file"
    if kind == "a directory":
        path.mkdir()
        return path, "Is a directory"
    raise AssertionError(kind)


BAD_FILES = ["missing", "truncated", "not a graph", "newer version", "empty file",
             "a directory"]
FILE_COMMANDS = [["analyze"], ["analyze", "--json"], ["render", "-o", "out.svg"],
                 ["gradcheck"]]


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("command", FILE_COMMANDS, ids=" ".join)
def test_bad_files(invoke, tmp_path: Path, neuron_file: Path, kind: str,
                   command: list[str]) -> None:
    path, phrase = write_bad_file(kind, tmp_path, neuron_file)
    result = invoke(command[0], path, *command[1:])
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.stdout == ""
    assert_one_line_error(result.stderr, str(path), phrase)


@pytest.mark.parametrize("kind", ["missing", "truncated", "newer version"])
def test_bad_files_as_processes(opgraph_cmd, tmp_path: Path, neuron_file: Path,
                                kind: str) -> None:
    path, phrase = write_bad_file(kind, tmp_path, neuron_file)
    result = opgraph_cmd("analyze", path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_line_error(result.stderr, str(path), phrase)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["analyze"], "give a graph FILE"),
        (["gradcheck"], "give a graph FILE"),
        (["analyze", "f.opg", "--bogus"], "no such option: --bogus"),
        (["analyze", "f.opg", "--node", "one"], "invalid value for '--node'"),
        (["frobnicate"], "no such command 'frobnicate'"),
        (["ops", "nosuch"], "no such command 'nosuch'"),
    ],
)
def test_bad_usage(invoke, args: list[str], fragment: str) -> None:
    assert_usage_error(invoke(*args), fragment)


def test_bad_usage_as_a_process(opgraph_cmd) -> None:
    result = opgraph_cmd("analyze", "--no-such-option")
    assert result.returncode == 2
    assert result.stderr == ("error: no such option: --no-such-option (see 'opgraph analyze "
                             "--help')\n")
    bare = opgraph_cmd()
    assert bare.returncode == 2
    assert "Usage:" in bare.stdout + bare.stderr


def test_eval_op_failing_on_the_values_is_failed_work(invoke) -> None:
    result = invoke("eval", "2 * log(x)", "x=-1")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: op 'log' failed on 'x' (data -1.0)")
    assert line.endswith("(at column 5)")


@pytest.mark.parametrize("suffix", ["svg", "pdf"])
def test_plot_format_from_the_suffix(invoke, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"p.{suffix}"
    assert invoke("plot", "x**2", "-o", out).exit_code == 0
    assert out.read_bytes().startswith(b"<?xml" if suffix == "svg" else b"%PDF")


def test_plot_refuses_an_unknown_suffix(invoke, tmp_path: Path) -> None:
    result = invoke("plot", "x**2", "-o", tmp_path / "p.gif")
    assert result.exit_code == 2 and "write a .png, .svg or .pdf file" in result.stderr
    assert not (tmp_path / "p.gif").exists()
