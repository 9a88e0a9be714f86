"""A new user's papercuts (issue 10), each checked as a user meets it: ``opgraph`` run as a real
process, with real pipes, ``COLUMNS=200``, and plugins installed as real distributions on
PYTHONPATH."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

import opgraph
from opgraph.cli.evaluate import y_window

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ERROR_LINE = re.compile(r"^error: .+$")
USAGE_LINE = re.compile(r"^error: .+ \(see 'opgraph[a-z ]* --help'\)$")
Run = Callable[..., subprocess.CompletedProcess]


def environment(pythonpath: Path | None = None, columns: str = "200") -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["COLUMNS"] = columns
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """``run(*args, pythonpath=None, columns="200")``: ``opgraph ARGS`` as a process, in
    ``tmp_path``, stdout and stderr each a pipe (so neither is a terminal)."""

    def go(*args: object, pythonpath: Path | None = None,
           columns: str = "200") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "opgraph", *map(str, args)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120,
                              env=environment(pythonpath, columns))

    return go


def one_line(stderr: str, pattern: re.Pattern[str] = ERROR_LINE) -> str:
    """The single line on stderr, which must match ``pattern``."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert pattern.match(lines[0]), stderr
    return lines[0]


def make_dist(site: Path, name: str, version: str, entry_points: dict[str, str],
              modules: dict[str, str]) -> None:
    """An installed distribution in folder ``site`` (to put on PYTHONPATH)."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
    lines = ["[opgraph]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


SOFTPLUS_LIKE = '''
    from opgraph import OpDef, hookimpl


    @hookimpl
    def opgraph_register_ops():
        return [OpDef("softplus", 1, lambda x: {body}, lambda x, out: (2.0,))]
'''


@pytest.fixture
def neuron_file(tmp_path: Path) -> Path:
    from neurons import seed_neuron

    return opgraph.save(seed_neuron(), tmp_path / "n.opg", name="neuron")


# --- usage errors: one line, like every other error ------------------------------------------


@pytest.mark.parametrize(("args", "fragment"), [
    (["eval", "x", "x=1", "x=2"], "'x' is given twice"),
    (["ops", "check", "--op", "nope"], "no op named 'nope'"),
    (["ops", "check", "--op", "tahn"], "did you mean 'tanh'?"),
    (["render", "n.opg"], "missing option '-o' / '--output'"),
    (["plot", "x*y"], "missing option '-o' / '--output'"),
    (["plot", "x*y", "-o", "p.png"], "exactly one free name to plot, it has 'x', 'y'"),
    (["eval", "x+1", "x=abc"], "'x=abc': 'abc' is not a number"),
    (["analyze", "n.opg", "--node", "one"], "invalid value for '--node'"),
    (["frobnicate"], "no such command 'frobnicate'"),
])
def test_usage_errors_are_one_line(run: Run, neuron_file: Path, args: list[str],
                                   fragment: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert fragment in one_line(result.stderr, USAGE_LINE)


def test_a_bare_opgraph_shows_the_help(run: Run) -> None:
    result = run()
    assert result.returncode == 2
    assert "Usage: opgraph [OPTIONS] COMMAND" in result.stderr and "Commands:" in result.stderr


# --- plugin warnings: the same one line under every command ----------------------------------


@pytest.fixture
def broken_site(tmp_path: Path) -> Path:
    site = tmp_path / "broken-site"
    make_dist(site, "broken", "0.1", {"broken": "broken_ops"},
              {"broken_ops": 'raise RuntimeError("needs libfoo")\n'})
    return site


@pytest.mark.parametrize("args", [
    ["eval", "x*2", "x=1"], ["eval", "x*2", "x=1", "--json"], ["ops"], ["ops", "--json"],
    ["ops", "check", "--op", "tanh", "--points", "2"], ["analyze", "n.opg"],
    ["render", "n.opg", "-o", "n.svg"], ["gradcheck", "n.opg"],
], ids=" ".join)
def test_plugin_warnings_are_one_line_under_every_command(run: Run, neuron_file: Path,
                                                          broken_site: Path,
                                                          args: list[str]) -> None:
    result = run(*args, pythonpath=broken_site)
    assert result.returncode == 0, result.stderr
    warning = ("warning: plugin 'broken': failed to import 'broken_ops': RuntimeError: "
               "needs libfoo")
    lines = [line for line in result.stderr.splitlines() if not line.startswith("wrote ")]
    assert lines == [warning]


# --- two plugins defining one op --------------------------------------------------------------


@pytest.fixture
def clash_site(tmp_path: Path) -> Path:
    site = tmp_path / "clash-site"
    make_dist(site, "sp_one", "0.1", {"sp_one": "sp_one_mod"},
              {"sp_one_mod": SOFTPLUS_LIKE.format(body="x * 2.0")})
    make_dist(site, "sp_two", "1.2", {"sp_two": "sp_two_mod"},
              {"sp_two_mod": SOFTPLUS_LIKE.format(body="x + x")})
    return site


CLASH_WARNING = (
    "warning: op 'softplus' is defined by two plugins: 'sp_one' (from sp-one 0.1) and "
    "'sp_two' (from sp-two 1.2), so it is left out; to fix it, uninstall the one you do not "
    "want (pip uninstall sp-one, or pip uninstall sp-two), or rename the op in one of them")


def test_a_plugin_clash_is_listed_by_ops_and_named_with_its_distributions(
        run: Run, clash_site: Path) -> None:
    table = run("ops", pythonpath=clash_site)
    assert table.returncode == 0, table.stderr
    assert table.stderr.splitlines() == [CLASH_WARNING]
    assert ", 1 left out: defined twice (CLASH)" in table.stdout
    marked = [line for line in table.stdout.splitlines() if "softplus CLASH" in line]
    assert len(marked) == 2
    assert "sp_one" in marked[0] and "sp_two" in marked[1]
    assert any("tanh" in line and "activations" in line for line in table.stdout.splitlines())
    rows = json.loads(run("ops", "--json", pythonpath=clash_site).stdout)
    assert [(r["name"], r["plugin"]) for r in rows if r["clash"]] == [("softplus", "sp_one"),
                                                                      ("softplus", "sp_two")]
    assert {r["name"] for r in rows if not r["clash"]} >= {"add", "tanh", "pow_const"}


def test_every_command_still_works_beside_a_plugin_clash(run: Run, clash_site: Path,
                                                          neuron_file: Path) -> None:
    result = run("eval", "x*3", "x=1", "--json", pythonpath=clash_site)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"value": 3.0, "grads": {"x": 3.0}}
    assert result.stderr.splitlines() == [CLASH_WARNING]
    checked = run("ops", "check", "--points", "2", pythonpath=clash_site)
    assert checked.returncode == 0 and "ok    tanh" in checked.stdout
    assert run("analyze", neuron_file, pythonpath=clash_site).returncode == 0
    # using the op itself is refused (exit 1: the installation is at fault, not the command)
    used = run("eval", "softplus(x)", "x=1", pythonpath=clash_site)
    assert used.returncode == 1
    assert used.stderr.splitlines()[0] == CLASH_WARNING
    assert used.stderr.splitlines()[1].startswith("error: op 'softplus' is defined by two")
    assert "pip uninstall sp-one, or pip uninstall sp-two" in used.stderr.splitlines()[1]
    asked = run("ops", "check", "--op", "softplus", pythonpath=clash_site)
    assert asked.returncode == 1
    assert asked.stderr.splitlines()[1] == ("error: --op softplus: two plugins define it, so "
                                            "it is left out (see the warning above)")


# --- a closed stdout --------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["ops", "check"], ["ops"], ["ops", "--json"],
                                  ["eval", "x*2", "x=1", "--json"], ["eval", "x*2", "x=1"]],
                         ids=" ".join)
def test_a_closed_stdout_is_a_quiet_exit(tmp_path: Path, args: list[str]) -> None:
    """The reader is gone before the first line: no "error: Broken pipe", no traceback, and
    the exit status a shell reports for a program that SIGPIPE ended (128 + 13)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.run([sys.executable, "-m", "opgraph", *args], stdout=write_end,
                                 stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                 env=environment(), timeout=120)
    finally:
        os.close(write_end)
    assert process.stderr == ""
    assert process.returncode == 141


