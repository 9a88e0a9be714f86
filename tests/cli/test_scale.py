"""The CLI at training scale: ``analyze`` of a 200,000-node accumulation file is a screenful,
diagnostics come grouped and capped, the progress bar moves by the analysis' steps, and
``gradcheck`` samples leaves (seeded), takes chosen ones and shows an ETA."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
from scale_graphs import accumulation, moons_step

import opgraph
from opgraph.analysis import analyze
from opgraph.cli import files


@pytest.fixture(scope="module")
def acc_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``acc = acc + w[i % 1000] * x`` until 200,000 nodes, after backward."""
    g = accumulation(200_000)
    g.backward(g.nodes[-1])
    return opgraph.save(g, tmp_path_factory.mktemp("acc") / "acc.opg")


@pytest.fixture(scope="module")
def moons_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One training step of examples/moons.py (65,818 nodes), after backward."""
    graph, _, _, _ = moons_step(track=False)
    return opgraph.save(graph, tmp_path_factory.mktemp("moons") / "moons.opg")


@pytest.fixture(scope="module")
def sick_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 unused leaves, and 30 parts of 10 saturated tanh each: 5,360 diagnostics."""
    g = opgraph.Graph("sick")
    for i in range(5000):
        g.leaf(1.0, f"spare{i}")
    x = g.leaf(5.0, "x")
    acc = x
    for block in range(30):
        for k in range(10):
            t = (x * float(k + 1)).tanh()
            t.label = f"block{block}.t"
            acc = acc + t
    g.backward(acc)
    return opgraph.save(g, tmp_path_factory.mktemp("sick") / "sick.opg")


def row(out: str, key: str) -> str:
    """The value cell of row ``key`` of analyze's summary table."""
    found = re.search(rf"│ {re.escape(key)}\s*│ (.*?)\s*│$", out, re.M)
    assert found, key
    return found.group(1)


def section(out: str, heading: str) -> list[str]:
    """The items listed under ``heading:`` after the tables (``--full``), one a line."""
    lines = out.splitlines()
    start = lines.index(f"{heading}:") + 1
    items = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        items.append(line[2:])
    return items


def diagnostic_rows(out: str) -> list[str]:
    return [line for line in out.splitlines()
            if re.match(r"│ (error|warning|info|hint)\s*│", line)]


# --- analyze ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_analyze_of_a_200000_node_file_is_a_screenful(invoke, acc_file: Path) -> None:
    report = analyze(opgraph.load(acc_file))
    path = report.critical_path
    assert len(path) == 99_501
    result = invoke("analyze", acc_file)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) <= 30, len(lines)
    assert max(map(len, lines)) <= 200
    cell = row(result.stdout, "critical path")
    shown = cell.split(": ", 1)[1].split(" (--full")[0].split(" -> ")
    # the path's first four nodes and its last two, the count of those in between
    assert shown[:4] == ["0 (w0)", *map(str, path[1:4])]
    assert shown[4] == f"… {len(path) - 6:,} more …" == "… 99,495 more …"
    assert shown[5:] == [str(path[-2]), str(path[-1])]
    assert cell.startswith("99,501 nodes: ") and cell.endswith("(--full for all)")
    assert row(result.stdout, "nodes") == "200,000"
    assert row(result.stdout, "max fan-out") == "99,499 at 1000 (x)"

    full = invoke("analyze", acc_file, "--full")  # the table as before, then the whole path
    assert full.exit_code == 0
    assert row(full.stdout, "critical path") == cell.replace("--full for all", "all below")
    assert section(full.stdout, "critical path (99,501 nodes)") == [
        "0 (w0)", *map(str, path[1:])]

    complete = json.loads(invoke("analyze", acc_file, "--json").stdout)
    assert complete["critical_path"] == path
    cut = json.loads(invoke("analyze", acc_file, "--json", "--limit", "5").stdout)
    assert cut["critical_path"] == path[:5] and len(cut["leaves"]) == 5
    assert cut["counts"]["critical_path"] == 99_501 and cut["counts"]["leaves"] == 1_002


