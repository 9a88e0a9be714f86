"""Publishing a training step: ``python bench/publish.py`` (part of ``make bench``).

``examples/moons.py``'s eager training step (about 66,000 nodes, each with its source line) is
built, backpropagated and published to a server in its own process, ``--steps`` times, with
``Client.publish``: whole the first time, then only its values (``graph.publish_values``), since
the structure does not change. Meanwhile another process asks the server for ``node.get`` on a
small graph every millisecond. Printed, for a durable server (``--data``, the default of
``make serve``) and an in-memory one:

- the first publish (the whole graph: the bar is 1 s);
- the values publish, end to end (from the call to its answer, committed): median and worst,
  against the eager step itself (micrograd's and opgraph's, build and backward, in this run);
  the bar is 50 ms, less than the step;
- ``node.get`` latency on the other graph meanwhile (the bar: p99 under 20 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "bench"))

from server import free_port, wait_for  # noqa: E402  (bench/server.py)

PROBE = r"""
import json, socket, sys, time, msgpack, select
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
unpacker = msgpack.Unpacker(raw=False)
def call(msgid, method, *params):
    sock.sendall(msgpack.packb([0, msgid, method, list(params)]))
    while True:
        for message in unpacker:
            return message
        unpacker.feed(sock.recv(1 << 16))
call(1, "graph.create", "small")
call(2, "node.leaf", "small", 1.0)
print("ready", flush=True)
latencies = []
msgid = 3
while not select.select([sys.stdin], [], [], 0)[0]:
    t = time.perf_counter()
    call(msgid, "node.get", "small", [0])
    latencies.append(time.perf_counter() - t)
    msgid += 1
    time.sleep(0.001)
print(json.dumps(latencies), flush=True)
"""


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def micrograd_step() -> float:
    """micrograd's moons step (build and backward), seconds: the best of three."""
    from micrograd.engine import Value as MValue
    from micrograd.nn import MLP as MMLP

    from opgraph.datasets import make_moons

    xs, ys = make_moons(100, noise=0.1, seed=42)
    model = MMLP(2, [16, 16, 1])
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        scores = [model([MValue(x), MValue(y)]) for x, y in xs]
        losses = [(1 + -yi * s).relu() for yi, s in zip(ys, scores, strict=True)]
        loss = sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in model.parameters())
        model.zero_grad()
        loss.backward()
        best = min(best, time.perf_counter() - t)
    return best


def run(server_args: list[str], steps: int) -> dict:
    import moons
    from opgraph_client import Client

    import opgraph
    from opgraph.datasets import make_moons
    from opgraph.nn import MLP, SGD

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "opgraph", "serve", "--listen",
                               f"tcp://127.0.0.1:{port}", "--no-demo", "--log-level", "warning",
                               *server_args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    probe = None
    try:
        wait_for(port)
        probe = subprocess.Popen([sys.executable, "-c", PROBE, str(port)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        assert probe.stdout is not None and probe.stdout.readline().strip() == "ready"
        xs, ys = make_moons(100, noise=0.1, seed=42)
        model = MLP(2, [16, 16, 1], seed=42)
        optimizer = SGD(model.parameters())
        step_times, publish_times = [], []
        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client, opgraph.track_source():
            for k in range(steps + 1):
                t0 = time.perf_counter()
                with opgraph.gc_paused():
                    loss, _ = moons.build_loss(model, xs, ys)
                    optimizer.zero_grad()
                    loss.backward()
                t1 = time.perf_counter()
                answer = client.publish("moons", loss)
                t2 = time.perf_counter()
                step_times.append(t1 - t0)
                publish_times.append(t2 - t1)
                optimizer.step(moons.learning_rate(k, steps + 1))
            nodes = answer["nodes"]
        probe.stdin.close()  # type: ignore[union-attr]
        latencies = json.loads(probe.stdout.readline())
        return {"nodes": nodes, "first": publish_times[0], "values": publish_times[1:],
                "step": statistics.median(step_times), "latencies": latencies}
    finally:
        if probe is not None:
            probe.kill()
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="values publishes to time")
    args = parser.parse_args()
    micrograd = micrograd_step()
    with tempfile.TemporaryDirectory() as tmp:
        for title, server_args in (("durable (--data)", ["--data", f"{tmp}/data.sqlite3"]),
                                   ("in memory (--memory)", ["--memory"])):
            r = run(server_args, args.steps)
            values = r["values"]
            median = statistics.median(values)
            lat = r["latencies"]
            print(f"moons step published, {r['nodes']:,} nodes, server {title}:")
            print(f"  first publish (whole graph): {ms(r['first'])} (bar 1 s)")
            print(f"  values publish, end to end: median {ms(median)}, worst {ms(max(values))} "
                  f"over {len(values)} steps (bar 50 ms)")
            print(f"  the eager step itself (build + backward): opgraph {ms(r['step'])}, "
                  f"micrograd {ms(micrograd)}; publish / opgraph step = "
                  f"{median / r['step']:.2f}x, publish / micrograd step = "
                  f"{median / micrograd:.2f}x")
            print(f"  node.get on another graph meanwhile: {len(lat)} calls, p50 "
                  f"{ms(statistics.median(lat))}, p99 {ms(percentile(lat, 0.99))}, max "
                  f"{ms(max(lat))} (bar p99 20 ms)")


if __name__ == "__main__":
    main()
