"""The client stands alone: importing and using it loads no part of the engine, of the server's
methods, of graphviz (only the server's address, protocol and error modules)."""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
import textwrap

import pytest
from opgraph_client import client as client_module
from server_harness import TIMEOUT, ThreadedServer

# What `import opgraph_client` may load of the project (the client's own modules aside).
ALLOWED_SERVER_MODULES = {"opgraph_server", "opgraph_server.address", "opgraph_server.errors",
                          "opgraph_server.protocol"}
HEAVY = ("opgraph", "graphviz", "pluggy", "networkx", "numpy", "matplotlib", "typer", "rich")


def _forbidden(modules: set[str]) -> list[str]:
    return sorted(
        m for m in modules
        if m.split(".")[0] in HEAVY
        or (m.split(".")[0] == "opgraph_server" and m not in ALLOWED_SERVER_MODULES))


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                          text=True, timeout=60, check=True)


def test_importing_the_client_loads_no_engine_server_methods_or_graphviz() -> None:
    done = _run("import opgraph_client")
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", done.stderr, re.M))
    assert "opgraph_client.client" in imported  # (the listing is read)
    assert _forbidden(imported) == []
    assert imported & {m for m in ALLOWED_SERVER_MODULES if m != "opgraph_server"} == \
        ALLOWED_SERVER_MODULES - {"opgraph_server"}


def test_the_module_check_itself() -> None:
    assert _forbidden({"opgraph", "opgraph.core.value", "opgraph_server.methods.compute",
                       "opgraph_server.server", "graphviz", "opgraph_server.protocol",
                       "opgraph_client.remote", "asyncio"}) == [
        "graphviz", "opgraph", "opgraph.core.value", "opgraph_server.methods.compute",
        "opgraph_server.server"]


def test_using_the_client_loads_no_engine_either(server: ThreadedServer) -> None:
    """Calls, big replies decoded in a pause of the collector, errors: still nothing of opgraph
    in the client's process."""
    code = textwrap.dedent(f"""
        import json, sys
        from opgraph_client import Client, UnknownGraphError
        with Client({server.tcp!r}, timeout={TIMEOUT}) as c:
            c.call("graph.create", "wide")
            c.call("graph.batch", "wide", [{{"leaf": 1.0, "label": "x" * 64}}] * 20_000)
            page = c.call("graph.nodes", "wide", start=0, count=20_000)  # > 1 MiB
            try:
                c.call("graph.info", "nope")
            except UnknownGraphError:
                pass
        print(json.dumps({{"nodes": len(page["nodes"]), "modules": sorted(sys.modules)}}))
    """)
    out = json.loads(_run(code).stdout)
    assert out["nodes"] == 20_000
    assert _forbidden(set(out["modules"])) == []


def test_without_opgraph_the_client_pauses_the_collector_itself(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "opgraph.gcpolicy", raising=False)
    assert gc.isenabled()
    with client_module._collector_paused():
        with client_module._collector_paused():  # nested, as in two threads
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_with_opgraph_loaded_the_client_takes_opgraphs_pause() -> None:
    from opgraph import gcpolicy

    before = gcpolicy.pauses()
    with client_module._collector_paused():
        assert gcpolicy.pauses() == before + 1  # one counter for the engine, server, client
        assert not gc.isenabled()
    assert gcpolicy.pauses() == before
    assert gc.isenabled()