def test_analyze_groups_and_caps_the_diagnostics(invoke, sick_file: Path) -> None:
    result = invoke("analyze", sick_file)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "diagnostics: 5,360 in 32 groups (by code and site)" in out
    rows = diagnostic_rows(out)
    assert len(rows) == 10
    assert re.match(r"│ warning\s*│ saturated-tanh\s*│ 5003 \(block0\.t\) \(\+9\)\s*│ 10\s*│ "
                    r"block0\s*│ tanh at 'block0.t' \(id 5003\) is saturated", rows[1])
    assert out.rstrip().endswith(
        "… and 22 more groups: unused-leaf 5,000 (1 group), saturated-tanh 210 (21 groups); "
        "--full for all")
    assert row(out, "unused") == ("5,000 nodes: " + ", ".join(f"{i} (spare{i})" for i in range(10))
                                  + ", … and 4,990 more; --full for all")
    everything = invoke("analyze", sick_file, "--full").stdout
    assert len(diagnostic_rows(everything)) == 32 and "more groups" not in everything
    assert re.search(r"│ hint\s*│ unused-leaf\s*│ 0 \(spare0\) \(\+4,999\)\s*│ 5,000\s*│ -\s*│",
                     everything)
    assert row(everything, "unused").endswith(", … and 4,990 more; all below")
    assert section(everything, "unused (5,000 nodes)") == [f"{i} (spare{i})" for i in range(5000)]
    three = invoke("analyze", sick_file, "--limit", "3").stdout
    assert len(diagnostic_rows(three)) == 3
    assert row(three, "unused") == ("5,000 nodes: 0 (spare0), 1 (spare1), 2 (spare2), … and "
                                    "4,997 more; --full for all")
    report = json.loads(invoke("analyze", sick_file, "--json").stdout)
    assert len(report["diagnostics"]) == 5360 and len(report["diagnostic_groups"]) == 32


def test_analyze_refuses_full_with_a_limit(invoke, sick_file: Path) -> None:
    result = invoke("analyze", sick_file, "--full", "--limit", "3")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: give --full or --limit, not both")


@pytest.mark.slow
def test_analyze_names_nodes_by_their_model_part(invoke, moons_file: Path) -> None:
    result = invoke("analyze", moons_file)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert row(out, "critical path").startswith(
        "341 nodes: 8 (layer0.neuron0.w0) -> 65142 (l2.square) -> 65143 (add in l2) -> ")
    assert row(out, "max fan-in") == "2 at 10 (mul in layer0.neuron0)"
    (dead,) = diagnostic_rows(out)  # one dead unit, not a finding per sample
    assert re.match(r"│ warning\s*│ dead-relu\s*│ 343 \(layer1\.neuron3\.act\)\s*│ "
                    r"1 \(100 nodes\)\s*│ layer1\.neuron3\s*│ relu 'layer1.neuron3.act' is "
                    r"inactive for all 100 of its nodes", dead)


class Recorder:
    """A stand-in for the CLI's progress bars: what each was told, by description."""

    def __init__(self) -> None:
        self.updates: dict[str, list[tuple[int, int]]] = {}
        self.eta: dict[str, bool] = {}

    @contextmanager
    def __call__(self, description: str, *, eta: bool = False):
        seen = self.updates.setdefault(description.split(" ")[0], [])
        self.eta[description.split(" ")[0]] = eta
        yield lambda done, total: seen.append((done, total))


