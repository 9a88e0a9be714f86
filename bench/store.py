"""What durability costs: ``python bench/store.py`` (part of ``make bench``).

In one run, on loopback TCP, each server in its own process: pipelined ``node.leaf`` requests
per second (a window of requests in flight, one client, then several clients at once) against
an in-memory server (``--memory``) and a durable one (``--data`` in a temporary directory:
SQLite, WAL, synchronous=NORMAL, group commit). The bar: durable at least half the in-memory
rate. Also the store's size after a 200-node graph is republished 1,000 times.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "opgraph", "serve", "--no-demo",
                             "--listen", f"tcp://127.0.0.1:{port}", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stderr is not None
    for line in proc.stderr:
        if b"listening on" in line:
            break
    else:
        raise SystemExit("the server did not start")
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, port


def pipelined(port: int, graph: str, count: int, window: int) -> float:
    """Seconds for ``count`` node.leaf requests with ``window`` in flight."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    unpacker = msgpack.Unpacker(raw=False)
    packer = msgpack.Packer()
    sock.sendall(packer.pack([0, 0, "graph.create", [graph, {"replace": True}]]))
    while not list(unpacker):
        unpacker.feed(sock.recv(65536))
    sent = done = 0
    start_ = time.perf_counter()
    while done < count:
        batch = []
        while sent < count and sent - done < window:
            sent += 1
            batch.append(packer.pack([0, sent, "node.leaf", [graph, float(sent)]]))
        if batch:
            sock.sendall(b"".join(batch))
        unpacker.feed(sock.recv(1 << 20))
        for message in unpacker:
            assert message[2] is None, message[2]
            done += 1
    elapsed = time.perf_counter() - start_
    sock.close()
    return elapsed


def rate(port: int, clients: int, count: int, window: int) -> float:
    times: list[float] = []
    threads = [threading.Thread(target=lambda k=k: times.append(
        pipelined(port, f"bench{k}", count, window))) for k in range(clients)]
    start_ = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * count / (time.perf_counter() - start_)


def republish(port: int, times: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    unpacker = msgpack.Unpacker(raw=False)
    for step in range(times):
        nodes = [{"id": i, "op": None, "data": float(step + i)} for i in range(199)]
        nodes.append({"id": 199, "op": "add", "inputs": [0, 1]})
        doc = {"format": "opgraph-graph", "version": 1, "name": "m", "nodes": nodes}
        sock.sendall(msgpack.packb([0, step, "graph.publish", ["m", doc]]))
        while not list(unpacker):
            unpacker.feed(sock.recv(65536))
    sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50_000, help="requests per client")
    parser.add_argument("--window", type=int, default=256, help="requests in flight")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.sqlite3")
        results: dict[str, dict[int, float]] = {}
        for kind, flags in (("in memory", ("--memory",)), ("durable", ("--data", path))):
            proc, port = start(*flags)
            try:
                pipelined(port, "warmup", 2_000, args.window)
                results[kind] = {c: rate(port, c, args.count // c, args.window)
                                 for c in (1, 4)}
                if kind == "durable":
                    republish(port, 1_000)
            finally:
                proc.terminate()
                proc.wait(10)
        size = os.path.getsize(path)
    print(f"pipelined node.leaf, window {args.window}, requests per second")
    print(f"{'clients':>8} {'in memory':>12} {'durable':>12} {'durable/memory':>15}")
    for c in (1, 4):
        memory, durable = results["in memory"][c], results["durable"][c]
        print(f"{c:>8} {memory:>12,.0f} {durable:>12,.0f} {durable / memory:>15.2f}")
    print(f"store after {args.count:,} leaves per client and a 200-node graph republished "
          f"1,000 times: {size / 1024:,.0f} KiB")


if __name__ == "__main__":
    main()
