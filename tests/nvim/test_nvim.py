"""The Neovim client (clients/nvim) in a real headless Neovim against a real opgraph server.

Each test starts ``nvim --headless -u NONE`` with the plugin on its runtimepath and runs one case
of ``harness.lua``, which drives the plugin through its user commands and writes what it saw
(extmarks, diagnostics, notifications, the hover window) to a JSON file. Phases that need this
side (publish again, stop the server, ...) are requested through files. Every Neovim run has a
time limit, so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "clients" / "nvim"
HARNESS = Path(__file__).with_name("harness.lua")
SCRIPT = ROOT / "examples" / "neuron_live.py"
BIN = Path(sys.executable).parent  # the venv's bin: opgraph, python
NVIM = shutil.which("nvim")
NVIM_TIMEOUT = 180  # seconds for one whole Neovim run: a hang guard, not a speed check
SERVER_START_TIMEOUT = 30

WARN, ERROR, INFO = 3, 4, 2  # vim.log.levels
DIAG_WARN = 2  # vim.diagnostic.severity.WARN

pytestmark = pytest.mark.skipif(
    NVIM is None, reason="nvim is not installed (`make test` installs it with apt-get)")


# --- a real server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``opgraph serve --listen tcp://127.0.0.1:PORT --no-demo`` as a subprocess."""

    def __init__(self, log_dir: Path, data: Path | None = None) -> None:
        self.data = data  # the store (--data) when given, else in memory
        self.port = free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"server-{self.starts}.log"
        with open(log, "wb") as err:
            store = ["--data", str(self.data)] if self.data else []
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "opgraph", "serve", "--listen", self.url, "--no-demo",
                 *store],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not self._accepts():
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}: "
                            f"{log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the server did not accept connections within "
                            f"{SERVER_START_TIMEOUT} s: {log.read_text(errors='replace')}")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                # Linux may connect a socket to itself when its ephemeral port happens to be
                # the one probed and nothing listens yet: that is not the server.
                return probe.getsockname() != probe.getpeername()
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is closed cleanly."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def publish(self, scale: float) -> None:
        """Run the example script: it builds the neurons and publishes them as ``neurons``."""
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--publish", self.url, "--graph", "neurons",
             "--scale", repr(scale)],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"publishing failed: {done.stdout}{done.stderr}"


@pytest.fixture
def server(tmp_path: Path):
    srv = Server(tmp_path)
    srv.start()
    yield srv
    srv.stop()


# --- Neovim ----------------------------------------------------------------------------------


