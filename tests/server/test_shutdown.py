"""SIGTERM stops a real server process whatever its worker threads are doing: every request in
flight is answered (``request_cancelled``), then the process exits."""

from __future__ import annotations

import signal
import subprocess
import time

from server_harness import TIMEOUT, ProcessServer, Raw, wait_until

CHAIN = 400_000
"""Nodes of the graph whose analysis outlives its time limit (several seconds of work)."""


def build_chain(raw: Raw, name: str, nodes: int) -> None:
    raw.ok("graph.create", name)
    raw.ok("node.leaf", name, 0.5)
    made = 1
    while made < nodes:
        count = min(100_000, nodes - made)
        first = made - 1
        steps = [{"op": "tanh", "inputs": [first if k == 0 else f"${k - 1}"]}
                 for k in range(count)]
        raw.ok("graph.batch", name, steps)
        made += count


def test_sigterm_answers_requests_in_flight_and_exits_despite_busy_threads() -> None:
    server = ProcessServer("--request-timeout", "2", "--log-level", "info")
    try:
        with Raw(server.url, timeout=60) as first, Raw(server.url) as reader, \
                Raw(server.url) as writer, Raw(server.url) as changer:
            build_chain(first, "big", CHAIN)
            error, _ = first.call("graph.analyze", "big", {"diagnostics": False})
            assert error[1].startswith("limit_exceeded: graph.analyze took longer than 2 s")
            # Its worker thread analyses on. Three requests are now put in flight: another
            # analysis (a worker thread, the graph's read lock held), a leaf waiting for that
            # lock, and a big change in a worker thread of its own (no time limit).
            steps = [{"leaf": 1.0}] + [{"op": "tanh", "inputs": [f"${k}"]}
                                       for k in range(300_000)]
            changer.ok("graph.create", "other")
            in_flight = [
                (reader, reader.request("graph.analyze", "big", {"diagnostics": False}),
                 "graph.analyze"),
                (writer, writer.request("node.leaf", "big", 1.0), "node.leaf"),
                (changer, changer.request("graph.batch", "other", steps), "graph.batch"),
            ]
            time.sleep(0.8)
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
            build_chain(raw, "big", CHAIN)
            analysis = raw.request("graph.analyze", "big", {"diagnostics": False})
            time.sleep(0.3)
            waiting.request("graph.analyze", "big", {"diagnostics": False})
            time.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            server.process.send_signal(signal.SIGTERM)
            try:
                code = server.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError("the server did not stop") from None
            assert code in (0, -signal.SIGTERM)
            del analysis
    finally:
        server.stop()