def test_ops_check_into_head(tmp_path: Path) -> None:
    """``opgraph ops check | head -1`` in a shell, as the issue has it."""
    shell = subprocess.run(["bash", "-c", f"{sys.executable} -m opgraph ops check | head -1"],
                           capture_output=True, text=True, cwd=tmp_path, env=environment(),
                           timeout=120)
    assert shell.returncode == 0
    assert shell.stdout.startswith("ok    add (arithmetic)") and shell.stdout.count("\n") == 1
    assert shell.stderr == ""


# --- tables into a pipe -----------------------------------------------------------------------


@pytest.mark.parametrize("columns", ["60", "80", "200"])
def test_tables_piped_keep_every_row_on_one_line(run: Run, columns: str) -> None:
    result = run("ops", columns=columns)
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == len(opgraph.default_registry())
    (row,) = [line for line in rows if "pow_const" in line]  # what `grep pow_const` gets
    assert re.search(r"pow_const \(exponent\)\s*│ 1\s*│ \*\*\{exponent\}\s*│ arithmetic\s*│ "
                     r"x \*\* exponent, with a constant exponent", row)


def test_analyze_table_rows_are_whole_in_a_pipe(run: Run, neuron_file: Path) -> None:
    result = run("analyze", neuron_file, columns="40")
    (path,) = [line for line in result.stdout.splitlines() if "critical path" in line]
    assert re.search(r"│ 5 nodes: 0 \(x1\) -> [^│]* -> \d+ \(n\) -> \d+ \(o\) │$", path)