def run_nvim(case: str, workdir: Path, handlers: dict[str, Callable[[], None]],
             **env: str) -> dict[str, Any]:
    """Run harness case ``case`` in a headless Neovim; answer its requests with ``handlers``."""
    workdir.mkdir(parents=True, exist_ok=True)
    xdg = workdir / "xdg"
    full_env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "XDG_CONFIG_HOME": str(xdg / "config"),
        "XDG_DATA_HOME": str(xdg / "data"),
        "XDG_STATE_HOME": str(xdg / "state"),
        "XDG_CACHE_HOME": str(xdg / "cache"),
        "OPGRAPH_TEST_DIR": str(workdir),
        "OPGRAPH_TEST_CASE": case,
        **env,
    }
    command = [NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-n",
               "--cmd", f"set rtp+={PLUGIN}",
               "-c", "runtime plugin/opgraph.lua",
               "-c", f"luafile {HARNESS}"]
    out_path, err_path = workdir / "nvim.stdout", workdir / "nvim.stderr"
    handled: set[str] = set()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(command, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + NVIM_TIMEOUT
            while proc.poll() is None:
                for request in sorted(workdir.glob("*.req")):
                    name = request.stem
                    if name in handled:
                        continue
                    handled.add(name)
                    if name not in handlers:
                        pytest.fail(f"the harness asked for {name!r}, which this test "
                                    "does not handle")
                    handlers[name]()
                    (workdir / f"{name}.ok").write_text("")
                if time.monotonic() > deadline:
                    pytest.fail(f"nvim did not finish case {case!r} within {NVIM_TIMEOUT} s; "
                                f"stderr: {err_path.read_text(errors='replace')}")
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    stderr = err_path.read_text(errors="replace")
    results_file = workdir / "results.json"
    assert results_file.exists(), (
        f"nvim wrote no results (exit {proc.returncode}); stderr: {stderr}; "
        f"stdout: {out_path.read_text(errors='replace')}")
    results = json.loads(results_file.read_text())
    assert results["failure"] is None, f"the harness failed:\n{results['failure']}"
    assert results["errmsg"] == "", f"Neovim reported an error: {results['errmsg']}"
    for bad in ("E5108", "E5113", "Error executing", "stack traceback"):
        assert bad not in stderr, f"Neovim printed a Lua error:\n{stderr}"
    return results


# --- what the example script computes, by hand -----------------------------------------------


def expected(scale: float) -> dict[str, tuple[float, float]]:
    """Label -> (data, grad) of the example's named nodes, computed here with math.tanh."""
    x1, x2, w1, w2, b = 2.0 * scale, 0.0 * scale, -3.0, 1.0, 6.8813735870195432
    n = x1 * w1 + x2 * w2 + b
    o = math.tanh(n)
    dn = 1 - o * o
    y1, y2, v1, v2, c = 1.0 * scale, 0.5 * scale, 4.0, 3.0, -1.0
    m = y1 * v1 + y2 * v2 + c
    q = math.tanh(m)
    dm = 1 - q * q
    return {
        "x1": (x1, w1 * dn), "x2": (x2, w2 * dn), "w1": (w1, x1 * dn), "w2": (w2, x2 * dn),
        "b": (b, dn), "n": (n, dn), "o": (o, 1.0),
        "y1": (y1, v1 * dm), "y2": (y2, v2 * dm), "v1": (v1, y1 * dm), "v2": (v2, y2 * dm),
        "c": (c, dm), "m": (m, dm), "q": (q, 1.0), "out": (o + q, 1.0),
    }


def g4(x: float) -> str:
    return f"{x:.4g}"


def annotation(label: str, values: dict[str, tuple[float, float]]) -> str:
    data, grad = values[label]
    return f"{label} = {g4(data)} ∇ {g4(grad)}"


def line_of(path: Path, text: str) -> int:
    """The 1-based number of the first line of ``path`` containing ``text``."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} is not in {path}")


LEAF_LINES = {label: f'{label} = Value(' for label in
              ("x1", "x2", "w1", "w2", "b", "y1", "y2", "v1", "v2", "c")}
LINES = {
    **{label: line_of(SCRIPT, pattern) for label, pattern in LEAF_LINES.items()},
    "n": line_of(SCRIPT, "n = x1 * w1 + x2 * w2 + b"),
    "o": line_of(SCRIPT, "o = n.tanh()"),
    "m": line_of(SCRIPT, "m = y1 * v1 + y2 * v2 + c"),
    "q": line_of(SCRIPT, "q = m.tanh()"),
    "out": line_of(SCRIPT, "out = o + q"),
}


def marks_by_line(snapshot: dict[str, Any]) -> dict[int, str]:
    marks = snapshot["marks"]
    by_line = {m["line"]: m["text"] for m in marks}
    assert len(by_line) == len(marks), f"more than one extmark on a line: {marks}"
    return by_line


def check_annotations(snapshot: dict[str, Any], scale: float) -> None:
    """Every line of the script that made a node holds that node's data and grad."""
    values = expected(scale)
    by_line = marks_by_line(snapshot)
    assert set(by_line) == set(LINES.values()), f"annotated lines: {sorted(by_line)}"
    for label in LEAF_LINES:
        assert by_line[LINES[label]].strip() == annotation(label, values), label
    for label in ("o", "q", "out"):
        assert by_line[LINES[label]].strip().startswith(annotation(label, values)), label
    # Lines that made several nodes show all of them, the named result last.
    n_line = by_line[LINES["n"]]
    assert n_line.count(" │ ") == 3, n_line
    assert n_line.split(" │ ")[0].strip() == f"x1*w1 = {g4(values['x1'][0] * -3.0)} ∇ " \
                                              f"{g4(values['n'][1])}"
    assert n_line.strip().endswith(annotation("n", values)), n_line
    assert by_line[LINES["m"]].strip().endswith(annotation("m", values))


def saturated_lines(snapshot: dict[str, Any]) -> list[int]:
    found = [d for d in snapshot["diagnostics"] if d["code"] == "saturated-tanh"]
    for d in found:
        assert d["severity"] == DIAG_WARN and d["source"] == "opgraph", d
    return sorted(d["line"] for d in found)


def one_line(entry: dict[str, Any], level: int) -> str:
    """The command ran without a Lua error and said exactly one line at ``level``."""
    assert entry["ok"], f"{entry['command']} raised: {entry['error']}"
    said = entry["notifications"]
    assert len(said) == 1, f"{entry['command']} notified {said}"
    assert said[0]["level"] == level, said
    assert "\n" not in said[0]["message"], said
    assert said[0]["message"].startswith("opgraph: "), said
    return said[0]["message"]


def command(results: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in results["commands"] if c["command"] == name]
    assert found, f"{name} did not run"
    return found[0]


# --- the tests -------------------------------------------------------------------------------


def test_show_updates_live_hover_render(server: Server, tmp_path: Path) -> None:
    server.publish(1.0)
    results = run_nvim(
        "live", tmp_path / "nvim",
        {"republish": lambda: server.publish(0.5)},
        OPGRAPH_URL=server.url, OPGRAPH_SCRIPT=str(SCRIPT),
        OPGRAPH_LINES=json.dumps(LINES))
    shots = results["snapshots"]

    # :OpgraphShow: the seed's numbers beside the lines that made them.
    check_annotations(shots["first"], 1.0)
    first = marks_by_line(shots["first"])
    assert first[LINES["x1"]].strip() == "x1 = 2 ∇ -1.5"
    assert first[LINES["o"]].strip() == "o = 0.7071 ∇ 1"
    assert first[LINES["n"]].strip().endswith("n = 0.8814 ∇ 0.5")
    # The saturated tanh is a warning on the line that made it, also named in the text.
    assert saturated_lines(shots["first"]) == [LINES["q"]]
    assert first[LINES["q"]].strip() == "q = 0.9998 ∇ 1  saturated-tanh"
    assert "connected to " + server.url in one_line(
        command(results, f"OpgraphConnect {server.url}"), INFO)

    # A graph the server does not have: one line saying the plugin waits for it (it used to
    # be an error; issue 12 asks to wait for the graph to appear).
    assert one_line(command(results, "OpgraphShow no-such-graph"), WARN) == \
        "opgraph: waiting for graph 'no-such-graph' (unknown_graph: no graph named " \
        "'no-such-graph'): it is shown as soon as it is published; :OpgraphClear " \
        "no-such-graph stops waiting"

    # Published again with other numbers: the annotations followed by themselves.
    assert results["events"]["updated"], "the annotations did not change after a new publish"
    check_annotations(shots["second"], 0.5)
    # With scale 0.5 the first neuron saturates instead: the warning moved with the data.
    assert saturated_lines(shots["second"]) == [LINES["o"]]

    # :OpgraphHover: a floating window with the node of the line.
    hover = results["hover"]
    assert hover is not None, f"no hover window: {command(results, 'OpgraphHover')}"
    assert hover["relative"] != "", "the hover window is not floating"
    lines = hover["lines"]
    o_data = expected(0.5)["o"][0]
    assert lines[0].startswith("graph neurons · version ")
    assert any(line.startswith("o #") and "= tanh(n #" in line for line in lines), lines
    assert f"  data  {o_data:.8g}" in lines
    assert "  grad  1" in lines
    assert any(line.startswith("  inputs  n #") for line in lines), lines
    influenced = next(line for line in lines if line.startswith("  influenced by  "))
    for leaf in ("x1", "x2", "w1", "w2", "b"):
        assert f"{leaf} #" in influenced, influenced
    assert any("saturated-tanh" in line for line in lines), lines

    # :OpgraphRender around the cursor node, to the file given.
    svg = tmp_path / "nvim" / "around.svg"
    assert str(svg) in one_line(command(results, f"OpgraphRender neurons {svg}"), INFO)
    assert "<svg" in svg.read_text()

    # :OpgraphClear removes the virtual text and the diagnostics.
    assert shots["cleared"] == {"marks": [], "diagnostics": []}


def test_server_down_is_reported_and_recovered(server: Server, tmp_path: Path) -> None:
    server.publish(1.0)

    def restart() -> None:
        server.start()

    results = run_nvim(
        "down", tmp_path / "nvim",
        {"stop_server": server.stop, "restart_server": restart,
         "publish": lambda: server.publish(0.5)},
        OPGRAPH_URL=server.url, OPGRAPH_SCRIPT=str(SCRIPT),
        OPGRAPH_LINES=json.dumps(LINES))
    shots = results["snapshots"]
    check_annotations(shots["before"], 1.0)

    # The dropped connection is noticed without any command, and said once.
    assert results["events"]["noticed"], "the plugin did not notice the server going away"
    lost = [n for n in results["lost"] if "lost the connection" in n["message"]]
    assert len(lost) == 1 and lost[0]["level"] == WARN, results["lost"]
    assert server.url in lost[0]["message"]

    # Every command reports the failure in one line; none raises.
    for entry in results["down"]:
        message = one_line(entry, ERROR)
        assert f"cannot connect to {server.url}" in message, message
        assert "refused" in message.lower(), message

    # Neovim stays usable, and the annotations are still there (from before).
    assert results["usable"] == {"eval": 2, "lines": ["still", "usable"]}
    assert shots["down"] == shots["before"]

    # :OpgraphConnect recovers (unless the plugin reconnected by itself just before); the
    # graph, published again, is shown again by itself.
    reconnect = command(results, f"OpgraphConnect {server.url}")
    assert reconnect["ok"], reconnect
    said = [(n["level"], n["message"]) for n in reconnect["notifications"]]
    assert said[0][0] == INFO and said[0][1].startswith(f"opgraph: connected to {server.url}"), \
        said
    assert all("is not on" in m for _, m in said[1:]) and len(said) <= 2, said
    assert results["events"]["recovered"], "the annotations did not come back after reconnecting"
    check_annotations(shots["recovered"], 0.5)
    assert saturated_lines(shots["recovered"]) == [LINES["o"]]


def test_start_over_stdio_lists_and_shows_demo(tmp_path: Path) -> None:
    assert (BIN / "opgraph").exists(), f"no opgraph executable in {BIN}"
    import opgraph_server.demo

    demo = Path(opgraph_server.demo.__file__).resolve()
    results = run_nvim("stdio", tmp_path / "nvim", {}, OPGRAPH_DEMO=str(demo))

    started = one_line(command(results, "OpgraphStart"), INFO)
    assert started.startswith("opgraph: started opgraph serve --stdio"), started

    listing = command(results, "OpgraphGraphs")
    assert listing["ok"], listing
    [said] = listing["notifications"]
    assert said["level"] == INFO
    rows = said["message"].splitlines()
    assert rows[0] == "opgraph: 1 graph on stdio: opgraph serve --stdio:", rows
    assert rows[1].split() == ["demo", "10", "nodes", "version", rows[1].split()[-1]], rows

    # The demo graph's nodes were built in demo.py: its lines carry the seed's numbers.
    by_line = marks_by_line(results["snapshots"]["demo"])
    assert by_line[line_of(demo, "o = n.tanh()")].strip() == "o = 0.7071 ∇ 1"
    assert by_line[line_of(demo, 'x1 = Value(2.0')].strip() == "x1 = 2 ∇ -1.5"

    # A start command that cannot run: one error line, then commands say there is no server.
    failed = one_line(command(results, "OpgraphStart /nonexistent/opgraph-server"), ERROR)
    assert "cannot start /nonexistent/opgraph-server" in failed, failed
    after = [c for c in results["commands"] if c["command"] == "OpgraphGraphs"][1]
    assert "not connected" in one_line(after, ERROR)


# --- time limits, CTRL-C, health, a restarted server -----------------------------------------


class SilentServer:
    """Accepts TCP connections, reads what comes, and never answers."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.url = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def all_closed_by_peer(self) -> bool:
        """Every connection so far was closed by the client (reads end with b'')."""
        for conn in self.accepted:
            conn.settimeout(5)
            try:
                while conn.recv(65536):
                    pass
            except TimeoutError:
                return False
        return True

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def test_time_limit_ctrl_c_and_background(tmp_path: Path) -> None:
    silent = SilentServer()
    checked: list[tuple[int, bool]] = []
    try:
        results = run_nvim(
            "silent", tmp_path / "nvim",
            {"check_closed": lambda: checked.append(
                (len(silent.accepted), silent.all_closed_by_peer()))},
            OPGRAPH_SILENT_URL=silent.url)
    finally:
        silent.close()
    connects = [c for c in results["commands"] if c["command"] == f"OpgraphConnect {silent.url}"]
    assert len(connects) == 3, results["commands"]

    # A server that does not answer: the request's time limit ends the wait, in one line.
    assert one_line(connects[0], ERROR) == \
        f"opgraph: {silent.url}: no answer to initialize within 300 ms"
    assert results["usable"] == {"eval": 2}

    # CTRL-C cancels a command that waits, long before its time limit; nothing is connected,
    # and the half-open connections were closed (not left to the server).
    assert one_line(connects[1], WARN) == "opgraph: :OpgraphConnect cancelled (CTRL-C)"
    assert results["after_cancel"]["connected"] is False
    assert checked == [(2, True)]

    # Waiting longer than wait_ms: the command returns, and its answer (here the time limit's
    # error) comes by itself later.
    said = [(n["level"], n["message"]) for n in results["background"]]
    assert said == [
        (INFO, "opgraph: :OpgraphConnect is still waiting for the server; "
               "it goes on in the background"),
        (ERROR, f"opgraph: {silent.url}: no answer to initialize within 400 ms"),
    ], said


def test_checkhealth(server: Server, tmp_path: Path) -> None:
    dead = f"tcp://127.0.0.1:{free_port()}"
    results = run_nvim("health", tmp_path / "nvim", {}, OPGRAPH_URL=server.url,
                       OPGRAPH_DEAD_URL=dead)

    def report(lines: list[str]) -> str:
        text = "\n".join(lines)
        assert 'opgraph: require("opgraph.health").check()' in text, text
        return text

    reachable = report(results["health_reachable"])
    version = subprocess.run([NVIM, "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[1].lstrip("v")
    assert f"OK: Neovim {version} (0.7.2 or later is needed)" in reachable, reachable
    assert f"OK: the server at {server.url} is reachable (opgraph " in reachable, reachable
    dot = shutil.which("dot")
    if dot:
        assert f"OK: dot: {os.path.realpath(dot)}" in reachable or f"OK: dot: {dot}" in reachable
    else:
        assert "WARNING: dot is not on $PATH" in reachable

    connected = report(results["health_connected"])
    assert f"OK: connected to {server.url} (opgraph " in connected, connected
    assert "it answers: 0 graphs" in connected, connected

    unreachable = report(results["health_dead"])
    assert f"ERROR: the server at {dead} is not reachable: cannot connect to {dead}: " \
           "connection refused" in unreachable, unreachable
    assert "ADVICE" in unreachable


def test_restarted_server_reusing_versions_is_redrawn(server: Server, tmp_path: Path) -> None:
    for _ in range(3):
        server.publish(1.0)  # versions go up with each publish

    def restart() -> None:
        server.stop()
        server.start()

    results = run_nvim(
        "restart", tmp_path / "nvim",
        {"restart_server": restart, "publish": lambda: server.publish(0.5)},
        OPGRAPH_URL=server.url, OPGRAPH_SCRIPT=str(SCRIPT), OPGRAPH_LINES=json.dumps(LINES))
    shots = results["snapshots"]
    check_annotations(shots["before"], 1.0)
    assert results["events"]["noticed"]
    # The new server does not have the graph: what was drawn from the old one is stale, and
    # goes (said once) until the graph is published again.
    assert shots["reconnected"] == {"marks": [], "diagnostics": []}, shots["reconnected"]
    cleared = [n["message"] for n in results["reconnect_notes"] if "cleared" in n["message"]]
    assert cleared == [f"opgraph: graph 'neurons' is not on {server.url}: its annotations from "
                       "before are cleared; it is shown again once it is published"], \
        results["reconnect_notes"]
    # The new server counts from the start: its version is lower than the one drawn before,
    # and still it is the one drawn.
    assert results["version_after"] < results["version_before"], results
    assert results["events"]["redrawn"], "the new server's graph was not drawn"
    check_annotations(shots["after"], 0.5)


def test_restart_on_the_store_reconnects_resubscribes_and_redraws(tmp_path: Path) -> None:
    server = Server(tmp_path, data=tmp_path / "graphs.db")
    server.start()

    def kill_restart_publish() -> None:
        server.kill()
        server.start()  # the same port, the same store
        server.publish(0.5)

    try:
        server.publish(1.0)
        results = run_nvim(
            "durable", tmp_path / "nvim",
            {"kill_restart_publish": kill_restart_publish,
             "publish_again": lambda: server.publish(0.25)},
            OPGRAPH_URL=server.url, OPGRAPH_SCRIPT=str(SCRIPT), OPGRAPH_LINES=json.dumps(LINES))
    finally:
        server.stop()
    shots = results["snapshots"]
    check_annotations(shots["before"], 1.0)
    # No command was given: the plugin reconnected to the new server by itself and drew what
    # it has, not the numbers from before.
    assert results["events"]["redrawn"], "the plugin did not reconnect and redraw by itself"
    check_annotations(shots["after_restart"], 0.5)
    assert results["identity_after"] != results["identity_before"], results
    said = [(n["level"], n["message"]) for n in results["restart_notes"]]
    assert [level for level, _ in said] == [WARN, INFO], said
    assert said[0][1].startswith(f"opgraph: lost the connection to {server.url}"), said
    assert said[0][1].endswith("reconnecting by itself (:OpgraphConnect does it now)"), said
    assert said[1][1].startswith(f"opgraph: reconnected to {server.url} (opgraph "), said
    # Subscribed again: the next change arrives by itself.
    assert results["events"]["followed"], "a change after the reconnection was not shown"
    check_annotations(shots["followed"], 0.25)


def test_show_waits_for_a_graph_not_published_yet(server: Server, tmp_path: Path) -> None:
    results = run_nvim(
        "waiting", tmp_path / "nvim", {"publish": lambda: server.publish(1.0)},
        OPGRAPH_URL=server.url, OPGRAPH_SCRIPT=str(SCRIPT), OPGRAPH_LINES=json.dumps(LINES))
    said = one_line(command(results, "OpgraphShow neurons"), WARN)
    assert said.startswith("opgraph: waiting for graph 'neurons' (unknown_graph: "), said
    assert results["status_waiting"]["waiting"] == ["neurons"]
    assert results["status_waiting"]["shown"] == ["neurons"]

    # Published later: drawn by itself, and said once.
    assert results["events"]["appeared"], "the graph was not drawn when it was published"
    check_annotations(results["snapshots"]["appeared"], 1.0)
    assert saturated_lines(results["snapshots"]["appeared"]) == [LINES["q"]]
    appeared = [n for n in results["appeared"] if "appeared" in n["message"]]
    assert len(appeared) == 1 and appeared[0]["level"] == INFO, results["appeared"]
    assert re.fullmatch(r"opgraph: graph 'neurons' appeared: version \d+: 21 nodes, "
                        r"15 lines annotated here", appeared[0]["message"]), appeared
    assert results["status_after"]["waiting"] == []


def table_counts(lines: list[str], title: str) -> dict[str, int]:
    """The rows of the hover's list under the line starting with ``title``: label -> nodes."""
    start = lines.index(next(t for t in lines if t.startswith(title)))
    header = lines[start + 1].split()
    assert header == ["nodes", "data", "mean", "∇", "norm", "zero", "∇"], lines[start + 1]
    out = {}
    for text in lines[start + 2:]:
        if not text.startswith("  ") or text.startswith("  … "):
            break
        found = re.match(r"  (.*?)\s{2,}(\d+)  ", text)
        assert found, text
        out[found.group(1)] = int(found.group(2))
    return out


CROWDED = """\
import sys

import opgraph
from opgraph import Value
from opgraph_client import Client

with opgraph.track_source():
    xs = [Value(float(i % 7) - 3.0, label=f"x{i}") for i in range(1000)]
    total = sum((x * x for x in xs), Value(0.0, label="zero"))  # 2001 nodes on this line
total.label = "total"
total.backward()
with Client(sys.argv[1]) as client:
    client.publish("crowded", total)
"""


def numbers(text: str) -> list[float]:
    """The numbers in ``text``, in order."""
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?|nan|-?inf", text)]


def close(got: list[float], want: list[float], digits: int) -> None:
    """``got`` (printed with ``digits`` significant digits) are ``want``."""
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=10.0 ** (1 - digits), abs=1e-300), (got, want)


