"""Server benchmarks: ``python bench/server.py`` (part of ``make bench``).

In one run, on loopback TCP, each server in its own process:

1. pipelined small requests per second: opgraph's ``node.get`` against a bare asyncio+msgpack
   echo server (the ceiling of this stack), same client, same window of requests in flight;
2. ``node.get`` latency (p50/p99) on a 1,000,000-node graph while another client runs
   ``graph.analyze`` on that graph, and on a small graph while another runs ``graph.backward``
   over the big one;
3. building a 100,000-node graph in one ``graph.batch`` request.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parent.parent

ECHO_SERVER = r"""
import asyncio, sys, msgpack

async def handle(reader, writer):
    unpacker = msgpack.Unpacker(raw=False)
    packer = msgpack.Packer()
    while data := await reader.read(256 * 1024):
        unpacker.feed(data)
        out = [packer.pack([1, msg[1], None, msg[3]]) for msg in unpacker]
        writer.write(b"".join(out))
    writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


class RawClient:
    """A minimal blocking msgpack-rpc client (the same for both servers)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 30)
        self.msgid = 0

    def send(self, method: str, *params) -> None:
        self.msgid += 1
        self.sock.sendall(msgpack.packb([0, self.msgid, method, list(params)]))

    def receive(self):
        while True:
            for message in self.unpacker:
                return message
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed")
            self.unpacker.feed(data)

    def call(self, method: str, *params):
        self.send(method, *params)
        _, _, error, result = self.receive()
        if error is not None:
            raise RuntimeError(error)
        return result

    def close(self) -> None:
        self.sock.close()


def pipelined_rate(port: int, total: int, window: int) -> float:
    """Requests per second with ``window`` requests in flight."""
    client = RawClient(port)
    request = msgpack.packb([0, 0, "node.get", ["small", [0]]])
    prefix, suffix = request[:2], request[3:]  # msgid 0 is one byte: patch it per request
    start = time.perf_counter()
    sent = received = 0
    while received < total:
        batch = []
        while sent < total and sent - received < window:
            sent += 1
            batch.append(prefix + msgpack.packb(sent % 2**32) + suffix)
        if batch:
            client.sock.sendall(b"".join(batch))
        client.receive()
        received += 1
    seconds = time.perf_counter() - start
    client.close()
    return total / seconds


def start_opgraph(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "opgraph", "serve", "--listen", f"tcp://127.0.0.1:{port}",
         "--no-demo", "--request-timeout", "600", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(port)
    return proc


def build_chain(client: RawClient, graph: str, nodes: int, chunk: int = 100_000) -> float:
    """A chain x = tanh(x * w + b) of about ``nodes`` nodes, in batches; returns seconds."""
    client.call("graph.create", graph)
    w = client.call("node.leaf", graph, 0.5)["id"]
    b = client.call("node.leaf", graph, 0.1)["id"]
    x = client.call("node.leaf", graph, 0.3)["id"]
    start = time.perf_counter()
    made = 3
    while made < nodes:
        steps = []
        prev: object = x
        for _ in range(min(chunk, nodes - made) // 3):
            k = len(steps)
            steps.append({"op": "mul", "inputs": [prev, w]})
            steps.append({"op": "add", "inputs": [f"${k}", b]})
            steps.append({"op": "tanh", "inputs": [f"${k + 1}"]})
            prev = f"${k + 2}"
        if not steps:
            break
        ids = client.call("graph.batch", graph, steps)["ids"]
        x = ids[-1]
        made += len(ids)
    return time.perf_counter() - start


def sample_latency(client: RawClient, graph: str, work) -> list[float]:
    """Seconds of each ``node.get`` on ``graph`` sent while ``work`` runs in another thread."""
    latencies: list[float] = []
    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(0.2)
    while worker.is_alive():
        t = time.perf_counter()
        client.call("node.get", graph, [0])
        latencies.append(time.perf_counter() - t)
        time.sleep(0.001)
    worker.join()
    return sorted(latencies)


def describe_latency(latencies: list[float]) -> str:
    """Count, p50, p99 and max of sorted latencies, in milliseconds."""
    p50 = statistics.median(latencies) * 1e3
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3
    return (f"{len(latencies)} calls, p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
            f"max {latencies[-1] * 1e3:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big", type=int, default=1_000_000, help="nodes of the big graph")
    args = parser.parse_args()

    echo_port, port = free_port(), free_port()
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port)],
                            stdout=subprocess.PIPE)
    echo.stdout.readline()
    server = start_opgraph(port)
    try:
        setup = RawClient(port)
        setup.call("graph.create", "small")
        setup.call("node.leaf", "small", 1.0)

        # Alternate the two servers and take medians: the rates drift with the machine.
        echo_runs, our_runs = [], []
        for _ in range(args.rounds):
            echo_runs.append(pipelined_rate(echo_port, args.requests, args.window))
            our_runs.append(pipelined_rate(port, args.requests, args.window))
        echo_rate, ours = statistics.median(echo_runs), statistics.median(our_runs)
        print(f"1. pipelined small requests ({args.requests:,} a round, {args.window} in flight, "
              f"median of {args.rounds} alternating rounds)")
        print(f"   echo server (asyncio + msgpack): {echo_rate:10,.0f} requests/s")
        ratios = [o / e for o, e in zip(our_runs, echo_runs, strict=True)]
        print(f"   opgraph node.get:                {ours:10,.0f} requests/s "
              f"({ours / echo_rate:.0%} of the echo server; single rounds "
              f"{min(ratios):.0%}-{max(ratios):.0%})")

        batch_graph_steps = []
        for k in range(100_000):
            if k < 2:
                batch_graph_steps.append({"leaf": float(k + 1)})
            else:
                batch_graph_steps.append({"op": "add" if k % 2 else "mul",
                                          "inputs": [f"${k - 1}", f"${k - 2}"]})
        setup.call("graph.create", "batch")
        prepared = time.perf_counter()
        setup.call("graph.batch", "batch", batch_graph_steps)
        done = time.perf_counter()
        print("3. one graph.batch of 100,000 steps (leaves and ops, '$k' references): "
              f"{done - prepared:.2f} s round trip")

        seconds = build_chain(setup, "big", args.big)
        info = setup.call("graph.info", "big")
        print(f"   (built the {info['nodes']:,}-node graph in {seconds:.1f} s, "
              f"in batches of 100,000)")
        analysis: dict = {}

        def analyse() -> None:
            other = RawClient(port)
            t = time.perf_counter()
            report = other.call("graph.analyze", "big", {"diagnostics": False})
            analysis["seconds"] = time.perf_counter() - t
            analysis["depth"] = report["depth"]
            other.close()

        latencies = sample_latency(setup, "big", analyse)
        print(f"2. node.get on the {info['nodes']:,}-node graph while another client analyses "
              f"it ({analysis['seconds']:.1f} s, depth {analysis['depth']:,}):")
        print(f"   {describe_latency(latencies)}")

        def backward() -> None:
            other = RawClient(port)
            t = time.perf_counter()
            other.call("graph.backward", "big", info["nodes"] - 1)
            analysis["backward"] = time.perf_counter() - t
            other.close()

        latencies = sample_latency(setup, "small", backward)
        print(f"   node.get on another graph while a third client runs graph.backward over the "
              f"big one ({analysis['backward']:.1f} s, in a worker thread):")
        print(f"   {describe_latency(latencies)}")
        setup.close()
    finally:
        echo.terminate()
        server.terminate()
        echo.wait()
        server.wait()


if __name__ == "__main__":
    main()