def test_the_analysis_progress_bar_moves_by_its_steps(invoke, sick_file: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(files, "progress", recorder)
    assert invoke("analyze", sick_file, "--node", "6000").exit_code == 0
    steps = recorder.updates["analysing"]
    total = steps[0][1]
    assert total >= 7 and all(t == total for _, t in steps)
    assert [d for d, _ in steps] == list(range(1, total + 1))  # one tick per analysis, to the end


# --- gradcheck ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_gradcheck_samples_leaves_with_a_seed(invoke, moons_file: Path) -> None:
    result = invoke("gradcheck", moons_file, "--sample", "30", "--seed", "4")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": ok (30 of 741 leaves, a random sample drawn with seed 4)")
    assert len([line for line in lines if line.startswith("  ok  ")]) == 10
    assert lines[-2].startswith("  ... and 20 more leaves that agree (largest difference ")
    assert lines[-1] == "  (--full for all)"
    again = invoke("gradcheck", moons_file, "--sample", "30", "--seed", "4", "--full")
    listed = [line for line in again.stdout.splitlines() if line.startswith("  ok  ")]
    assert len(listed) == 30 and lines[1:11] == listed[:10]
    report = json.loads(invoke("gradcheck", moons_file, "--sample", "30", "--seed", "4",
                               "--json").stdout)
    assert (report["checked"], report["total_leaves"], report["chosen"], report["seed"]) == (
        30, 741, "sample", 4)
    other = json.loads(invoke("gradcheck", moons_file, "--sample", "30", "--json").stdout)
    assert other["seed"] == 0 and {c["id"] for c in other["leaves"]} != {
        c["id"] for c in report["leaves"]}


@pytest.mark.slow
def test_gradcheck_of_chosen_leaves(invoke, moons_file: Path) -> None:
    ids = {v.label: v.id for v in opgraph.load(moons_file).nodes if v.label}
    b, w = ids["layer2.neuron0.b"], ids["layer1.neuron3.w7"]
    result = invoke("gradcheck", moons_file, "--leaf", w, "--leaf", b)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": ok (2 of 741 leaves, as given)")
    assert sorted(re.search(r"id (\d+)", line).group(1) for line in lines[1:]) == sorted(
        [str(b), str(w)])
    act = ids["layer0.neuron0.act"]
    computed = invoke("gradcheck", moons_file, "--leaf", act)
    assert computed.exit_code == 1
    assert computed.stderr.startswith("error: gradcheck: 'layer0.neuron0.act' id ")
    assert "is computed by op 'relu', not a leaf" in computed.stderr
    missing = invoke("gradcheck", moons_file, "--leaf", 10**7)
    assert missing.exit_code == 1
    assert missing.stderr == (f"error: {moons_file}: graph 'moons' has no node 10000000 (ids "
                              f"are 0..65817)\n")


def test_gradcheck_of_a_chosen_bad_leaf(invoke, bad_grad_file: Path) -> None:
    result = invoke("gradcheck", bad_grad_file, "--leaf", "0", "--sample", "1")
    assert result.exit_code == 1
    assert "BAD 'x' id 0 (data 3.0): analytic 3, numeric 6" in result.stdout


def test_gradcheck_shows_an_eta(runner, neuron_file: Path) -> None:
    """At a terminal the bar counts the leaves and shows the time left."""
    from opgraph.cli import app

    result = runner.invoke(app, ["gradcheck", str(neuron_file)],
                           env={"COLUMNS": "120", "TTY_COMPATIBLE": "1"})
    assert result.exit_code == 0, result.stderr
    frames = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr)
    assert re.search(r"checking gradients .* \d/5 \d:\d\d:\d\d left ", frames), frames
    assert result.stdout.splitlines()[0].endswith(": ok")