def plain(values: list[Any]) -> dict[str, Any]:
    """The statistics of nodes ``values`` recomputed here, plainly."""
    data = [v.data for v in values if math.isfinite(v.data)]
    grad = [v.grad for v in values if math.isfinite(v.grad)]
    ops: dict[str, int] = {}
    for v in values:
        if v.op is not None:
            ops[v.op] = ops.get(v.op, 0) + 1
    return {
        "count": len(values), "ops": ops, "leaves": sum(v.op is None for v in values),
        "data": (min(data), sum(data) / len(data), max(data)),
        "grad": (min(grad), sum(grad) / len(grad), max(grad)),
        "norm": math.sqrt(sum(g * g for g in grad)), "zero": sum(g == 0 for g in grad),
    }


def ops_text(stats: dict[str, Any]) -> str:
    ops = sorted(stats["ops"].items(), key=lambda kv: (-kv[1], kv[0]))
    words = [f"{n} {op}" for op, n in ops]
    if stats["leaves"]:
        words.append(f"{stats['leaves']} lea{'f' if stats['leaves'] == 1 else 'ves'}")
    return ", ".join(words)


def spread(lo: float, mean: float, hi: float, digits: int) -> list[float]:
    """The numbers of a "lo…hi mean m" text (a single "lo" when lo and hi print alike)."""
    return [lo, mean] if f"{lo:.{digits}g}" == f"{hi:.{digits}g}" else [lo, hi, mean]


