"""Server benchmarks: ``python bench/server.py`` (part of ``make bench``).

In one run, on loopback TCP, each server in its own process:

1. pipelined small requests per second: opgraph's ``node.get`` against a bare asyncio+msgpack
   echo server (the ceiling of this stack), same client, same window of requests in flight;
2. ``node.get`` latency (p50/p99) on a 1,000,000-node graph while another client runs
   ``graph.analyze`` on that graph, and on a small graph while another runs ``graph.backward``
   over the big one;
3. building a 100,000-node graph in one ``graph.batch`` request;
4. (``--dot``) how long ``dot`` takes on whole pictures of several shapes and sizes, and which
   of them the default drawing threshold draws whole;
5. (``--every``) ``node.get`` latency (p50/p99) on a small graph while another client runs one
   request of each kind in turn, the big ones included: a render of a 2,000-node graph, an
   import of a hostile file, analyses, changes and big reads of a large graph. The bar: p99
   under 50 ms in every row;
6. ``graph.aggregate`` on the moons training step (about 66,000 nodes): the summary the first
   time (computed, in a worker thread) and again (kept for the version), and a drill-down into
   the line that made 64,000 nodes.
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


def start_opgraph(port: int, timeout: float = 600) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "opgraph", "serve", "--listen", f"tcp://127.0.0.1:{port}",
         "--no-demo", "--request-timeout", str(timeout), "--log-level", "warning"],
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


# --- dot's time on pictures of different shapes (the whole-graph drawing threshold) ---------


def random_dag(n: int, seed: int = 0):
    """A fifth leaves, then ops over uniformly random earlier nodes: wide and shallow."""
    import random

    from opgraph import Graph

    rng = random.Random(seed)
    g = Graph("dag")
    for _ in range(max(2, n // 5)):
        g.leaf(rng.uniform(-1, 1))
    while len(g.nodes) < n:
        k = len(g.nodes)
        if rng.random() < 0.3:
            g.apply("tanh", [rng.randrange(k)])
        else:
            g.apply(rng.choice(["add", "mul"]), [rng.randrange(k), rng.randrange(k)])
    return g


def local_dag(n: int, window: int, seed: int = 0):
    """Ops over nodes among the ``window`` latest, a leaf now and then: a deep, tangled DAG."""
    import random

    from opgraph import Graph

    rng = random.Random(seed)
    g = Graph("local")
    for _ in range(4):
        g.leaf(rng.uniform(-1, 1))
    while len(g.nodes) < n:
        k = len(g.nodes)
        if rng.random() < 0.2:
            g.leaf(rng.uniform(-1, 1))
        else:
            g.apply(rng.choice(["add", "mul"]), [rng.randrange(max(0, k - window), k),
                                                 rng.randrange(max(0, k - window), k)])
    return g


def skip_chain(n: int, window: int, seed: int = 0):
    """A chain whose every node also adds one of the ``window`` nodes before it."""
    import random

    from opgraph import Graph

    rng = random.Random(seed)
    g = Graph("skips")
    g.leaf(0.5)
    g.leaf(0.3)
    while len(g.nodes) < n:
        k = len(g.nodes)
        g.apply("add", [k - 1, rng.randrange(max(0, k - window), k - 1)])
    return g


def dot_times(limit: float) -> None:
    """How long ``dot`` takes on whole pictures of several shapes and sizes, with the layout
    size `opgraph.render.layout_size` estimates; which ones the default threshold draws whole
    (the rest become summaries). Killed past ``limit`` seconds."""
    from opgraph.nn import MLP
    from opgraph.render import MAX_LAYOUT, LayoutTimeout, layout, plan

    cases = []
    for n in (500, 1000, 1500, 2000):
        cases.append((f"random DAG, {n} nodes", random_dag(n)))
        cases.append((f"local DAG, {n} nodes, window 10", local_dag(n, 10)))
        cases.append((f"local DAG, {n} nodes, window 50", local_dag(n, 50)))
    for n in (100, 200, 400, 800, 1001):
        for window in (5, 20, 50):
            cases.append((f"chain, {n} nodes, skips within {window}", skip_chain(n, window)))
    for sizes in ((3, 4, 4, 1), (3, 16, 16, 1), (8, 32, 32, 1)):
        from opgraph import Graph, Value

        mlp = MLP(sizes[0], list(sizes[1:]))
        out = mlp([Value(0.5) for _ in range(sizes[0])])
        cases.append((f"MLP {sizes}", Graph.capture(out, "mlp")))
    worst_whole = 0.0
    print(f"4. dot on whole pictures (killed after {limit:g} s; the default draws whole up to "
          f"a layout size of {MAX_LAYOUT:,} and 2,000 nodes on the server):")
    for name, g in cases:
        picture = plan(g, max_nodes=10**9, max_layout=10**9, diagnostics=False)
        start = time.perf_counter()
        try:
            layout(picture, timeout=limit)
            seconds = time.perf_counter() - start
            shown = f"{seconds:6.2f} s"
        except LayoutTimeout:
            seconds = float("inf")
            shown = f"> {limit:g} s"
        whole = picture.size <= MAX_LAYOUT and len(g.nodes) <= 2000
        if whole:
            worst_whole = max(worst_whole, seconds)
        print(f"   {name:38} layout size {picture.size:7,}  dot {shown:>9}  "
              f"{'drawn whole' if whole else 'summarised'}")
    print(f"   slowest picture drawn whole by default: {worst_whole:.2f} s")


# --- 5. other clients' latency while any one request runs -----------------------------------


def squaring_document(count: int = 30) -> dict:
    """The hostile file of issue 10: an int leaf 3 squared ``count`` times (923 bytes)."""
    nodes = [{"id": 0, "op": None, "inputs": [], "attrs": {}, "label": "", "data": 3,
              "grad": 0, "source": None}]
    nodes += [{"id": k + 1, "op": "mul", "inputs": [k, k], "attrs": {}, "label": "",
               "data": 0, "grad": 0, "source": None} for k in range(count)]
    return {"format": "opgraph-graph", "version": 1, "name": "hostile", "nodes": nodes}


def _repeat(port: int, method: str, params: list, min_seconds: float, report) -> None:
    """Send ``method(*params)`` again and again for at least ``min_seconds`` (once, if it takes
    longer); ``report.send((durations, last error))``. Runs in a process of its own, so that
    decoding big answers does not hold up the sampling thread's interpreter."""
    client = RawClient(port)
    durations: list[float] = []
    error = None
    start = time.perf_counter()
    while not durations or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        client.send(method, *params)
        _, _, error, _ = client.receive()
        durations.append(time.perf_counter() - t)
    client.close()
    report.send((durations, error))


