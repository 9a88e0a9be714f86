"""examples/moons.py: micrograd's demo reaches 100% accuracy, draws its PNGs, publishes.

The training function runs in-process (the full demo with the compiled executor, a smaller
one eagerly); the script runs as a subprocess too, once alone and once publishing to a real
``opgraph serve`` subprocess, whose graph is then read back with the Python client.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opgraph_client import Client

from opgraph import topological_order
from opgraph.datasets import make_moons
from opgraph.nn import MLP

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "moons.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SERVER_START_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def moons():
    """examples/moons.py, imported as a module."""
    spec = importlib.util.spec_from_file_location("moons_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and len(data) > 1000


def run_script(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}  # room for the whole progress bar
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def line_of(text: str) -> int:
    """The line of examples/moons.py holding ``text`` (exactly one)."""
    lines = [i for i, line in enumerate(SCRIPT.read_text().splitlines(), 1) if text in line]
    assert len(lines) == 1, (text, lines)
    return lines[0]


# --- training ---------------------------------------------------------------------------------


def test_the_full_demo_reaches_100_percent_accuracy(moons) -> None:
    """100 points, MLP(2, [16, 16, 1]), 100 steps: the demo as micrograd runs it (compiled,
    which the next tests hold equal to the eager engine)."""
    result = moons.train(progress=False, compiled=True)
    assert len(result.points) == 100 and len(result.losses) == 100
    assert result.accuracy == 1.0
    assert result.accuracies[-1] == 1.0
    assert result.accuracies[0] < 0.9  # it learned it: the initial model is not there yet
    assert result.losses[-1] < result.losses[0] / 10
    assert [len(layer.neurons) for layer in result.model.layers] == [16, 16, 1]


def test_eager_training_reaches_100_percent_accuracy_on_fewer_points(moons) -> None:
    result = moons.train(steps=30, points=30, progress=False)
    assert result.accuracy == 1.0, result.accuracies
    assert result.losses[-1] < result.losses[0] / 5


def test_eager_and_compiled_training_give_the_same_numbers(moons) -> None:
    eager = moons.train(steps=8, points=20, seed=3, progress=False)
    compiled = moons.train(steps=8, points=20, seed=3, compiled=True, progress=False)
    for a, b in zip(eager.losses, compiled.losses, strict=True):
        assert abs(a - b) <= 1e-12 * abs(a), (eager.losses, compiled.losses)
    assert eager.accuracies == compiled.accuracies
    for p, q in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        assert abs(p.data - q.data) <= 1e-12 * max(abs(p.data), abs(q.data))
    assert len(set(eager.losses)) == 8  # the steps changed something


def test_the_learning_rate_goes_from_1_to_0_1_as_micrograds_does(moons) -> None:
    assert [moons.learning_rate(k, 100) for k in range(100)] == [
        1.0 - 0.9 * k / 100 for k in range(100)]
    assert moons.learning_rate(0, 10) == 1.0
    assert moons.learning_rate(9, 10) == pytest.approx(0.19)


def test_seeds_make_runs_reproducible(moons) -> None:
    first = moons.train(steps=3, points=10, seed=5, compiled=True, progress=False)
    again = moons.train(steps=3, points=10, seed=5, compiled=True, progress=False)
    other = moons.train(steps=3, points=10, seed=6, compiled=True, progress=False)
    assert first.losses == again.losses
    assert first.points == make_moons(10, noise=0.1, seed=5)[0]
    assert first.losses != other.losses


# --- pictures and the command line ------------------------------------------------------------


def test_the_pictures_are_pngs(moons, tmp_path: Path) -> None:
    result = moons.train(steps=3, points=10, compiled=True, progress=False)
    loss = moons.plot_loss(result, tmp_path / "loss.png")
    boundary = moons.plot_boundary(result, tmp_path / "boundary.png", resolution=20)
    assert is_png(loss) and is_png(boundary)


def test_the_script_trains_and_writes_both_pngs(tmp_path: Path) -> None:
    done = run_script("--steps", "3", "--points", "12", "--out", "plots", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "after 3 steps: loss" in done.stdout
    assert "training accuracy" in done.stdout
    assert "3/3" in done.stdout  # the progress bar, finished
    for name in ("moons_loss.png", "moons_boundary.png"):
        assert is_png(tmp_path / "plots" / name), name


def test_bad_arguments_exit_with_2(moons, capsys) -> None:
    for argv in (["--steps", "0"], ["--points", "1"], ["--steps", "many"]):
        with pytest.raises(SystemExit) as exit_info:
            moons.main(argv)
        assert exit_info.value.code == 2, argv
        assert "error" in capsys.readouterr().err


def test_an_unreachable_server_is_reported_and_exits_with_1(moons, capsys) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(SystemExit) as exit_info:
        moons.main(["--publish", url, "--steps", "1", "--points", "4"])
    assert exit_info.value.code == 1
    assert f"moons: cannot connect to {url}" in capsys.readouterr().err


# --- publishing to a real server --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory):
    """``opgraph serve --listen tcp://127.0.0.1:PORT --no-demo`` as a subprocess, stopped
    after the module's tests."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opgraph", "serve", "--listen", url, "--no-demo"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}: {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not start in {SERVER_START_TIMEOUT} s: "
                                f"{log.read_text()}")
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def all_nodes(client: Client, name: str) -> tuple[dict, list[dict]]:
    info = client.graph(name).info()
    nodes = client.graph(name).get(list(range(info["nodes"])))["nodes"]
    return info, nodes