def check_summary_line(text: str, stats: dict[str, Any]) -> None:
    """The virtual text of a crowded line: its count, data, gradient and ops, as recomputed."""
    head, data, grad, ops = text.strip().split("  ")[0].split(" │ ")
    assert head == f"{stats['count']} nodes", head
    lo, mean, hi = stats["data"]
    assert data.startswith(f"data {lo:.4g}" + ("" if f"{lo:.4g}" == f"{hi:.4g}" else
                                               f"…{hi:.4g}") + " mean "), data
    close(numbers(data), spread(lo, mean, hi, 4), 4)
    assert grad.startswith("∇ norm "), grad
    close(numbers(grad)[:1], [stats["norm"]], 4)
    if stats["zero"]:
        assert grad.endswith(f", {stats['zero']} zero"), grad
    else:
        assert "zero" not in grad, grad
    assert ops == ops_text(stats), ops


def check_hover_stats(lines: list[str], stats: dict[str, Any]) -> None:
    """The hover's statistics of a selection (8 significant digits) are the recomputed ones."""
    ops = next(t for t in lines if t.startswith("  ops   "))
    assert ops == f"  ops   {ops_text(stats)}", ops
    data = next(t for t in lines if t.startswith("  data  "))
    close(numbers(data), spread(*stats["data"], 8), 8)
    grad = next(t for t in lines if t.startswith("  grad  "))
    close(numbers(grad), spread(*stats["grad"], 8), 8)
    norm = next(t for t in lines if t.startswith("  ∇ norm "))
    assert norm.endswith(f" · {stats['zero']} zero · all finite"), norm
    close(numbers(norm)[:1], [stats["norm"]], 8)




