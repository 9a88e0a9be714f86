"""graph.render lays out without the graph's lock, kills ``dot`` when its time is up or its
client is gone, and says what it drew; the work of a client that is gone is cancelled."""

from __future__ import annotations

import os
import random
import re
import threading
from pathlib import Path

from server_harness import TIMEOUT, Raw, ThreadedServer, wait_until

from opgraph import Graph


def skip_chain(length: int, window: int = 50, seed: int = 0, name: str = "skips") -> Graph:
    """Each node adds the one before it and one of the ``window`` before that: edges that span
    many ranks, which take ``dot`` long."""
    rng = random.Random(seed)
    g = Graph(name)
    g.leaf(0.5)
    g.leaf(0.3)
    while len(g) < length:
        k = len(g)
        g.apply("add", [k - 1, rng.randrange(max(0, k - window), k - 1)])
    return g


def dot_children() -> list[int]:
    """Pids of this process's ``dot`` children (the in-process server's pictures)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if name == "dot" and int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def slow_server(make_server, **limits) -> ThreadedServer:
    """A server that draws even what ``dot`` takes seconds over, with graph ``skips``."""
    server = make_server(max_render_layout=10**9, **limits)
    server.sync(server.server.add_graph, skip_chain(800))
    return server


def test_render_says_what_it_drew(server: ThreadedServer) -> None:
    server.sync(server.server.add_graph, skip_chain(400))
    with Raw(server.tcp) as raw:
        whole = raw.ok("graph.render", "demo", {"format": "dot"})
        assert (whole["drawn"], whole["nodes"], whole["total"], whole["reason"]) == (
            "graph", 10, 10, None)
        around = raw.ok("graph.render", "demo", {"format": "dot", "around": 9, "depth": 1})
        assert (around["drawn"], around["nodes"]) == ("neighbourhood", 2)
        summary = raw.ok("graph.render", "skips", {"format": "svg"})
        assert (summary["drawn"], summary["nodes"], summary["total"]) == ("summary", 0, 400)
        assert "edges span too many ranks to lay out quickly" in summary["reason"]
        assert "summarised" in summary["data"]
        small = raw.ok("graph.render", "skips", {"format": "dot", "max_nodes": 100})
        assert small["reason"] == "400 nodes, more than the 100 drawn whole"


def test_a_neighbourhood_too_big_to_draw_is_invalid_params(make_server) -> None:
    server = make_server(max_render_nodes=5)
    with Raw(server.tcp) as raw:
        error, _ = raw.call("graph.render", "demo", {"around": 9, "depth": 3})
        assert error == [1, "invalid_params: graph.render: the neighbourhood of node 9 to "
                            "depth 3 has 6 nodes, over the drawing limit of 5: use a smaller "
                            "depth"]


def test_render_lays_out_without_the_lock_and_dies_with_its_client(make_server) -> None:
    server = slow_server(make_server)
    with Raw(server.tcp) as painter, Raw(server.unix) as writer:
        painter.request("graph.render", "skips", {"format": "svg"})
        wait_until(lambda: len(dot_children()) == 1, what="dot started")
        # dot runs; the graph is not locked meanwhile: a writer and a reader are answered
        assert writer.ok("node.leaf", "skips", 1.0)["id"] == 800
        assert writer.ok("node.get", "skips", 0)["nodes"][0]["data"] == 0.5
        assert len(dot_children()) == 1  # (still laying out)
        painter.close()  # the client is gone: its dot is killed
        wait_until(lambda: not dot_children(), what="dot killed")
        assert writer.ok("graph.info", "skips")["nodes"] == 801


def test_dot_is_stopped_at_the_time_limit_and_a_summary_drawn(make_server) -> None:
    server = slow_server(make_server, request_timeout=3.0)
    with Raw(server.tcp) as raw:
        result = raw.ok("graph.render", "skips", {"format": "svg"})
        assert result["drawn"] == "summary"
        assert re.match(r"800 nodes, which dot did not lay out within [\d.]+ s",
                        result["reason"])
        assert "summarised" in result["data"]
    assert not dot_children()


def test_a_render_over_the_time_limit_is_limit_exceeded(make_server) -> None:
    server = slow_server(make_server, request_timeout=1.0)
    with Raw(server.tcp) as raw:  # a neighbourhood has no summary to fall back on
        error, _ = raw.call("graph.render", "skips", {"around": 400, "depth": 50,
                                                      "format": "svg"})
        assert error[1] == "limit_exceeded: graph.render took longer than 1 s (dot was stopped)"
        assert raw.ok("graph.info", "skips")["nodes"] == 800
    assert not dot_children()


def test_work_of_a_client_that_is_gone_is_cancelled(server: ThreadedServer) -> None:
    """A request waiting for a graph (behind a big change) is dropped when its client leaves:
    it does not run once the graph is free."""
    steps = [{"leaf": 0.5}] + [{"op": "tanh", "inputs": [f"${k}"]} for k in range(300_000)]
    with Raw(server.tcp) as builder, Raw(server.tcp) as quitter:
        builder.ok("graph.create", "busy")
        msgid = builder.request("graph.batch", "busy", steps)
        wait_until(lambda: server.sync(lambda: server.server.graphs["busy"].lock.writing),
                   what="the batch running")
        quitter.request("node.leaf", "busy", 1.0)  # waits for the batch
        wait_until(lambda: server.sync(lambda: any(
            s.in_flight is not None and s.in_flight.method == "node.leaf"
            for s in server.server.sessions)), what="the leaf waiting")
        quitter.close()
        error, _ = builder.response(msgid, TIMEOUT * 3)
        assert error is None
        assert builder.ok("graph.info", "busy")["nodes"] == len(steps)  # no leaf after it


def test_a_client_that_stays_gets_its_answer_after_another_leaves(server: ThreadedServer) -> None:
    with Raw(server.tcp) as raw:
        done = threading.Event()

        def leave() -> None:
            with Raw(server.tcp) as other:
                other.request("graph.analyze", "demo")
            done.set()

        worker = threading.Thread(target=leave)
        worker.start()
        worker.join(TIMEOUT)
        assert done.is_set()
        assert raw.ok("graph.analyze", "demo")["nodes"] == 10
