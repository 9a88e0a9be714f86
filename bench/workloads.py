"""The benchmark workloads, one engine and one workload per process (see run.py).

    python bench/workloads.py ENGINE WORKLOAD [N]

ENGINE is ``opgraph``, ``micrograd``, ``compiled`` (W2, W3 and W4: the graph built once, then
forward and backward per step) or ``torch`` (W3 only, PyTorch on tensors, one thread); prints
one JSON line with the seconds taken and the process's peak resident memory; the compiled runs
also give the time `compile_graph` took and the time networkx takes to build and sort the same
graph, in the same process.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import random
import resource
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])


def micrograd_value():
    """micrograd 0.1.0's Value, with the tanh the video adds (the PyPI release has none)."""
    from micrograd.engine import Value

    if not hasattr(Value, "tanh"):
        def tanh(self):
            x = self.data
            t = (math.exp(2 * x) - 1) / (math.exp(2 * x) + 1)
            out = Value(t, (self,), "tanh")

            def _backward():
                self.grad += (1 - t**2) * out.grad

            out._backward = _backward
            return out

        Value.tanh = tanh
    return Value


def engine(name: str):
    """(Value, MLP) of an engine."""
    if name == "micrograd":
        from micrograd.nn import MLP

        return micrograd_value(), MLP
    from opgraph import Value
    from opgraph.nn import MLP

    return Value, MLP


def w1(name: str, n: int = 20_000) -> float:
    """Seed neuron: build tanh(x1*w1 + x2*w2 + b) and backpropagate, n times."""
    Value, _ = engine(name)
    start = time.perf_counter()
    for _ in range(n):
        x1 = Value(2.0)
        x2 = Value(0.0)
        w1 = Value(-3.0)
        w2 = Value(1.0)
        b = Value(6.8813735870195432)
        o = (x1 * w1 + x2 * w2 + b).tanh()
        o.backward()
    return time.perf_counter() - start


def w2(name: str, n: int = 1000) -> float:
    """Deep chain: x = tanh(x*w + b), n times with shared w and b; backward."""
    Value, _ = engine(name)
    start = time.perf_counter()
    w, b = Value(0.5), Value(0.1)
    x = Value(0.3)
    for _ in range(n):
        x = (x * w + b).tanh()
    x.backward()
    return time.perf_counter() - start


def moons_step_parts(name: str):
    from opgraph.datasets import make_moons

    Value, MLP = engine(name)
    random.seed(1337)
    model = MLP(2, [16, 16, 1])
    X, y = make_moons(100, noise=0.1, seed=0)
    return Value, model, X, y


def w3(name: str, steps: int = 1) -> float:
    """One moons training step: MLP(2,[16,16,1]) on 100 points, loss, backward, SGD."""
    Value, model, X, y = moons_step_parts(name)
    start = time.perf_counter()
    for _ in range(steps):
        inputs = [list(map(Value, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores, strict=True)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in model.parameters())
        total = data_loss + reg_loss
        model.zero_grad()
        total.backward()
        for p in model.parameters():
            p.data -= 0.1 * p.grad
    return (time.perf_counter() - start) / steps


def w3_gc_off(name: str, steps: int = 1) -> float:
    """W3 with Python's cyclic garbage collector off during the step (as ``gc_paused`` does),
    which is where micrograd's per-node closures cost it most."""
    gc.disable()
    try:
        return w3(name, steps)
    finally:
        gc.enable()


def networkx_order(root) -> float:
    """Seconds networkx takes to build the graph under ``root`` and sort it into topological
    generations, as the compiled executor did before its rewrites: what compiling is measured
    against."""
    import networkx as nx

    from opgraph.core import topological_order

    start = time.perf_counter()
    nodes = topological_order(root)
    position = {v: i for i, v in enumerate(nodes)}
    g = nx.DiGraph()
    g.add_nodes_from(range(len(nodes)))
    g.add_edges_from((position[i], position[v]) for v in nodes for i in v.inputs)
    for _ in nx.topological_generations(g):
        pass
    return time.perf_counter() - start


def compiled_steps(root, steps: int, parameters=None) -> dict:
    """``root`` compiled (timed), then ``steps`` forward and backward passes (and an SGD step
    on ``parameters``): seconds a step; then networkx on the same graph (timed; the peak
    memory reported is the one before it)."""
    from opgraph.compiled import compile_graph

    start = time.perf_counter()
    compiled = compile_graph(root)
    compile_seconds = time.perf_counter() - start
    params = None if parameters is None else compiled.indices(parameters)
    compiled.forward()
    compiled.backward()  # warm up
    start = time.perf_counter()
    for _ in range(steps):
        compiled.forward()
        compiled.backward()
        if params is not None:
            compiled.sgd_step(0.1, params)
    seconds = (time.perf_counter() - start) / steps
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "compile_seconds": compile_seconds,
            "networkx_seconds": networkx_order(root), "peak_rss_mb": rss}