def test_crowded_line_is_summed_up(server: Server, tmp_path: Path) -> None:
    script = tmp_path / "crowded.py"
    script.write_text(CROWDED)
    subprocess.run([sys.executable, str(script), server.url], check=True, timeout=60)
    line = line_of(script, "total = sum(")
    results = run_nvim("crowded", tmp_path / "nvim", {}, OPGRAPH_URL=server.url,
                       OPGRAPH_CROWDED=str(script), OPGRAPH_CROWDED_LINE=str(line))
    # x*x of x = i % 7 - 3 for 1000 values, summed from 0: 2001 nodes (the zero a leaf).
    xs = [float(i % 7) - 3.0 for i in range(1000)]
    squares = [x * x for x in xs]
    partial, acc = [], 0.0
    for sq in squares:
        acc += sq
        partial.append(acc)
    data = [0.0, *squares, *partial]
    grads = [1.0] * 2001  # (d total / d each node of the line; the xs are another line's)
    stats = {"count": 2001, "ops": {"mul": 1000, "add": 1000}, "leaves": 1,
             "data": (min(data), sum(data) / len(data), max(data)),
             "grad": (min(grads), sum(grads) / len(grads), max(grads)),
             "norm": math.sqrt(sum(g * g for g in grads)), "zero": grads.count(0.0)}
    by_line = marks_by_line(results["snapshots"]["shown"])
    check_summary_line(by_line[line], stats)
    assert "more" not in by_line[line] and "#" not in by_line[line], by_line[line]
    # The line that made the leaves x0..x999 is crowded too; they are all leaves.
    xs_line = line_of(script, "xs = [Value(")
    assert by_line[xs_line].strip().startswith("1000 nodes │ data -3…3 mean "), by_line[xs_line]
    assert by_line[xs_line].strip().endswith(" │ 1000 leaves"), by_line[xs_line]

    hover = results["hover"]
    assert hover is not None, command(results, "OpgraphHover")
    lines = hover["lines"]
    assert re.fullmatch(r"graph crowded · version \d+ · crowded\.py:9", lines[0]), lines[0]
    assert lines[1] == "2001 nodes made on this line", lines[:3]
    check_hover_stats(lines, stats)
    # Not a repeating line: no calls or positions to list; its parts add up to the line.
    assert [t.split(":")[0] for t in lines if t.startswith("by ")] == ["by model part"], lines
    assert sum(table_counts(lines, "by model part: ").values()) == 2001, lines
    assert lines[-1] == "<CR> on a row drills down · q closes · :OpgraphHover again enters " \
                        "this window", lines[-1]

    # Without the server's summaries: the line's last nodes, after "+N more", as before.
    listed = marks_by_line(results["snapshots"]["listed"])[line]
    assert listed.strip().startswith("+1995 more │ "), listed
    assert listed.strip().endswith(f"total = {acc:.4g} ∇ 1"), listed