def latency_during(port: int, method: str, params: list, min_seconds: float) -> tuple:
    """``node.get`` latencies on graph ``small`` (sorted) while another client, in another
    process, sends ``method(*params)`` again and again for at least ``min_seconds``; also the
    seconds one request took (the median) and the last answer's error."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_repeat, args=(port, method, params, min_seconds, sender))
    sampler = RawClient(port)
    worker.start()
    latencies: list[float] = []
    while not receiver.poll():
        t = time.perf_counter()
        sampler.call("node.get", "small", [0])
        latencies.append(time.perf_counter() - t)
        time.sleep(0.002)
    durations, error = receiver.recv()
    worker.join()
    sampler.close()
    return sorted(latencies), statistics.median(durations), error


def every_method(big: int) -> None:
    """Scenario 5: one client's latency while another runs each kind of request in turn."""
    import msgpack as mp

    from opgraph import fileformat

    port = free_port()
    server = start_opgraph(port, timeout=60)  # the default time limit
    try:
        setup = RawClient(port)
        setup.call("graph.create", "small")
        setup.call("node.leaf", "small", 1.0)
        build_chain(setup, "big", big)
        nodes = setup.call("graph.info", "big")["nodes"]
        root = nodes - 1  # (the end of the chain)
        setup.call("node.leaf", "big", 2.0, {"label": "x"})  # found by label in an eval
        setup.call("graph.import", "dag", fileformat.to_document(random_dag(2000)))
        setup.call("graph.import", "skips", fileformat.to_document(skip_chain(2000, 50)))
        setup.call("graph.create", "scratch")
        hostile = mp.packb(squaring_document())
        squaring = [{"leaf": 3}] + [{"op": "mul", "inputs": [f"${k}", f"${k}"]}
                                    for k in range(30)]
        exported = setup.call("graph.export", "big", {"format": "msgpack"})
        document = setup.call("graph.export", "big")
        terms = [f"tanh(x * {k % 97 + 1})" for k in range(512)]
        while len(terms) > 1:  # a balanced sum: nested 9 deep, about 10,000 characters
            terms = [f"({a} + {b})" for a, b in zip(terms[::2], terms[1::2], strict=True)]
        long_expression = terms[0]
        steps = [{"leaf": 0.5}] + [{"op": "tanh", "inputs": [f"${k}"]} for k in range(99_999)]
        cases = [
            ("graph.render of a 2,000-node random DAG (svg, whole)", "graph.render",
             ["dag", {"format": "svg"}]),
            ("graph.render of a 2,000-node chain with skip edges", "graph.render",
             ["skips", {"format": "svg"}]),
            (f"graph.render of the {nodes:,}-node graph (summary)", "graph.render",
             ["big", {"format": "svg"}]),
            ("graph.import of a hostile 923-byte file", "graph.import",
             ["hostile", hostile, {"replace": True}]),
            ("graph.batch squaring an int leaf 30 times (730 bytes)", "graph.batch",
             ["scratch", squaring]),
            ("graph.import of the hostile file as a document (map)", "graph.import",
             ["hostile", squaring_document(), {"replace": True}]),
            (f"graph.import of the {nodes:,}-node graph ({len(exported) / 2**20:.0f} MiB)",
             "graph.import", ["copy", exported, {"replace": True}]),
            (f"graph.publish of the {nodes:,}-node graph as a document (map)",
             "graph.publish", ["copy", document]),
            (f"graph.export of the {nodes:,}-node graph (msgpack)", "graph.export",
             ["big", {"format": "msgpack"}]),
            (f"graph.analyze of the {nodes:,}-node graph", "graph.analyze",
             ["big", {"diagnostics": False}]),
            (f"graph.diagnostics of the {nodes:,}-node graph", "graph.diagnostics", ["big"]),
            (f"graph.backward over the {nodes:,}-node graph", "graph.backward",
             ["big", root]),
            (f"graph.gradcheck over the {nodes:,}-node graph", "graph.gradcheck",
             ["big", root]),
            (f"node.set of a leaf of the {nodes:,}-node graph", "node.set", ["big", 0, 0.25]),
            ("graph.nodes: 100,000 records", "graph.nodes", ["big", {"count": 100_000}]),
            ("node.get: 100,000 ids", "node.get", ["big", list(range(100_000))]),
            ("graph.batch of 100,000 steps", "graph.batch", ["scratch", steps]),
            (f"graph.eval of a {len(long_expression):,}-character expression", "graph.eval",
             ["scratch", long_expression, {"x": 0.5}]),
            (f"graph.eval naming a label of the {nodes:,}-node graph (keep false)",
             "graph.eval", ["big", "x * 2", None, {"keep": False}]),
        ]
        print("5. node.get on a small graph while another client runs one request after "
              "another (at least 2 s of each kind):")
        worst = 0.0
        for name, method, params in cases:
            latencies, seconds, error = latency_during(port, method, params, 2.0)
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            worst = max(worst, p99)
            outcome = "" if error is None else f" -> {str(error)[:60]}"
            print(f"   {name:56} ({seconds:6.2f} s each{outcome})")
            print(f"      {describe_latency(latencies)}")
        print(f"   worst p99: {worst * 1e3:.1f} ms (the bar: 50 ms)")
        setup.close()
    finally:
        server.terminate()
        server.wait()


