"""The durable store (``opgraph serve --data PATH``), with real server processes and real files:
restart restores every graph, republishing does not grow the store, bad files are refused and
left as they were, the lock, the migration from schema 0, a clean stop."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import msgpack
import pytest
from opgraph_server.sqlite_store import SCHEMA_VERSION
from server_harness import (
    TIMEOUT,
    ProcessServer,
    Raw,
    env_without_token,
    opgraph_command,
    wait_until,
)


def durable(path: Path, *args: str) -> ProcessServer:
    return ProcessServer("--no-demo", "--data", str(path), *args)


def refused(path: Path, *args: str) -> str:
    """What ``opgraph serve --data path`` says as it refuses to start (it must exit non-zero)."""
    done = subprocess.run(opgraph_command("serve", "--no-demo", "--listen", "tcp://127.0.0.1:0",
                                          "--data", str(path), *args),
                          capture_output=True, timeout=30, env=env_without_token(),
                          stdin=subprocess.DEVNULL)
    assert done.returncode != 0, done.stderr.decode()
    return done.stderr.decode()


def build(raw: Raw) -> dict:
    """A small graph with labels, sources, attributes, gradients and a changed leaf."""
    raw.ok("graph.create", "g")
    a = raw.ok("node.leaf", "g", 2.0, {"label": "a", "source": ["train.py", 3]})["id"]
    b = raw.ok("node.leaf", "g", -1.5, {"label": "b"})["id"]
    ids = raw.ok("graph.batch", "g", [
        {"op": "mul", "inputs": [a, b], "label": "ab"},
        {"op": "pow_const", "inputs": ["$0"], "attrs": {"exponent": 2}, "source": ["m.py", 9]},
        {"op": "tanh", "inputs": ["$1"]},
    ])["ids"]
    raw.ok("node.set", "g", b, 0.25)
    raw.ok("graph.backward", "g", ids[-1])
    raw.ok("graph.eval", "g", "a * 3", {}, {"label": "a3"})
    return raw.ok("graph.nodes", "g")


def test_restart_restores_graphs_versions_and_next_ids(tmp_path: Path) -> None:
    store = tmp_path / "graphs.sqlite3"
    server = durable(store)
    try:
        wait_until(lambda: any(f"graphs kept in {store}" in line
                               for line in server.stderr_lines), what="where graphs are kept")
        with Raw(server.url) as raw:
            before = build(raw)
            raw.ok("graph.create", "gone")
            raw.ok("graph.drop", "gone")
            info = raw.ok("graph.info", "g")
            assert info["store"]["path"] == str(store)
            assert info["store"]["bytes"] > 0
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(TIMEOUT)
    finally:
        server.stop()
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            assert raw.ok("graph.nodes", "g") == before
            assert [g["name"] for g in raw.ok("graph.list")] == ["g"]
            made = raw.ok("node.leaf", "g", 1.0)
            assert made["id"] == before["total"]
            assert made["version"] == before["version"] + 1
    finally:
        server.stop()


def test_structure_unchanged_republish_writes_values_not_rows(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite3"
    server = durable(store)

    def document(step: int) -> dict:
        nodes = [{"id": i, "op": None, "data": float(step + i), "label": f"w{i}"}
                 for i in range(200)]
        nodes.append({"id": 200, "op": "add", "inputs": [0, 1]})
        return {"format": "opgraph-graph", "version": 1, "name": "m", "nodes": nodes}

    try:
        with Raw(server.url) as raw:
            for step in range(300):
                last = raw.ok("graph.publish", "m", document(step))
            # The database and its write-ahead log (which checkpoints bring back to the start).
            assert raw.ok("graph.info", "m")["store"]["bytes"] < 8 * 1024 * 1024
    finally:
        server.stop()
    # 300 publishes of the same structure: the rows are updated in place, not written again
    # (200 rows a publish, written 300 times, would take megabytes).
    assert store.stat().st_size < 100_000, store.stat().st_size
    with closing(sqlite3.connect(store)) as conn, conn:
        assert conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == 201
        assert conn.execute("SELECT data FROM nodes WHERE id = 200").fetchone()[0] == \
            2 * 299 + 1
        assert conn.execute("SELECT version FROM graphs").fetchone()[0] == last["version"]


def make_store(path: Path) -> None:
    server = durable(path)
    try:
        with Raw(server.url) as raw:
            build(raw)
            raw.ok("graph.create", "other")
            raw.ok("node.leaf", "other", 1.0)
    finally:
        server.stop()


def test_corrupt_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite3"
    store.write_bytes(b"this is not a database, but someone's notes" * 100)
    before = store.read_bytes()
    message = refused(store)
    assert str(store) in message and "not a readable opgraph store" in message
    assert store.read_bytes() == before


def test_truncated_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite3"
    make_store(store)
    data = store.read_bytes()
    store.write_bytes(data[:len(data) // 2 + 100])
    before = store.read_bytes()
    message = refused(store)
    assert str(store) in message and ("damaged" in message or "not a readable" in message)
    assert store.read_bytes() == before


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite3"
    make_store(store)
    with closing(sqlite3.connect(store)) as conn, conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = store.read_bytes()
    message = refused(store)
    assert f"{store} was written by a newer opgraph (store schema {SCHEMA_VERSION + 1}" in message
    assert store.read_bytes() == before


def test_rows_that_are_not_a_graph_refuse_or_quarantine(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite3"
    make_store(store)
    # node 2 of 'g' now uses node 4, which comes after it
    with closing(sqlite3.connect(store)) as conn, conn:
        conn.execute("UPDATE nodes SET inputs = ? WHERE id = 2 AND gid = "
                     "(SELECT gid FROM graphs WHERE name = 'g')", (msgpack.packb([0, 4]),))
    before = store.read_bytes()
    message = refused(store)
    assert f"{store}: graph 'g' is not a valid graph" in message
    assert "--quarantine" in message
    assert store.read_bytes() == before
    server = durable(store, "--quarantine")
    try:
        assert any("graph 'g'" in line and "quarantined" in line for line in server.stderr_lines)
        with Raw(server.url) as raw:
            assert [g["name"] for g in raw.ok("graph.list")] == ["other"]
            raw.ok("graph.create", "g")  # the name is free; the old rows are kept
    finally:
        server.stop()
    with closing(sqlite3.connect(store)) as conn, conn:
        assert conn.execute("SELECT count(*) FROM graphs WHERE quarantined = 1").fetchone() == (1,)


def test_second_server_refused_and_killed_servers_lock_recovered(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite3"
    first = durable(store)
    try:
        message = refused(store)
        assert f"{store}: another opgraph server (pid {first.process.pid})" in message
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(TIMEOUT)
    finally:
        first.stop()
    second = durable(store)  # the kernel released the dead server's lock
    second.stop()


def test_migration_from_schema_0(tmp_path: Path) -> None:
    """Schema 0 (one msgpack document per graph) becomes rows, values and versions kept."""
    store = tmp_path / "old.sqlite3"
    doc = {"format": "opgraph-graph", "version": 1, "name": "old", "nodes": [
        {"id": 0, "op": None, "inputs": [], "attrs": {}, "label": "x", "data": 3.0,
         "grad": 2.0, "source": ["a.py", 1]},
        {"id": 1, "op": "pow_const", "inputs": [0], "attrs": {"exponent": 2}, "label": "y",
         "data": 9.0, "grad": 1.0, "source": None}]}
    with closing(sqlite3.connect(store)) as conn, conn:
        conn.execute("CREATE TABLE graphs_v0(name TEXT PRIMARY KEY, version INTEGER, "
                     "document BLOB)")
        conn.execute("INSERT INTO graphs_v0 VALUES ('old', 17, ?)", (msgpack.packb(doc),))
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            page = raw.ok("graph.nodes", "old")
            assert page["version"] == 17
            assert [(n["label"], n["data"], n["grad"], n["attrs"], n["source"])
                    for n in page["nodes"]] == [("x", 3.0, 2.0, {}, ["a.py", 1]),
                                                ("y", 9.0, 1.0, {"exponent": 2}, None)]
    finally:
        server.stop()
    with closing(sqlite3.connect(store)) as conn, conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "graphs_v0" not in tables


def test_sigterm_commits_and_exits(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite3"
    server = durable(store)
    try:
        with Raw(server.url) as raw:
            raw.ok("graph.create", "g")
            msgids = [raw.request("node.leaf", "g", float(k)) for k in range(2000)]
            answered = []
            for msgid in msgids[:500]:
                error, result = raw.response(msgid)
                assert error is None
                answered.append(result["id"])
            server.process.send_signal(signal.SIGTERM)
            for msgid in msgids[500:]:
                try:
                    error, result = raw.response(msgid)
                except AssertionError:  # closed: the rest were not answered
                    break
                if error is None:
                    answered.append(result["id"])
        server.process.wait(TIMEOUT)
        assert server.process.returncode == 0
    finally:
        server.stop()
    with closing(sqlite3.connect(store)) as conn, conn:
        stored = [r[0] for r in conn.execute("SELECT id FROM nodes ORDER BY id")]
    assert stored[:len(answered)] == answered  # every answered leaf is there


def test_store_size_limit_refuses_changes_but_not_drops(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite3"
    server = durable(store, "--max-store-mb", "0.05")
    try:
        with Raw(server.url) as raw:
            raw.ok("graph.create", "g")
            steps = [{"leaf": float(k), "label": "x" * 100} for k in range(2000)]
            raw.ok("graph.batch", "g", steps)
            error, _ = raw.call("node.leaf", "g", 1.0)
            assert error[1].startswith("limit_exceeded: node.leaf: the store")
            raw.ok("graph.drop", "g")
    finally:
        server.stop()


@pytest.mark.parametrize("flag", ["--memory"])
def test_memory_server_keeps_nothing(tmp_path: Path, flag: str) -> None:
    server = ProcessServer("--no-demo", flag)
    try:
        with Raw(server.url) as raw:
            raw.ok("graph.create", "g")
            assert "store" not in raw.ok("graph.info", "g")
        assert not any("graphs kept in" in line for line in server.stderr_lines)
    finally:
        server.stop()