def test_moons_scores_line_summary_and_drill_down(server: Server, tmp_path: Path) -> None:
    from opgraph_client import Client
    from scale_graphs import MOONS, moons_line, moons_step

    graph, loss, scores, _ = moons_step()
    with Client(server.url) as client:
        client.publish("moons", loss)
    line = moons_line("scores = [model(x)")
    here = [v for v in graph.nodes
            if v.source is not None and v.source[1] == line
            and Path(v.source[0]).resolve() == MOONS]
    period = len(here) // len(scores)
    total_line = moons_line("return data_loss + reg_loss")
    assert len(here) == 64_000 and period * len(scores) == len(here)
    results = run_nvim("moons", tmp_path / "nvim", {}, OPGRAPH_URL=server.url,
                       OPGRAPH_SCRIPT=str(MOONS), OPGRAPH_PERIOD=str(period),
                       OPGRAPH_LINES=json.dumps({"scores": line, "total": total_line}))

    # The annotation: one summary, as recomputed here, no ids and no "+N more".
    stats = plain(here)
    by_line = marks_by_line(results["snapshots"]["shown"])
    check_summary_line(by_line[line], stats)
    assert "more" not in by_line[line] and "#" not in by_line[line], by_line[line]
    # The one-node line of the file is drawn as a node, as before.
    assert by_line[total_line].strip() == f"svm_loss.mean+l2.total = {loss.data:.4g} ∇ 1"
    # What showing cost: one graph.aggregate for the version, no node record read page by page
    # (a big graph is read only as far as its lines of few nodes need: three node.get at most,
    # for them, their inputs and those inputs' inputs), no graph.analyze.
    sent = results["sent_show"]
    assert sent.get("graph.aggregate") == 1, sent
    assert "graph.nodes" not in sent and "graph.analyze" not in sent, sent
    assert sent.get("node.get", 0) <= 3, sent

    # The hover: the summary, then the drill-downs, capped with their totals.
    hover = results["hover"]
    assert hover is not None, command(results, "OpgraphHover")
    lines = hover["lines"]
    assert lines[1] == f"64000 nodes made on this line: {len(scores)} calls of {period}", lines
    check_hover_stats(lines, stats)
    assert "by model part: 3" in lines, lines
    parts = table_counts(lines, "by model part: ")
    assert list(parts) == ["layer0", "layer1", "layer2"], parts
    assert sum(parts.values()) == 64_000, parts
    assert f"by call (one per sample): {len(scores)}, the first 8" in lines, lines
    assert f"  … {len(scores) - 8} more (<CR> here lists them all)" in lines, lines
    heading = "by position in a call (the same node of every call)"
    assert f"{heading}: {period}, the first 8" in lines, lines
    assert results["entered"] is True

    # <CR> on "call 3": the nodes the fourth sample made there.
    call3 = results["call3"]["lines"]
    assert call3[0].endswith(" · moons.py:65 · call 3"), call3[0]
    assert call3[1] == f"{period} nodes", call3[:2]
    check_hover_stats(call3, plain(sorted(here, key=id_of)[3 * period:4 * period]))
    assert call3[-1] == "<BS> back · <CR> on a row drills down · q closes", call3[-1]
    # <BS>: back where it was.
    assert results["back"]["lines"] == lines
    # The calls' "… more" row lists them all.
    calls = table_counts(results["all_calls"]["lines"], "by call (one per sample): ")
    assert list(calls) == [f"call {k}" for k in range(len(scores))], calls
    assert set(calls.values()) == {period}, calls
    # Every position, then the last one: the score of every sample.
    positions = table_counts(results["every_position"]["lines"], f"{heading}: ")
    assert len(positions) == period and set(positions.values()) == {len(scores)}, positions
    last = results["last_position"]["lines"]
    assert last[0].endswith(f" · moons.py:65 · position {period - 1}"), last[0]
    assert last[1] == f"{len(scores)} nodes", last[:2]
    check_hover_stats(last, plain(list(scores)))

    # All of it: the hover and its drill-downs asked for no node and no analysis.
    sent = results["sent_all"]
    assert sent.get("node.get", 0) == results["sent_show"].get("node.get", 0), sent
    assert "graph.nodes" not in sent and "graph.analyze" not in sent, sent

    # :OpgraphRender there draws the neighbourhood of the line's last node (the last sample's
    # score), though the plugin never read that node.
    svg = tmp_path / "nvim" / "scores.svg"
    last = max(v.id for v in here)
    assert last == scores[-1].id
    drawn = one_line(command(results, f"OpgraphRender moons {svg}"), INFO)
    assert drawn == f"opgraph: graph 'moons' around #{last} (depth 2) drawn to {svg}", drawn
    assert "<svg" in svg.read_text()

    # The hover of a line of one node describes it, as for a small graph: the leaves that
    # influence it come from the server (the graph was read only in part).
    described = results["hover_total"]["lines"]
    assert re.fullmatch(r"graph moons · version \d+", described[0]), described
    assert re.fullmatch(r"svm_loss\.mean\+l2\.total #\d+ = add\(svm_loss\.mean #\d+, "
                        r"l2\.total #\d+\)", described[1]), described
    assert f"  data  {loss.data:.8g}" in described and "  grad  1" in described, described
    leaves = len({v.id for v in graph.nodes if v.op is None})
    influenced = next(t for t in described if t.startswith("  influenced by  "))
    assert influenced.endswith(f", and {leaves - 12} more"), influenced
    # Diagnostics pushed about a node not read: the version is read again, once.
    assert results["events"]["read again"] and results["read_again"] == 1, results["read_again"]