def w3_compiled(steps: int = 200) -> dict:
    """The same step with the compiled executor: compiled once, then run ``steps`` times."""
    Value, model, X, y = moons_step_parts("opgraph")
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(model, inputs))
    losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores, strict=True)]
    total = sum(losses) * (1.0 / len(losses)) + 1e-4 * sum(p * p for p in model.parameters())
    return compiled_steps(total, steps, model.parameters())


def w2_compiled(n: int = 100_000, steps: int = 3) -> dict:
    """The W2 chain built once and compiled: a forward and backward pass a step."""
    from opgraph import Value

    w, b = Value(0.5), Value(0.1)
    x = Value(0.3)
    for _ in range(n):
        x = (x * w + b).tanh()
    return compiled_steps(x, steps)


def w4_compiled(n: int = 200_000, steps: int = 20) -> dict:
    """The W4 sum built once and compiled: a forward and backward pass a step."""
    from opgraph import Value

    rng = random.Random(0)
    total = Value(0.0)
    for _ in range(n):
        total = total + Value(rng.uniform(-1, 1)) * Value(rng.uniform(-1, 1))
    return compiled_steps(total, steps)


def w3_torch(steps: int = 200) -> float:
    """The same step in PyTorch on tensors (the floor the compiled executor is measured
    against): the 100 points as one (100, 2) tensor, the same MLP as three weight matrices. One
    thread, as the compiled executor runs in one (on a loaded machine PyTorch's second thread
    makes its step 10x slower, not faster)."""
    import torch

    torch.set_num_threads(1)

    from opgraph.datasets import make_moons

    torch.manual_seed(1337)
    X, y = make_moons(100, noise=0.1, seed=0)
    X = torch.tensor(X, dtype=torch.float64)
    y = torch.tensor(y, dtype=torch.float64)
    sizes = [2, 16, 16, 1]
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        params.append((torch.rand(fan_in, fan_out, dtype=torch.float64) * 2 - 1)
                      .requires_grad_())  # weights uniform in [-1, 1], as micrograd's
        params.append(torch.zeros(fan_out, dtype=torch.float64, requires_grad=True))

    def step() -> None:
        h = X
        for k in range(0, len(params), 2):
            h = h @ params[k] + params[k + 1]
            if k < len(params) - 2:
                h = torch.relu(h)  # ReLU on hidden layers, linear output
        data_loss = torch.relu(1 - y * h[:, 0]).mean()
        reg_loss = 1e-4 * sum((p * p).sum() for p in params)
        total = data_loss + reg_loss
        for p in params:
            p.grad = None
        total.backward()
        with torch.no_grad():
            for p in params:
                p -= 0.1 * p.grad

    for _ in range(20):
        step()  # warm up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def w4(name: str, n: int = 200_000) -> float:
    """Wide sum: the sum of n products a_i * b_i, built left to right; backward."""
    Value, _ = engine(name)
    rng = random.Random(0)
    pairs = [(rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in range(n)]
    start = time.perf_counter()
    total = Value(0.0)
    for a, b in pairs:
        total = total + Value(a) * Value(b)
    total.backward()
    return time.perf_counter() - start


def main() -> None:
    engine_name, workload = sys.argv[1], sys.argv[2]
    arg = int(sys.argv[3]) if len(sys.argv) > 3 else None
    if engine_name == "micrograd" and workload == "w4":
        sys.setrecursionlimit(10**7)  # its recursive topological sort needs it for a 200k chain
    kwargs = {} if arg is None else {"n": arg}
    try:
        if engine_name == "compiled":
            result = {"w2": w2_compiled, "w3": w3_compiled, "w4": w4_compiled}[workload](
                **kwargs)
        elif engine_name == "torch":
            result = {"seconds": w3_torch()}
        else:
            result = {"seconds": {"w1": w1, "w2": w2, "w3": w3, "w3_gc_off": w3_gc_off,
                                  "w4": w4}[workload](engine_name, **kwargs)}
    except RecursionError:
        result = {"error": "RecursionError"}
    result.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