def aggregate_times(client: RawClient) -> None:
    """Scenario 6: graph.aggregate on the moons step, computed and then kept."""
    sys.path.insert(0, str(ROOT / "tests"))
    from scale_graphs import MOONS, moons_line, moons_step

    from opgraph import fileformat

    graph = moons_step()[0]
    client.call("graph.import", "moons", fileformat.to_document(graph))
    line = [str(MOONS), moons_line("scores = [model(x) for x in inputs]")]
    rows = []
    for what, options in (("summary, first", {}), ("summary, again", {}),
                          ("the 64,000-node line by position, first",
                           {"line": line, "by": "position", "limit": 20}),
                          ("the same, again", {"line": line, "by": "position", "limit": 20})):
        t = time.perf_counter()
        client.call("graph.aggregate", "moons", options)
        rows.append(f"{what} {1e3 * (time.perf_counter() - t):.1f} ms")
    print(f"6. graph.aggregate of the {len(graph.nodes):,}-node moons step: " + "; ".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big", type=int, default=1_000_000, help="nodes of the big graph")
    parser.add_argument("--dot", action="store_true",
                        help="only time dot on pictures of several shapes (scenario 4)")
    parser.add_argument("--dot-limit", type=float, default=60.0,
                        help="seconds after which dot is killed in scenario 4")
    parser.add_argument("--every", action="store_true",
                        help="only other clients' latency during each kind of request "
                        "(scenario 5)")
    args = parser.parse_args()
    if args.dot:
        dot_times(args.dot_limit)
        return
    if args.every:
        every_method(args.big)
        return

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
        aggregate_times(setup)
        setup.close()
    finally:
        echo.terminate()
        server.terminate()
        echo.wait()
        server.wait()


if __name__ == "__main__":
    main()