# --- --version and help -----------------------------------------------------------------------


def test_version_option(run: Run) -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"opgraph {opgraph.__version__}\n"
    assert run("version").stdout == f"{opgraph.__version__}\n"


def test_command_summaries_are_whole(run: Run) -> None:
    result = run("--help")
    assert result.returncode == 0
    commands = result.stdout.split("Commands:")[1].strip().splitlines()
    summaries = dict(line.split(None, 1) for line in commands)
    assert set(summaries) == {"eval", "plot", "analyze", "render", "gradcheck", "serve",
                              "call", "version", "ops", "lsp"}
    assert not any(text.endswith("...") for text in summaries.values())
    assert summaries["analyze"] == "Size, depth, critical path, dominators, diagnostics of a graph."
    assert "--version" in result.stdout
    narrow = run("--help", columns="80").stdout.split("Commands:")[1]
    assert "..." not in narrow  # short enough for 80 columns too


def test_render_help_shows_a_sane_diagnostics_flag(run: Run) -> None:
    text = run("render", "--help").stdout
    assert "--diagnostics / --no-diagnostics" in text
    assert "no-no" not in text


# --- expressions that start with a minus ------------------------------------------------------


@pytest.mark.parametrize(("args", "value"), [
    (["eval", "-x+1", "x=2", "--json"], -1.0),
    (["eval", "--json", "-3*x", "x=2"], -6.0),
    (["eval", "-x", "--json", "x=4"], -4.0),
    (["eval", "--json", "--", "-x-x", "x=1"], -2.0),
])
def test_an_expression_may_start_with_a_minus(run: Run, args: list[str], value: float) -> None:
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["value"] == value


def test_an_unknown_long_option_is_still_refused(run: Run, tmp_path: Path) -> None:
    result = run("eval", "x", "x=1", "--jsn")
    assert result.returncode == 2
    assert "no such option: --jsn" in one_line(result.stderr, USAGE_LINE)
    plot = run("plot", "-x", "-o", "p.png", "--points", "5")  # an option after the expression
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "p.png").read_bytes().startswith(PNG_SIGNATURE)


# --- numbers: floats in, and non-finite ones out ----------------------------------------------


def test_bindings_and_constants_are_floats(run: Run) -> None:
    result = run("eval", "x*x*x*x*x*x*x*x*x*x + 2", "x=3", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"value": 59051.0, "grads": {"x": 196830.0}}
    assert '"value": 59051.0' in result.stdout  # written as a float


