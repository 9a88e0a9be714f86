"""Acknowledged means durable: clients write continuously (single requests and batches, several
graphs) while the server is killed with SIGKILL at random moments and restarted on the same
file. After each restart every acknowledged change is there, computed values equal a
recomputation from the stored ops and leaves, versions never go back, and the one request in
flight when the server died is there whole or not at all."""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from server_harness import TIMEOUT, ProcessServer, Raw

WRITERS = 3
KILLS = 4


class Writer:
    """One client writing to its own graph; it keeps what the server acknowledged."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.random = random.Random(seed)
        self.nodes: list[tuple] = []  # (op, inputs) acknowledged, in id order
        self.leaves: dict[int, float] = {}  # leaf id -> acknowledged data
        self.version = 0
        self.pending: tuple | None = ("create",)  # the request sent and not answered
        self.created = False
        self.acks = 0

    def run(self, url: str, stop: threading.Event) -> None:
        try:
            with Raw(url, timeout=TIMEOUT) as raw:
                if not self.created:
                    self.pending = ("create",)
                    error, _ = raw.call("graph.create", self.name, {"replace": True})
                    assert error is None, error
                    self.created, self.pending = True, None
                while not stop.is_set():
                    self.step(raw)
        except (AssertionError, OSError):
            pass  # the server was killed: self.pending is the request in doubt

    def step(self, raw: Raw) -> None:
        r = self.random
        choice = r.random()
        if choice < 0.4 or len(self.nodes) < 2:
            data = round(r.uniform(-2, 2), 3)
            self.pending = ("leaf", data)
            error, result = raw.call("node.leaf", self.name, data)
            assert error is None, error
            self.nodes.append((None, ()))
            self.leaves[result["id"]] = data
        elif choice < 0.8:
            n = len(self.nodes)
            a, b = r.randrange(n), r.randrange(n)
            data = round(r.uniform(-1, 1), 3)
            steps = [{"leaf": data}, {"op": "mul", "inputs": [a, "$0"]},
                     {"op": "add", "inputs": ["$1", b]}, {"op": "tanh", "inputs": ["$2"]}]
            self.pending = ("batch", data, a, b)
            error, result = raw.call("graph.batch", self.name, steps)
            assert error is None, error
            ids = result["ids"]
            self.leaves[ids[0]] = data
            self.nodes += [(None, ()), ("mul", (a, ids[0])), ("add", (ids[1], b)),
                           ("tanh", (ids[2],))]
        else:
            leaf = r.choice(sorted(self.leaves))
            data = round(r.uniform(-2, 2), 3)
            self.pending = ("set", leaf, data)
            error, result = raw.call("node.set", self.name, leaf, data)
            assert error is None, error
            self.leaves[leaf] = data
        assert result["version"] > self.version
        self.version = result["version"]
        self.pending = None
        self.acks += 1

    def check(self, raw: Raw) -> None:
        """The graph on the restarted server holds everything acknowledged, and at most the
        whole of the request in doubt, which is then taken as acknowledged."""
        if not self.created:
            error, _ = raw.call("graph.info", self.name)
            if error is not None:
                return
            self.created = True  # (the create in doubt was committed)
        page = raw.ok("graph.nodes", self.name, {"count": 100_000})
        stored = page["nodes"]
        extra = len(stored) - len(self.nodes)
        pending = self.pending
        if pending is not None and pending[0] == "leaf":
            assert extra in (0, 1)
            if extra:
                self.nodes.append((None, ()))
                self.leaves[len(self.nodes) - 1] = pending[1]
        elif pending is not None and pending[0] == "batch":
            assert extra in (0, 4), f"half a batch: {extra} of its 4 nodes"
            if extra:
                _, data, a, b = pending
                k = len(self.nodes)
                self.leaves[k] = data
                self.nodes += [(None, ()), ("mul", (a, k)), ("add", (k + 1, b)),
                               ("tanh", (k + 2,))]
        else:
            assert extra == 0, f"{extra} nodes nobody acknowledged or sent"
        if pending is not None and pending[0] == "set":
            _, leaf, data = pending
            if stored[leaf]["data"] == data:
                self.leaves[leaf] = data
        assert page["version"] >= self.version, "the version went back"
        self.version = page["version"]
        values: list[float] = []
        for i, ((op, inputs), node) in enumerate(zip(self.nodes, stored, strict=True)):
            assert (node["op"], tuple(node["inputs"])) == (op, inputs), f"node {i}"
            if op is None:
                assert node["data"] == self.leaves[i], f"leaf {i}"
                values.append(self.leaves[i])
            else:
                x = [values[j] for j in inputs]
                values.append(x[0] * x[1] if op == "mul" else x[0] + x[1] if op == "add"
                              else math.tanh(x[0]))
                assert math.isclose(node["data"], values[-1], rel_tol=1e-12, abs_tol=1e-12)
        self.pending = None


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_acknowledged_change(tmp_path: Path) -> None:
    store = tmp_path / "crash.sqlite3"
    chance = random.Random(13)
    writers = [Writer(f"g{k}", k) for k in range(WRITERS)]
    total = 0
    for round_ in range(KILLS + 1):
        server = ProcessServer("--no-demo", "--data", str(store))
        try:
            with Raw(server.url) as raw:
                for w in writers:
                    w.check(raw)
            if round_ == KILLS:
                break
            stop = threading.Event()
            threads = [threading.Thread(target=w.run, args=(server.url, stop)) for w in writers]
            before = sum(w.acks for w in writers)
            for t in threads:
                t.start()
            time.sleep(chance.uniform(0.3, 1.2))
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(TIMEOUT)
            stop.set()
            for t in threads:
                t.join(TIMEOUT)
            total += sum(w.acks for w in writers) - before
        finally:
            server.stop()
    assert total > 100  # (the test wrote something worth checking)