def id_of(value: Any) -> int:
    return value.id


def test_big_graph_of_one_crowded_line(server: Server, tmp_path: Path) -> None:
    from opgraph_client import Client
    from scale_graphs import accumulation

    graph = accumulation(12_000, track=True)
    with Client(server.url) as client:
        client.publish("acc", graph.nodes[-1])
    source = Path(accumulation.__code__.co_filename)
    line = line_of(source, "acc = acc + ws[i % shared] * x")
    here = [v for v in graph.nodes if v.source is not None]
    assert {v.source[1] for v in here} == {line} and len(here) > 10_000
    results = run_nvim("chain", tmp_path / "nvim", {}, OPGRAPH_URL=server.url,
                       OPGRAPH_SCRIPT=str(source), OPGRAPH_OTHER=str(ROOT / "README.md"))
    said = one_line(command(results, "OpgraphShow acc"), WARN)
    assert re.fullmatch(r"opgraph: graph 'acc' version \d+: no node was created in this file; "
                        r"its nodes come from tests/scale_graphs\.py", said), said
    by_line = marks_by_line(results["snapshots"]["chain"])
    assert list(by_line) == [line], by_line
    check_summary_line(by_line[line], plain(here))
    # No node record was read: the line's summary is all its annotation needs.
    assert "graph.nodes" not in results["sent"] and "node.get" not in results["sent"], \
        results["sent"]