def test_non_finite_results_are_null_in_json_with_a_warning(run: Run) -> None:
    result = run("eval", "exp(x) * y", "x=1000", "y=-1", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"value": None, "grads": {"x": None, "y": None}}
    assert one_line(result.stderr, re.compile("^warning: ")) == (
        "warning: not finite: value = -inf, grads.x = -inf, grads.y = inf (written as null "
        "in the JSON)")
    table = run("eval", "exp(x)", "x=1000")
    assert table.returncode == 0 and "inf" in table.stdout
    assert table.stderr == "warning: not finite: value = inf, d/dx = inf\n"
    fine = run("eval", "x", "x=1", "--json")
    assert fine.stderr == ""


# --- render: stdout, and the format agreeing with the file name -------------------------------


def test_render_to_stdout(run: Run, neuron_file: Path, tmp_path: Path) -> None:
    svg = subprocess.run([sys.executable, "-m", "opgraph", "render", str(neuron_file), "-o",
                          "-"], capture_output=True, cwd=tmp_path, env=environment(),
                         timeout=120)
    assert svg.returncode == 0, svg.stderr
    assert svg.stdout.lstrip().startswith(b"<?xml") and b"</svg>" in svg.stdout
    assert svg.stderr == b""
    assert not (tmp_path / "-").exists()
    png = subprocess.run([sys.executable, "-m", "opgraph", "render", str(neuron_file), "-o",
                          "-", "--format", "png"], capture_output=True, cwd=tmp_path,
                         env=environment(), timeout=120)
    assert png.returncode == 0 and png.stdout.startswith(PNG_SIGNATURE)


def test_render_refuses_a_format_that_contradicts_the_suffix(run: Run, neuron_file: Path,
                                                             tmp_path: Path) -> None:
    result = run("render", neuron_file, "--format", "png", "-o", "out.svg")
    assert result.returncode == 2
    assert "--format png does not match 'out.svg', whose suffix says svg" in one_line(
        result.stderr, USAGE_LINE)
    assert not (tmp_path / "out.svg").exists()
    agreeing = run("render", neuron_file, "--format", "png", "-o", "out.png")
    assert agreeing.returncode == 0
    assert (tmp_path / "out.png").read_bytes().startswith(PNG_SIGNATURE)
    assert agreeing.stdout == "" and agreeing.stderr.startswith("wrote out.png (png, ")


# --- files that are not graph files, and nodes that are not there -----------------------------


@pytest.mark.parametrize("content", [b"garbage", b"garbage\n",
                                     Path(opgraph.__file__).read_bytes()])
@pytest.mark.parametrize("command", [["analyze"], ["render", "-o", "x.svg"], ["gradcheck"]],
                         ids=" ".join)
def test_a_file_that_is_not_a_graph_file(run: Run, tmp_path: Path, content: bytes,
                                         command: list[str]) -> None:
    path = tmp_path / "renamed.opg"
    path.write_bytes(content)
    result = run(command[0], path, *command[1:])
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith(f"error: {path}: not an opgraph graph file: it begins with ")


def test_an_unknown_node_names_the_file(run: Run, neuron_file: Path, tmp_path: Path) -> None:
    named = run("analyze", neuron_file, "--node", "99")
    assert one_line(named.stderr) == (f"error: {neuron_file}: graph 'neuron' has no node 99 "
                                      f"(ids are 0..9)")
    assert run("eval", "x*2", "x=1", "--save", "unnamed.opg").returncode == 0
    for args in (["analyze", "unnamed.opg", "--node", "99"],
                 ["render", "unnamed.opg", "-o", "u.svg", "--around", "99"],
                 ["gradcheck", "unnamed.opg", "--root", "99"]):
        result = run(*args)
        assert result.returncode == 1
        assert one_line(result.stderr) == ("error: graph 'unnamed.opg' has no node 99 (ids "
                                           "are 0..2)")


