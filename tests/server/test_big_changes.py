"""Big changes (batches, backward passes, recomputations over big graphs) run in worker threads
with the graph's write lock held: other clients are answered meanwhile, readers of the graph
being changed wait for the whole change, and a failed change still leaves the graph intact."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import opgraph_server.dispatch as dispatch
import opgraph_server.methods.nodes as nodes
import pytest
from opgraph_client import Client, ServerError
from server_harness import SEED, SEED_GRADS, TIMEOUT, Raw, ThreadedServer, wait_until

import opgraph


@pytest.fixture
def threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every change counts as big: each runs in a worker thread."""
    monkeypatch.setattr(dispatch, "THREADED_CHANGE_NODES", 0)


def test_a_big_batch_does_not_hold_up_other_clients(server: ThreadedServer, threaded: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch is held inside its worker thread until another client has been answered on
    another graph and has asked for a node of the graph being changed; that read gets the
    state after the whole batch, never half of it."""
    entered, release = threading.Event(), threading.Event()
    real_run_steps = nodes._run_steps
    loop_thread: list[threading.Thread] = []

    def run_steps(call: Any, g: Any, steps: list[Any]) -> list[int]:
        loop_thread.append(threading.current_thread())
        entered.set()
        assert release.wait(TIMEOUT)
        return real_run_steps(call, g, steps)

    monkeypatch.setattr(nodes, "_run_steps", run_steps)
    with Client(server.tcp) as setup:
        setup.call("graph.create", "big")
        setup.call("node.leaf", "big", 1.0)
    outcome: dict[str, Any] = {}

    def batch() -> None:
        with Client(server.tcp, timeout=TIMEOUT) as a:
            outcome["batch"] = a.call("graph.batch", "big", [{"leaf": 2.0}] * 50)

    def read_big() -> None:
        with Client(server.unix, timeout=TIMEOUT) as c:
            outcome["read"] = c.call("node.get", "big", [0])

    writer = threading.Thread(target=batch)
    writer.start()
    assert entered.wait(TIMEOUT)
    with Client(server.unix, timeout=TIMEOUT) as b:
        demo = b.call("node.get", "demo", [0])  # answered while the batch waits
        assert demo["nodes"][0]["id"] == 0
        assert writer.is_alive() and "batch" not in outcome
    entry = server.server.graphs["big"]
    reader = threading.Thread(target=read_big)
    reader.start()
    wait_until(lambda: server.sync(lambda: bool(entry.lock._waiters)),
               what="the node.get waiting for the change")
    release.set()
    writer.join(TIMEOUT)
    reader.join(TIMEOUT)
    assert not writer.is_alive() and not reader.is_alive()
    assert loop_thread[0] is not server.thread
    assert outcome["batch"]["ids"] == list(range(1, 51))
    assert outcome["read"]["version"] == outcome["batch"]["version"]
    assert outcome["read"]["nodes"][0]["data"] == 1.0


def test_a_read_during_a_threaded_change_waits_for_all_of_it(
        server: ThreadedServer, threaded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """node.get asked while a worker thread is half-way through a batch answers after it."""
    half_done, release = threading.Event(), threading.Event()
    real_run_steps = nodes._run_steps

    def run_steps(call: Any, g: Any, steps: list[Any]) -> list[int]:
        made = real_run_steps(call, g, steps[:25])
        half_done.set()
        assert release.wait(TIMEOUT)
        return made + real_run_steps(call, g, steps[25:])

    monkeypatch.setattr(nodes, "_run_steps", run_steps)
    with Client(server.tcp) as setup:
        setup.call("graph.create", "big")
        before = setup.call("node.leaf", "big", 1.0)
    outcome: dict[str, Any] = {}

    def batch() -> None:
        with Client(server.tcp, timeout=TIMEOUT) as a:
            outcome["batch"] = a.call("graph.batch", "big", [{"leaf": 2.0}] * 50)

    writer = threading.Thread(target=batch)
    writer.start()
    assert half_done.wait(TIMEOUT)
    with Client(server.tcp, timeout=TIMEOUT) as other:  # answered at once, about the graph
        listed = {g["name"]: g for g in other.call("graph.list")}  # as it was before
        subscribed = other.call("graph.subscribe", "big")
    assert (listed["big"]["nodes"], listed["big"]["version"]) == (1, before["version"])
    assert subscribed["version"] == before["version"]
    with Raw(server.unix) as b:
        b.ok("initialize")
        msgid = b.request("node.get", "big", [0])
        with pytest.raises(AssertionError, match="no message"):
            b.read(timeout=0.3)  # no answer while the batch is half done
        release.set()
        error, read = b.response(msgid)
    writer.join(TIMEOUT)
    assert error is None
    assert read["version"] == outcome["batch"]["version"]  # after the whole batch
    assert read["nodes"][0]["data"] == 1.0


def test_a_failed_threaded_batch_leaves_the_graph_intact(server: ThreadedServer,
                                                         threaded: None) -> None:
    with Client(server.tcp) as c:
        c.call("graph.create", "big")
        c.call("node.leaf", "big", 1.0)
        before = c.call("graph.info", "big")
        steps: list[dict[str, Any]] = [{"leaf": float(k)} for k in range(40)]
        steps.append({"op": "log", "inputs": ["$0"]})  # log(0.0) is -inf: fine
        steps.append({"op": "log", "inputs": ["$40"]})  # log(-inf): the op fails
        with pytest.raises(ServerError) as info:
            c.call("graph.batch", "big", steps)
        assert info.value.name == "op_failed"
        assert c.call("graph.info", "big") == before
        assert c.call("graph.batch", "big", [{"leaf": 3.0}])["ids"] == [1]


def test_threaded_backward_grads_and_set_match_the_engine(server: ThreadedServer,
                                                          threaded: None) -> None:
    with Client(server.tcp) as c:
        c.call("graph.create", "neuron")
        ids = {name: c.call("node.leaf", "neuron", value, {"label": name})["id"]
               for name, value in SEED.items()}
        made = c.call("graph.eval", "neuron", "tanh(x1*w1 + x2*w2 + b)")
        root = made["root"]
        reached = c.call("graph.backward", "neuron", root)
        assert reached["reached"] == 10
        grads = c.call("graph.grads", "neuron", root, list(ids.values()))["grads"]
        for name, node_id in ids.items():
            assert grads[str(node_id)] == pytest.approx(SEED_GRADS[name], abs=1e-12)
        c.call("node.set", "neuron", ids["x2"], 1.0)
        x = {name: opgraph.Value(value) for name, value in {**SEED, "x2": 1.0}.items()}
        expected = (x["x1"] * x["w1"] + x["x2"] * x["w2"] + x["b"]).tanh()
        assert c.call("node.get", "neuron", root)["nodes"][0]["data"] == expected.data


@pytest.mark.parametrize("count", [1, 3])
def test_threaded_changes_from_many_clients_are_serialised(server: ThreadedServer,
                                                           threaded: None, count: int) -> None:
    with Client(server.tcp) as setup:
        setup.call("graph.create", "busy")
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with Client(server.tcp) as c:
                for _ in range(10):
                    results.append(c.call("graph.batch", "busy", [{"leaf": 1.0}] * 20)["ids"])
                    c.call("node.get", "busy", [0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    assert not errors and not any(t.is_alive() for t in threads)
    for ids in results:
        assert ids == list(range(ids[0], ids[0] + 20))
    assert sorted(i for ids in results for i in ids) == list(range(count * 200))


@pytest.mark.parametrize(("steps", "threaded_run"), [
    (dispatch.THREADED_CHANGE_NODES - 1, False), (dispatch.THREADED_CHANGE_NODES, True)])
def test_the_threshold_between_loop_and_thread(server: ThreadedServer,
                                               monkeypatch: pytest.MonkeyPatch, steps: int,
                                               threaded_run: bool) -> None:
    ran_in: list[threading.Thread] = []
    real_run_steps = nodes._run_steps

    def run_steps(call: Any, g: Any, steps: list[Any]) -> list[int]:
        ran_in.append(threading.current_thread())
        return real_run_steps(call, g, steps)

    monkeypatch.setattr(nodes, "_run_steps", run_steps)
    with Client(server.tcp, timeout=TIMEOUT) as c:
        c.call("graph.create", "sized")
        assert len(c.call("graph.batch", "sized", [{"leaf": 1.0}] * steps)["ids"]) == steps
    assert (ran_in[0] is not server.thread) == threaded_run
    if threaded_run:  # the server's own pool for changes, not the one analyses queue in
        assert ran_in[0].name.startswith("opgraph-change")


@pytest.mark.parametrize("work_fails", [False, True])
def test_cancelled_twice_the_change_still_holds_the_lock_to_its_end(work_fails: bool) -> None:
    """A server stopping cancels the task of a request; even a second cancellation must not
    let the write lock go while the worker thread is still changing the graph."""
    from opgraph_server.server import Server

    from opgraph.graph import Graph

    async def scenario() -> None:
        server = Server()
        entry = server.add_graph(Graph("g"))
        call = dispatch.Call(server, None, "graph.batch")  # type: ignore[arg-type]
        started, release = threading.Event(), threading.Event()

        def work() -> str:
            started.set()
            assert release.wait(TIMEOUT)
            if work_fails:
                raise ValueError("the change failed")
            return "done"

        async def hold() -> str:
            async with entry.lock.write():
                return await call.change(entry, dispatch.THREADED_CHANGE_NODES, work)

        task = asyncio.get_running_loop().create_task(hold())
        assert await asyncio.to_thread(started.wait, TIMEOUT)
        for _ in range(2):
            task.cancel()
            await asyncio.sleep(0.05)
            assert entry.lock.writing and not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()  # cancelled, whether the change itself failed or not
        assert not entry.lock.writing and entry.settled is None
        await server.close()

    asyncio.run(scenario())


def test_a_change_that_cannot_start_its_thread_leaves_no_stale_figures(
        server: ThreadedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_threads() -> Any:
        raise RuntimeError("can't start new thread")

    with Client(server.tcp, timeout=TIMEOUT) as c:
        c.call("graph.create", "g")
        c.call("node.leaf", "g", 1.0)
        monkeypatch.setattr(dispatch, "THREADED_CHANGE_NODES", 0)
        monkeypatch.setattr(server.server, "change_pool", no_threads)
        with pytest.raises(ServerError) as info:
            c.call("graph.batch", "g", [{"leaf": 2.0}])
        assert info.value.name == "internal_error"
        monkeypatch.setattr(dispatch, "THREADED_CHANGE_NODES", 10_000)
        made = c.call("node.leaf", "g", 3.0)  # a small change, on the loop
        listed = {g["name"]: g for g in c.call("graph.list")}
        assert (listed["g"]["nodes"], listed["g"]["version"]) == (2, made["version"])