def test_wire_and_helpers(server: Server, tmp_path: Path) -> None:
    server.publish(1.0)
    labels = ["line\nbreak", "nul\x00byte", "ünïcode ∇", "\n\x00\n"]
    script = tmp_path / "odd.py"
    script.write_text(
        "import sys\nfrom opgraph import Value\nfrom opgraph_client import Client\n"
        f"labels = {labels!r}\n"
        "xs = [Value(float(i), label=labels[i] if i < len(labels) else '') for i in range(6000)]\n"
        "out = sum(xs[1:], xs[0])\n"
        "with Client(sys.argv[1]) as client:\n    client.publish('odd', out)\n")
    subprocess.run([sys.executable, str(script), server.url], check=True, timeout=60)
    results = run_nvim("units", tmp_path / "nvim", {}, OPGRAPH_URL=server.url)

    # 6000 leaves and 5999 sums: more than one page of graph.nodes, many on_data chunks.
    odd = results["odd"]
    assert odd["count"] == 11999
    assert odd["labels"] == labels
    assert odd["node_get"] == labels

    # The leaves found in the fetched graph are graph.analyze's influences, for every node.
    for node, found in results["leaves"].items():
        assert found["here"] == found["server"], (node, found)
    assert any(len(f["here"]) == 10 for f in results["leaves"].values())

    ident = results["identity"]
    assert ident["instance"] == "instance:abc" and ident["number"] == "instance:12"
    assert ident["none"] == "connection:7"
    assert ident["empty"] == "connection:8" and ident["nil_value"] == "connection:9"
    # Today's server sends no instance id: the connection is the identity.
    assert ident["current"] == ident["status"]
    assert re.fullmatch(r"(instance|connection):.+", ident["current"]), ident

    assert results["error_text"] == ["unknown_graph: no graph named x",
                                     "unknown_graph: no graph", "plain words"]
    assert results["join_chunk"] is True