def test_a_small_file_squaring_an_int_thirty_times(run: Run, tmp_path: Path) -> None:
    """A few hundred bytes that made `opgraph analyze` compute for minutes with exact
    integers: the file's numbers are doubles, so it overflows to infinity at once."""
    nodes = [{"id": 0, "op": None, "data": 3, "label": "x"}]
    nodes += [{"id": i, "op": "mul", "inputs": [i - 1, i - 1]} for i in range(1, 31)]
    data = msgpack.packb({"format": "opgraph-graph", "version": 1, "name": "squares",
                          "nodes": nodes})
    assert len(data) < 1000
    (tmp_path / "squares.opg").write_bytes(data)
    result = run("analyze", "squares.opg", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["nodes"] == 31
    assert "non-finite-value" in {d["code"] for d in report["diagnostics"]}
    graph = opgraph.load(tmp_path / "squares.opg")
    assert graph.nodes[4].data == 3.0 ** 16 and graph.nodes[-1].data == float("inf")


# --- plot: poles, undefined points, a tangent outside the range --------------------------------


def test_plot_clips_a_pole(run: Run, tmp_path: Path) -> None:
    result = run("plot", "1/x", "-o", "p.png")
    assert result.returncode == 0, result.stderr
    found = re.search(r"^wrote p\.png \(200 points; y axis clipped to (\S+):(\S+), the curves "
                      r"go beyond\)$", result.stderr)
    assert found, result.stderr
    bottom, top = float(found.group(1)), float(found.group(2))
    assert -50 < bottom < -1 and 1 < top < 50  # the curve away from 0 is on the scale
    assert (tmp_path / "p.png").read_bytes().startswith(PNG_SIGNATURE)
    smooth = run("plot", "3*x**2 - 4*x + 5", "-o", "f.png")
    assert smooth.stderr == "wrote f.png (200 points)\n"  # nothing clipped, nothing left out


def test_plot_says_how_many_points_were_undefined(run: Run) -> None:
    result = run("plot", "log(x)", "-o", "l.png")
    assert result.returncode == 0
    assert result.stderr.startswith(
        "wrote l.png (100 points; 100 of 200 left out, where f or f' is undefined or infinite")


def test_plot_tangent_outside_the_range(run: Run) -> None:
    extended = run("plot", "x**2", "-o", "t.png", "--at", "10")
    assert extended.returncode == 0
    assert extended.stderr == ("wrote t.png (200 points; range extended to -5:11 to include "
                               "--at 10)\n")
    refused = run("plot", "x**2", "-o", "t.png", "--at", "10", "--range", "-5:5")
    assert refused.returncode == 2
    assert one_line(refused.stderr, USAGE_LINE).startswith(
        "error: --at 10 is outside --range -5:5; widen the range to include it")
    undefined = run("plot", "log(x)", "-o", "t.png", "--at", "-1")
    assert undefined.returncode == 1
    assert one_line(undefined.stderr).startswith(
        "error: cannot draw the tangent: f is undefined at x = -1")


def test_y_window() -> None:
    xs = [-5 + i * 10 / 199 for i in range(200)]
    assert y_window([x * x for x in xs] + [2 * x for x in xs]) is None
    bottom, top = y_window([1 / x for x in xs] + [-1 / x**2 for x in xs])
    assert -50 < bottom < -1 and 1 < top < 50
    assert y_window([1.0, 2.0]) is None and y_window([3.0] * 10) is None


# --- call prints one JSON line ----------------------------------------------------------------


def test_call_prints_one_compact_json_line(run: Run, tmp_path: Path) -> None:
    server = subprocess.Popen([sys.executable, "-m", "opgraph", "serve", "--listen",
                               "tcp://127.0.0.1:0"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={k: v for k, v in environment().items()
                                   if k != "OPGRAPH_TOKEN"})
    try:
        url = _listening(server)
        result = run("call", url, "node.get", "demo", "9")
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("\n") == 1
        answer = json.loads(result.stdout)
        assert result.stdout == json.dumps(answer) + "\n"  # {"version": 11, "nodes": [...]}
        (node,) = answer["nodes"]
        assert (node["id"], node["op"], node["label"]) == (9, "tanh", "o")
        evaluated = run("call", url, "graph.eval", "demo", '"o * 2"')
        assert evaluated.stdout.startswith('{"root": ') and evaluated.stdout.count("\n") == 1
    finally:
        server.terminate()
        server.wait(30)


def _listening(server: subprocess.Popen) -> str:
    found: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            match = re.search(r"listening on (\S+)", line)
            if match:
                found.append(match.group(1).rstrip(","))
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(60) and found, "the server did not say where it listens"
    return found[0]
