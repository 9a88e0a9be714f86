"""``graph.publish_values``: a graph republished as two arrays of doubles while its structure is
the one ``graph.publish`` gave a token for. Over real sockets; the durable cases with real
server processes and real SQLite files."""

from __future__ import annotations

import signal
import sqlite3
import struct
from contextlib import closing
from pathlib import Path

import pytest
from opgraph_server.sqlite_store import SCHEMA_VERSION
from server_harness import TIMEOUT, ProcessServer, Raw


def document(n: int = 5, label: str = "w") -> dict:
    """Leaves w0..w{n-1} and their running sum."""
    nodes = [{"id": i, "op": None, "data": float(i), "label": f"{label}{i}"} for i in range(n)]
    at = n
    nodes.append({"id": at, "op": "add", "inputs": [0, 1]})
    for i in range(2, n):
        nodes.append({"id": at + 1, "op": "add", "inputs": [at, i]})
        at += 1
    return {"format": "opgraph-graph", "version": 1, "name": "m", "nodes": nodes}


def doubles(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


def error_of(raw: Raw, method: str, *params: object) -> list:
    """The error ``[kind, "name: message"]`` the server answers."""
    error, _ = raw.call(method, *params)
    assert error is not None, f"{method} succeeded"
    return error


def values_of(raw: Raw, graph: str = "m") -> tuple[list[float], list[float]]:
    nodes = raw.ok("graph.nodes", graph)["nodes"]
    return [n["data"] for n in nodes], [n["grad"] for n in nodes]


def test_values_replace_every_value_as_one_version(server) -> None:
    with Raw(server.tcp) as raw, Raw(server.tcp) as watcher:
        first = raw.ok("graph.publish", "m", document())
        token = first["structure"]
        assert isinstance(token, str) and token
        watcher.ok("graph.subscribe", "m")
        n = first["nodes"]
        data = [0.5 * i - 1 for i in range(n)]
        grad = [float("nan") if i == 3 else -i for i in range(n)]
        done = raw.ok("graph.publish_values", "m", token, doubles(data), doubles(grad))
        assert done == {**first, "version": first["version"] + 1, "subscribers": 1}
        got_data, got_grad = values_of(raw)
        assert got_data == data  # as sent: nothing recomputed
        assert got_grad[:3] == grad[:3] and got_grad[3] != got_grad[3]
        while (message := watcher.read())[0] != 2 or message[1] != "graph.changed":
            pass
        assert message[2][0]["version"] == done["version"]


def test_a_stale_token_is_content_modified_and_changes_nothing(server) -> None:
    with Raw(server.tcp) as raw:
        token = raw.ok("graph.publish", "m", document())["structure"]
        n = raw.ok("graph.info", "m")["nodes"]
        values = doubles([1.0] * n)
        second = raw.ok("graph.publish", "m", document())["structure"]
        assert second != token
        before = raw.ok("graph.nodes", "m")
        error = error_of(raw, "graph.publish_values", "m", token, values, values)
        assert "content_modified: graph 'm' was published again since structure" in error[1]
        raw.ok("node.leaf", "m", 1.0)  # the graph grows: the new token no longer fits
        error = error_of(raw, "graph.publish_values", "m", second, values, values)
        assert f"has {n + 1} nodes, not the {n} it was published with" in error[1]
        raw.ok("graph.import", "m", document(), {"replace": True})
        error = error_of(raw, "graph.publish_values", "m", second, values, values)
        assert "was replaced since it was published" in error[1]
        raw.ok("graph.create", "fresh")
        error = error_of(raw, "graph.publish_values", "fresh", "abc", b"", b"")
        assert "has not been sent by graph.publish since the server started" in error[1]
        assert raw.ok("graph.nodes", "m")["nodes"][:n] == before["nodes"]


@pytest.mark.parametrize(("data", "grad", "says"), [
    ([1.0], b"", "data must be bytes (little-endian doubles, 8 per node), got list"),
    (b"\0" * 8, None, "grad must be bytes"),
    (b"\0" * 7, b"\0" * 72, "data holds 7 bytes; the graph's 9 nodes take 72 (8 per node)"),
    (b"\0" * 72, b"\0" * 80, "grad holds 80 bytes"),
])
def test_bad_arrays_are_invalid_params(server, data, grad, says) -> None:
    with Raw(server.tcp) as raw:
        token = raw.ok("graph.publish", "m", document())["structure"]
        before = raw.ok("graph.nodes", "m")
        error = error_of(raw, "graph.publish_values", "m", token, data, grad)
        assert error[1].startswith("invalid_params: ") and says in error[1], error
        assert error_of(raw, "graph.publish_values", "m", 7, data, grad)[1].startswith(
            "invalid_params: graph.publish_values: structure must be a string")
        assert raw.ok("graph.nodes", "m") == before


def durable(path: Path) -> ProcessServer:
    return ProcessServer("--no-demo", "--data", str(path))


def test_published_values_survive_a_kill_and_are_written_as_arrays(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite3"
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            first = raw.ok("graph.publish", "m", document(200))
            n, token = first["nodes"], first["structure"]
            for step in range(50):
                data = [float(step * 1000 + i) for i in range(n)]
                last = raw.ok("graph.publish_values", "m", token, doubles(data),
                              doubles([-d for d in data]))
            raw.ok("graph.eval", "m", "w0 * 2", {}, {"label": "later"})  # a row after them
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(TIMEOUT)
    finally:
        server.stop()
    with closing(sqlite3.connect(store)) as conn:
        assert conn.execute("SELECT count(*) FROM graph_values").fetchone()[0] == 1
        count, blob = conn.execute("SELECT count, data FROM graph_values").fetchone()
        assert count == n and len(blob) == 8 * n
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            page = raw.ok("graph.nodes", "m")
            assert page["version"] > last["version"]  # (the eval after)
            leaves = [x["data"] for x in page["nodes"][:200]]
            assert leaves == [49_000.0 + i for i in range(200)]
            assert [x["grad"] for x in page["nodes"][:n]] == [-(49_000.0 + i) for i in range(n)]
            # computed data are recomputed from the leaves as the store is read: here they are
            # what the client sent, since its numbers are consistent
            assert page["nodes"][n - 1]["data"] == sum(leaves)
            later = [x for x in page["nodes"] if x["label"] == "later"]
            assert [x["data"] for x in later] == [2 * 49_000.0]
            # a restarted server holds no token: the client publishes whole once
            error = error_of(raw, "graph.publish_values", "m", token, b"", b"")
            assert error[1].startswith("content_modified: ")
    finally:
        server.stop()


def test_migration_from_schema_1(tmp_path: Path) -> None:
    """A store of schema 1 (no graph_values) is read as it was and given the new table."""
    store = tmp_path / "v1.sqlite3"
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            raw.ok("graph.publish", "m", document())
            before = raw.ok("graph.nodes", "m")
    finally:
        server.stop()
    with closing(sqlite3.connect(store)) as conn, conn:  # back to what schema 1 was
        conn.execute("DROP TABLE graph_values")
        conn.execute("DROP TABLE graph_columns")
        conn.execute("PRAGMA user_version = 1")
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            assert raw.ok("graph.nodes", "m") == before
    finally:
        server.stop()
    with closing(sqlite3.connect(store)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (2,)
        assert conn.execute("SELECT count(*) FROM graph_values").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM graph_columns").fetchone() == (0,)


def test_values_that_do_not_fit_the_rows_refuse_to_start(tmp_path: Path) -> None:
    from test_durable import refused

    store = tmp_path / "bad.sqlite3"
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            token = raw.ok("graph.publish", "m", document())["structure"]
            raw.ok("graph.publish_values", "m", token, doubles([1.0] * 9), doubles([0.0] * 9))
    finally:
        server.stop()
    with closing(sqlite3.connect(store)) as conn, conn:
        conn.execute("UPDATE graph_values SET data = x'00'")
    said = refused(store)
    assert f"{store}: graph 'm': its stored values do not fit its 9 nodes" in said


def test_big_graphs_rows_made_off_the_loop_are_what_restart_reads(tmp_path: Path) -> None:
    """Graphs of more than `durable.TINY` nodes go to the commit thread as nodes and values
    taken when each change was made: a new graph, a republish of the same structure (written
    as arrays), one of another structure with as many nodes (rows again), a big batch; killed,
    then restarted, every value is the last one answered."""
    from opgraph_server.durable import TINY

    n = TINY + 500
    store = tmp_path / "big.sqlite3"
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            raw.ok("graph.publish", "m", document(n))
            raw.ok("node.set", "m", 0, 100.0)  # right after: must not leak into the rows
            again = document(n)
            for node in again["nodes"][:n]:
                node["data"] += 0.5
            raw.ok("graph.publish", "m", again)  # same structure: arrays
            other = document(n, label="v")  # as many nodes, other labels: rows again
            other["nodes"][3]["data"] = -7.0
            raw.ok("graph.publish", "other", document(n))
            raw.ok("graph.publish", "other", other)
            steps = [{"op": "mul", "inputs": [0, 1]}] + [
                {"op": "add", "inputs": [f"${k}", 2]} for k in range(TINY + 10)]
            raw.ok("graph.batch", "m", steps)
            raw.ok("node.set", "m", 1, 3.0)
            expected = {g: raw.ok("graph.nodes", g, {"count": 10 * n}) for g in ("m", "other")}
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(TIMEOUT)
    finally:
        server.stop()
    with closing(sqlite3.connect(store)) as conn:
        # each graph's first n nodes as columns, not rows; the batch's nodes as rows
        assert conn.execute("SELECT count FROM graph_columns ORDER BY gid").fetchall() == \
            [(2 * n - 1,), (2 * n - 1,)]
        assert conn.execute("SELECT count(*) FROM nodes").fetchone() == (TINY + 11,)
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            for g, page in expected.items():
                assert raw.ok("graph.nodes", g, {"count": 10 * n}) == page, g
    finally:
        server.stop()


def test_columns_that_cannot_be_read_refuse_to_start(tmp_path: Path) -> None:
    from opgraph_server.durable import TINY
    from test_durable import refused

    store = tmp_path / "cols.sqlite3"
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            raw.ok("graph.publish", "big", document(TINY + 1))
    finally:
        server.stop()
    with closing(sqlite3.connect(store)) as conn, conn:
        conn.execute("UPDATE graph_columns SET columns = x'81a26f70c0'")  # {"op": nil}
    said = refused(store)
    assert f"{store}: graph 'big': its nodes' columns cannot be read" in said


def test_graph_info_gives_each_graphs_bytes_and_republishing_does_not_grow_them(
        tmp_path: Path) -> None:
    store = tmp_path / "sizes.sqlite3"
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            first = raw.ok("graph.publish", "m", document(100))
            raw.ok("graph.publish", "small", document(5))
            size = raw.ok("graph.info", "m")["store"]["graph_bytes"]
            small = raw.ok("graph.info", "small")["store"]["graph_bytes"]
            assert 0 < small < size
            token, n = first["structure"], first["nodes"]
            for step in range(20):
                values = doubles([float(step)] * n)
                raw.ok("graph.publish_values", "m", token, values, values)
            for _ in range(20):
                raw.ok("graph.publish", "m", document(100))
            after = raw.ok("graph.info", "m")["store"]
            # the rows once, and the values as two arrays: 16 bytes a node
            assert after["graph_bytes"] == size + 16 * n
            assert after["graph_bytes"] < after["bytes"]
            raw.ok("node.leaf", "m", 1.0)
            assert raw.ok("graph.info", "m")["store"]["graph_bytes"] > after["graph_bytes"]
            grown = raw.ok("graph.info", "m")["store"]["graph_bytes"]
    finally:
        server.stop()
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            assert raw.ok("graph.info", "m")["store"]["graph_bytes"] == grown
            assert raw.ok("graph.info", "small")["store"]["graph_bytes"] == small
    finally:
        server.stop()