def test_publish_makes_the_graph_appear_on_the_server(server_url: str, tmp_path: Path,
                                                      moons) -> None:
    done = run_script("--publish", server_url, "--graph", "moons-test", "--steps", "2",
                      "--points", "6", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"published graph 'moons-test' to {server_url} 2 times" in done.stdout

    # the same graph, built here: as many nodes, the same ops
    xs, ys = make_moons(6, noise=0.1, seed=moons.DEFAULT_SEED)
    local, _ = moons.build_loss(MLP(2, [16, 16, 1], seed=moons.DEFAULT_SEED), xs, ys)
    expected = topological_order(local)

    with Client(server_url) as client:
        assert "moons-test" in [g["name"] for g in client.call("graph.list")]
        info, nodes = all_nodes(client, "moons-test")
        assert info["nodes"] == len(expected)
        assert len(info["outputs"]) == 1
        assert sorted(n["op"] or "" for n in nodes) == sorted(v.op or "" for v in expected)

    # every node carries the line of examples/moons.py that created it
    sources = {tuple(n["source"]) if n["source"] else None for n in nodes}
    assert {s[0] for s in sources if s} == {str(SCRIPT)}, sources
    assert None not in sources
    lines = {s[1] for s in sources}
    assert line_of("scores = [model(x) for x in inputs]") in lines  # the MLP's nodes
    assert line_of("inputs = [[Value(x), Value(y)]") in lines  # the points
    assert line_of("model = MLP(2, [16, 16, 1], seed=seed)") in lines  # the parameters
    root = next(n for n in nodes if n["id"] == info["outputs"][0])
    assert root["grad"] == 1.0 and root["source"][1] == line_of(
        "return data_loss + reg_loss, scores")


def test_compiled_training_publishes_current_numbers(server_url: str, moons) -> None:
    result = moons.train(steps=3, points=5, compiled=True, publish=server_url,
                         graph="moons-compiled", progress=False)
    assert result.published == 3
    with Client(server_url) as client:
        info, nodes = all_nodes(client, "moons-compiled")
    root = next(n for n in nodes if n["id"] == info["outputs"][0])
    # the last publish: the loss before the last update, with its gradients
    assert root["data"] == result.losses[-1]
    assert root["grad"] == 1.0
    leaves = [n for n in nodes if n["op"] is None]
    assert any(n["grad"] != 0 for n in leaves)
    assert all(n["source"] and n["source"][0] == str(SCRIPT) for n in nodes)
