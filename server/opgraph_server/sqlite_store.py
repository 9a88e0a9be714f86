"""`SqliteStore`: the server's graphs in one SQLite file (the standard library's ``sqlite3``).

Schema version 2 (``PRAGMA user_version``)::

    graphs(gid INTEGER PRIMARY KEY, name TEXT, version INTEGER, nodes INTEGER,
           quarantined INTEGER)                  -- a name is unique among graphs not quarantined
    nodes(gid, id, op, inputs, attrs, label, src_file, src_line, data, grad)
           PRIMARY KEY (gid, id)                 -- inputs, attrs: msgpack; NULL data/grad: NaN
    graph_values(gid INTEGER PRIMARY KEY, count INTEGER, data BLOB, grad BLOB)
                                                 -- when present, the data and grad of nodes
                                                 -- 0 .. count-1 (little-endian doubles),
                                                 -- in place of those of their rows
    graph_columns(gid INTEGER PRIMARY KEY, count INTEGER, columns BLOB)
                                                 -- when present, nodes 0 .. count-1 (which
                                                 -- then have no rows) as one msgpack map of
                                                 -- columns (see `opgraph_server.durable`)

A graph whose values all change at once (a training step published again with the same
structure) is written as its two arrays of doubles, one row, instead of one update per node;
a big graph written whole (a publish), as its columns and its values: three blobs instead of a
row per node. Schema 1 had neither table; schema 0 kept each graph as one document.

WAL journal, ``synchronous=NORMAL``: a commit survives the server process being killed at any
moment (it is in the WAL file when `commit` returns); after a power loss or an operating-system
crash the last commits before it may be missing (never half of one: the database stays
consistent). ``auto_vacuum=INCREMENTAL``: pages freed by dropped or shrunk graphs are given back
to the file system after the commit that freed them.

Nothing here runs on the event loop: `opgraph_server.durable.Durable` calls `open` before
serving and `commit` in its one commit thread. Every problem found while opening raises
`StoreError` naming the file (and the graph); nothing is written before the file has been read
whole and found good.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgpack

SCHEMA_VERSION = 2
"""The schema this opgraph writes; it reads this one and migrates every older one."""


class StoreError(ValueError):
    """The store cannot be used as it is (the message says which file, which graph, and why)."""


@dataclass
class StoredGraph:
    """One graph as read from the store: its rows, not yet built into a `Graph`."""

    gid: int
    name: str
    version: int
    count: int
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    """``(id, op, inputs, attrs, label, src_file, src_line, data, grad)`` in id order."""
    values: tuple[int, bytes, bytes] | None = None
    """``(count, data, grad)`` from ``graph_values``: the values of the first ``count`` nodes
    as little-endian doubles (they take the place of the rows' ``data`` and ``grad``)."""
    columns: tuple[int, bytes] | None = None
    """``(count, columns)`` from ``graph_columns``: the first ``count`` nodes, as columns."""


Change = tuple[Any, ...]
"""One step of a commit, plain data (see `SqliteStore.commit`):

``("graph", gid, name, version, count)`` creates or updates a graph's row;
``("clear", gid)`` removes its node rows (a replacement of another structure follows);
``("rows", gid, rows)`` appends node rows ``(id, op, inputs, attrs, label, src_file, src_line,
data, grad)``; ``("values", gid, [(data, grad, id), ...])`` updates values of existing rows;
``("columns", gid, count, columns)`` writes nodes 0 .. count-1 as one blob of columns (in
place of rows); ``("values_blob", gid, count, data, grad)`` sets the data and grad of nodes
0 .. count-1 as two arrays of little-endian doubles (in place of the rows' own); ``("drop",
gid)`` removes the graph and its rows."""


_CREATE_V1 = """
CREATE TABLE graphs (
    gid INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    nodes INTEGER NOT NULL,
    quarantined INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX graphs_name ON graphs(name) WHERE quarantined = 0;
CREATE TABLE nodes (
    gid INTEGER NOT NULL,
    id INTEGER NOT NULL,
    op TEXT,
    inputs BLOB,
    attrs BLOB,
    label TEXT NOT NULL,
    src_file TEXT,
    src_line INTEGER,
    data REAL,
    grad REAL,
    PRIMARY KEY (gid, id)
) WITHOUT ROWID;
"""


_CREATE_V2 = """
CREATE TABLE graph_values (
    gid INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    data BLOB NOT NULL,
    grad BLOB NOT NULL
);
CREATE TABLE graph_columns (
    gid INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    columns BLOB NOT NULL
)
"""


def pack(value: Any) -> bytes:
    """msgpack bytes of a node's inputs or attributes."""
    return msgpack.packb(value, use_bin_type=True)


def unpack(blob: bytes | None, empty: Any) -> Any:
    """The value `pack` made (``empty`` for NULL)."""
    return empty if blob is None else msgpack.unpackb(blob, raw=False, strict_map_key=False)


def _create_v1(conn: sqlite3.Connection) -> None:
    """The version 1 tables, in the transaction open (``executescript`` would commit it)."""
    for statement in _CREATE_V1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _migrate_v0(conn: sqlite3.Connection) -> None:
    """Schema 0 kept each graph whole, as one msgpack document per row
    (``graphs_v0(name TEXT PRIMARY KEY, version INTEGER, document BLOB)``); version 1 keeps
    one row per node. The documents become rows; the old table goes."""
    old = conn.execute("SELECT name, version, document FROM graphs_v0 ORDER BY name").fetchall()
    _create_v1(conn)
    for gid, (name, version, blob) in enumerate(old, start=1):
        doc = unpack(blob, {})
        nodes = doc.get("nodes", [])
        conn.execute("INSERT INTO graphs(gid, name, version, nodes) VALUES (?, ?, ?, ?)",
                     (gid, name, version, len(nodes)))
        conn.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (gid, n["id"], n.get("op"), pack(n.get("inputs") or []) if n.get("op") else None,
             pack(n["attrs"]) if n.get("attrs") else None, n.get("label", ""),
             (n.get("source") or [None, None])[0], (n.get("source") or [None, None])[1],
             n.get("data"), n.get("grad", 0.0)) for n in nodes])
    conn.execute("DROP TABLE graphs_v0")


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Schema 2 adds ``graph_values`` (a graph's values as two arrays, one row) and
    ``graph_columns`` (a big graph's nodes as one blob of columns)."""
    for statement in _CREATE_V2.split(";"):
        if statement.strip():
            conn.execute(statement)


MIGRATIONS = {0: _migrate_v0, 1: _migrate_v1}
"""Schema version -> the function taking a store of that version to the next one."""


class SqliteStore:
    """The graphs of one server in the SQLite file ``path`` (locked to this process)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._bytes: dict[int, list[int]] = {}  # gid -> [bytes of its rows, of its arrays]

    # --- opening ------------------------------------------------------------------------

    def lock(self) -> None:
        """Take the store's lock file (``PATH.lock``), or raise `StoreError` naming the
        server that holds it. The kernel releases the lock when its process dies, so a
        killed server leaves no lock to clean up."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot use this store: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(f"{self.path}: another opgraph server (pid {holder}) is using this "
                             f"store; stop it or give another --data") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def open(self, quarantine: bool = False) -> tuple[list[StoredGraph], list[str]]:
        """Lock, check and read the store; returns its graphs and, with ``quarantine``, the
        messages of the graphs set aside. Raises `StoreError` when the file is damaged, newer
        than this opgraph, or (without ``quarantine``) holds a graph that is not one."""
        self.lock()
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store: {exc}") from None
        self._conn = conn
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if not fresh:
                check = conn.execute("PRAGMA quick_check").fetchall()
                if check != [("ok",)]:
                    problems = "; ".join(str(r[0]) for r in check[:5])
                    raise StoreError(f"{self.path} is damaged ({problems}); not starting. "
                                     "It is left as it is: restore a backup, or move it aside "
                                     "to start with an empty store")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a readable opgraph store ({exc}); not "
                             "starting. It is left as it is: restore a backup, or move it "
                             "aside to start with an empty store") from None
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer opgraph (store schema "
                             f"{version}; this one reads up to {SCHEMA_VERSION}); not starting. "
                             "Upgrade opgraph, or give another --data")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if fresh or (version == 0 and not tables):
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # (before the first table)
        self._pragmas()
        if version < SCHEMA_VERSION:
            self._migrate(0 if not tables else version, fresh=not tables)
        return self._read(quarantine)

    def _pragmas(self) -> None:
        conn = self._conn
        assert conn is not None
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{self.path}: SQLite refused WAL mode ({mode}); the store needs "
                             "a local file system")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA journal_size_limit = 67108864")  # the WAL shrinks back to 64 MiB

    def _migrate(self, version: int, fresh: bool) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            if fresh:
                _create_v1(conn)
                version = 1
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except Exception as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"{self.path}: migrating the store from schema {version} to "
                             f"{SCHEMA_VERSION} failed ({exc}); the file is left as it was") \
                from None

    def _read(self, quarantine: bool) -> tuple[list[StoredGraph], list[str]]:
        conn = self._conn
        assert conn is not None
        graphs = [StoredGraph(*r) for r in conn.execute(
            "SELECT gid, name, version, nodes FROM graphs WHERE quarantined = 0 ORDER BY gid")]
        by_gid = {g.gid: g for g in graphs}
        for row in conn.execute("SELECT gid, id, op, inputs, attrs, label, src_file, src_line, "
                                "data, grad FROM nodes ORDER BY gid, id"):
            g = by_gid.get(row[0])
            if g is not None:
                g.rows.append(row[1:])
        for gid, count, data, grad in conn.execute(
                "SELECT gid, count, data, grad FROM graph_values"):
            g = by_gid.get(gid)
            if g is not None:
                g.values = (count, data, grad)
        for gid, count, columns in conn.execute(
                "SELECT gid, count, columns FROM graph_columns"):
            g = by_gid.get(gid)
            if g is not None:
                g.columns = (count, columns)
        self._bytes = {g.gid: [sum(map(_row_bytes, g.rows))
                               + (0 if g.columns is None else len(g.columns[1])),
                               0 if g.values is None else 2 * len(g.values[1])]
                       for g in graphs}
        return graphs, []

    def quarantine(self, gid: int) -> None:
        """Set graph ``gid`` aside: its rows stay as they are, its name is free again."""
        assert self._conn is not None
        self._conn.execute("UPDATE graphs SET quarantined = 1 WHERE gid = ?", (gid,))

    def next_gid(self) -> int:
        """A graph id no row uses (quarantined ones included)."""
        assert self._conn is not None
        return (self._conn.execute("SELECT max(gid) FROM graphs").fetchone()[0] or 0) + 1

    # --- writing ------------------------------------------------------------------------

    def commit(self, changes: Iterable[Change]) -> None:
        """Apply ``changes`` in one transaction (all or none of them reach the file)."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN")
        sizes = {gid: list(both) for gid, both in self._bytes.items()}
        try:
            freed = False
            for change in changes:
                _count(sizes, change)
                kind = change[0]
                if kind == "rows":
                    gid = change[1]
                    conn.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                     [(gid, *r) for r in change[2]])
                elif kind == "values":
                    conn.executemany(f"UPDATE nodes SET data = ?, grad = ? WHERE gid = "
                                     f"{int(change[1])} AND id = ?", change[2])
                elif kind == "graph":
                    _, gid, name, version, count = change
                    conn.execute("INSERT INTO graphs(gid, name, version, nodes) VALUES "
                                 "(?, ?, ?, ?) ON CONFLICT(gid) DO UPDATE SET "
                                 "version = excluded.version, nodes = excluded.nodes",
                                 (gid, name, version, count))
                elif kind == "values_blob":
                    conn.execute("INSERT INTO graph_values(gid, count, data, grad) VALUES "
                                 "(?, ?, ?, ?) ON CONFLICT(gid) DO UPDATE SET count = "
                                 "excluded.count, data = excluded.data, grad = excluded.grad",
                                 change[1:])
                elif kind == "columns":
                    conn.execute("INSERT INTO graph_columns(gid, count, columns) VALUES "
                                 "(?, ?, ?)", change[1:])
                elif kind == "clear":
                    conn.execute("DELETE FROM nodes WHERE gid = ?", (change[1],))
                    conn.execute("DELETE FROM graph_values WHERE gid = ?", (change[1],))
                    conn.execute("DELETE FROM graph_columns WHERE gid = ?", (change[1],))
                    freed = True
                elif kind == "drop":
                    conn.execute("DELETE FROM nodes WHERE gid = ?", (change[1],))
                    conn.execute("DELETE FROM graph_values WHERE gid = ?", (change[1],))
                    conn.execute("DELETE FROM graph_columns WHERE gid = ?", (change[1],))
                    conn.execute("DELETE FROM graphs WHERE gid = ?", (change[1],))
                    freed = True
                else:  # pragma: no cover - a programming error
                    raise ValueError(f"unknown store change {kind!r}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._bytes = sizes
        if freed:
            conn.execute("PRAGMA incremental_vacuum")

    def size(self) -> int:
        """Bytes the store takes on disk (the database and its write-ahead log)."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def graph_bytes(self, gid: int) -> int:
        """About how many bytes graph ``gid``'s rows and arrays take in the file (their
        fields' sizes, before SQLite's own overhead), as of the last commit."""
        both = self._bytes.get(gid)
        return 0 if both is None else both[0] + both[1]

    def close(self) -> None:
        """Checkpoint the log into the database, close it, and release the lock."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _row_bytes(row: tuple[Any, ...]) -> int:
    """About the bytes a node row ``(id, op, inputs, attrs, label, src_file, src_line, data,
    grad)`` takes: its texts and blobs, and 8 a number."""
    _, op, inputs, attrs, label, file, _, _, _ = row
    return (32 + len(op or "") + len(inputs or b"") + len(attrs or b"") + len(label)
            + len(file or ""))


def _rows_bytes(rows: list[tuple[Any, ...]]) -> int:
    """``sum(map(_row_bytes, rows))``, a column at a time (in C: this runs for every commit)."""
    total = 32 * len(rows)
    for k in (1, 2, 3, 4, 5):  # op, inputs, attrs, label, src_file
        total += sum(map(len, filter(None, map(itemgetter(k), rows))))
    return total


def _count(sizes: dict[int, list[int]], change: Change) -> None:
    """Follow ``change`` in ``sizes`` (see `SqliteStore.graph_bytes`)."""
    kind, gid = change[0], change[1]
    if kind == "rows":
        sizes.setdefault(gid, [0, 0])[0] += _rows_bytes(change[2])
    elif kind == "columns":
        sizes.setdefault(gid, [0, 0])[0] += len(change[3])
    elif kind == "values_blob":
        sizes.setdefault(gid, [0, 0])[1] = len(change[3]) + len(change[4])
    elif kind == "clear":
        sizes[gid] = [0, 0]
    elif kind == "drop":
        sizes.pop(gid, None)


def number_in(value: float | None) -> float:
    """A stored double (SQLite keeps NaN as NULL)."""
    return math.nan if value is None else value
