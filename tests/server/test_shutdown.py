"""SIGTERM stops a real server process whatever its worker threads are doing: every request in
flight is answered (``request_cancelled``), then the process exits."""

from __future__ import annotations

import signal
import subprocess
import time

from server_harness import TIMEOUT, ProcessServer, Raw, wait_until

LEAVES = 2_000
"""Leaves of the graph whose gradcheck outlives its time limit (about 10 s of work: each leaf
is nudged twice and its thousands of dependents recomputed)."""


BATCH = 1_000_000
"""Steps of the big change in flight (seconds of work in its worker thread)."""


def wait_for_the_change(raw: Raw, graph: str) -> int:
    """The msgid of a ``node.get`` on ``graph`` left waiting for a change in progress."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        msgid = raw.request("node.get", graph, [0])
        try:
            raw.response(msgid, timeout=1.0)
        except AssertionError:  # (no answer: it waits for the change)
            return msgid
    raise AssertionError(f"no change on {graph!r} started within {TIMEOUT} s")


def build_gradcheck_work(raw: Raw, name: str, leaves: int) -> int:
    """A chain ``acc = tanh(acc + x_k)`` over ``leaves`` leaves; returns the root's id."""
    raw.ok("graph.create", name)
    steps: list[dict] = [{"leaf": 0.5} for _ in range(leaves)]
    acc = 0
    for k in range(1, leaves):
        steps.append({"op": "add", "inputs": [acc if k == 1 else f"${len(steps) - 1}", k]})
        steps.append({"op": "tanh", "inputs": [f"${len(steps) - 1}"]})
    ids = raw.ok("graph.batch", name, steps)["ids"]
    return ids[-1]


def test_sigterm_answers_requests_in_flight_and_exits_despite_busy_threads() -> None:
    server = ProcessServer("--request-timeout", "2", "--log-level", "info")
    try:
        with Raw(server.url, timeout=60) as first, Raw(server.url) as reader, \
                Raw(server.url) as writer, Raw(server.url) as changer:
            root = build_gradcheck_work(first, "big", LEAVES)
            error, _ = first.call("graph.gradcheck", "big", root)
            assert error[1].startswith("limit_exceeded: graph.gradcheck took longer than 2 s")
            # Its worker thread checks on. Requests are now put in flight: a big change in a
            # worker thread of its own (no time limit, the write lock of 'other' held), a read
            # and a leaf waiting for that lock, and another gradcheck (a worker thread).
            steps = [{"leaf": 1.0}] + [{"op": "tanh", "inputs": [f"${k}"]}
                                       for k in range(BATCH)]
            changer.ok("graph.create", "other")
            changer.ok("node.leaf", "other", 0.0)
            in_flight = [(changer, changer.request("graph.batch", "other", steps), "graph.batch")]
            # node.get waits only for a change in progress: once one is not answered at once,
            # the batch holds the write lock (before that, its big message was being decoded).
            in_flight.append((first, wait_for_the_change(first, "other"), "node.get"))
            in_flight.append(
                (reader, reader.request("graph.gradcheck", "big", root), "graph.gradcheck"))
            in_flight.append(
                (writer, writer.request("node.leaf", "other", 1.0), "node.leaf"))
            time.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            for raw, msgid, method in in_flight:
                error, result = raw.response(msgid)
                assert result is None
                assert error[1] == f"request_cancelled: {method}: the server is shutting down"
                assert raw.closed()
        server.process.wait(TIMEOUT)  # (it would hang on its worker threads without the fix)
        assert server.process.returncode == 0
        wait_until(lambda: any("worker thread" in line for line in server.stderr_lines),
                   what="the exit explained")
    finally:
        server.stop()


def test_sigterm_on_an_idle_server_is_a_clean_exit() -> None:
    server = ProcessServer()
    try:
        with Raw(server.url) as raw:
            assert raw.ok("graph.list")[0]["name"] == "demo"
            server.process.send_signal(signal.SIGTERM)
            assert raw.closed()
        assert server.process.wait(TIMEOUT) == 0
        assert not any("worker thread" in line for line in server.stderr_lines)
    finally:
        server.stop()


def test_a_second_sigterm_ends_the_process_at_once() -> None:
    server = ProcessServer("--request-timeout", "600")
    try:
        with Raw(server.url, timeout=60) as raw, Raw(server.url) as waiting:
            root = build_gradcheck_work(raw, "big", LEAVES)
            check = raw.request("graph.gradcheck", "big", root)
            time.sleep(0.3)
            waiting.request("graph.gradcheck", "big", root)
            time.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            server.process.send_signal(signal.SIGTERM)
            try:
                code = server.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError("the server did not stop") from None
            assert code in (0, -signal.SIGTERM)
            del check
    finally:
        server.stop()