def test_gradcheck_progress_has_an_eta_the_analysis_none(invoke, neuron_file: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(files, "progress", recorder)
    assert invoke("gradcheck", neuron_file).exit_code == 0
    assert invoke("analyze", neuron_file).exit_code == 0
    assert recorder.eta == {"loading": False, "checking": True, "analysing": False}
    assert recorder.updates["checking"] == [(i, 5) for i in range(5)]


def test_labels_are_printed_as_they_are(invoke, tmp_path: Path) -> None:
    """Brackets in a label are text, not rich markup ("[red]y" lost its "[red]" before)."""
    g = opgraph.Graph("m")
    a, b = g.leaf(1.0, "w[bold]0"), g.leaf(2.0, "x[/]")
    (a * b).label = "[red]y"
    result = invoke("analyze", opgraph.save(g, tmp_path / "m.opg"))
    assert result.exit_code == 0, result.stderr
    assert row(result.stdout, "critical path") == "2 nodes: 0 (w[bold]0) -> 2 ([red]y)"


# --- render -------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_render_summarises_the_moons_step_by_model_part_and_says_so(
        invoke, moons_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "moons.png"
    result = invoke("render", moons_file, "-o", out)
    assert result.exit_code == 0, result.stderr
    wrote, note = result.stderr.splitlines()
    assert wrote.startswith(f"wrote {out} (png, ")
    assert note == ("summarised by model part: 65818 nodes, more than the 400 drawn whole; "
                    "--around ID --depth D draws a node's neighbourhood whole, --part NAME the "
                    "inside of a part")
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    dot = tmp_path / "layer1.dot"
    inside = invoke("render", moons_file, "-o", dot, "--part", "layer1")
    assert inside.exit_code == 0, inside.stderr
    assert inside.stderr.splitlines()[1] == (
        "drew the inside of part 'layer1', summarised by model part; --part layer1.NAME goes "
        "one level down, --around ID --depth D draws a node's neighbourhood whole")
    assert dot.read_text().count('label="layer1.neuron') == 16
    by_op = invoke("render", moons_file, "-o", tmp_path / "ops.dot", "--by", "op")
    assert by_op.stderr.splitlines()[1].startswith("summarised by op: 65818 nodes, more than ")
    near = invoke("render", moons_file, "-o", tmp_path / "near.svg", "--around", "343",
                  "--depth", "1")
    assert near.exit_code == 0 and len(near.stderr.splitlines()) == 1  # drawn whole: no note
    missing = invoke("render", moons_file, "-o", tmp_path / "x.svg", "--part", "layer9")
    assert missing.exit_code == 1
    assert missing.stderr == ("error: graph 'moons' has no node in part 'layer9' (parts at "
                              "that depth: l2, layer0, layer1, layer2, svm_loss)\n")


def test_render_refuses_what_it_cannot_summarise(invoke, neuron_file: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "x.svg"
    bad = invoke("render", neuron_file, "-o", out, "--by", "line")
    assert bad.exit_code == 2 and "'line' is not one of auto, part, op" in bad.stderr
    both = invoke("render", neuron_file, "-o", out, "--part", "a", "--around", "1")
    assert both.exit_code == 2
    assert both.stderr.startswith("error: give --around (a neighbourhood) or --part")
    no_parts = invoke("render", neuron_file, "-o", out, "--by", "part", "--max-nodes", "5")
    assert no_parts.exit_code == 1
    assert no_parts.stderr == ("error: graph 'neuron' has no model parts (no label names one, "
                               "as layer0.neuron3.w1 does): summarise it by op\n")
    small = invoke("render", neuron_file, "-o", out, "--max-nodes", "5")
    assert small.stderr.splitlines()[1] == (
        "summarised by op: 10 nodes, more than the 5 drawn whole; --around ID "
        "--depth D draws a node's neighbourhood whole")
    whole = invoke("render", neuron_file, "-o", out)
    assert whole.stderr == f"wrote {out} (svg, {out.stat().st_size} bytes)\n"


def test_elide() -> None:
    from opgraph.cli.common import elide

    items = [str(i) for i in range(12)]
    assert elide([], 3) == "-"
    assert elide(items, None) == elide(items, 12) == ", ".join(items)
    assert elide(items, 3) == "0, 1, 2, … and 9 more; --full for all"
    assert elide(items, 0) == "… and 12 more; --full for all"
    assert elide(items, 5, tail=2, sep=" -> ") == (
        "0 -> 1 -> 2 -> … 7 more … -> 10 -> 11 (--full for all)")
    assert elide(items, 1, tail=2, sep=" -> ", more="all below") == "0 -> … and 11 more; all below"
