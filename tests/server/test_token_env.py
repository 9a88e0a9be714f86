"""The server's token: OPGRAPH_TOKEN is the way to give it; --token works but is visible in
``ps``, and ``serve`` and ``call`` warn when it is used."""

from __future__ import annotations

import os
import subprocess

from server_harness import TIMEOUT, ProcessServer, Raw, env_without_token, opgraph_command

WARNING = ("warning: --token on the command line can be read by every user of this machine "
           "(ps shows it); set OPGRAPH_TOKEN in the environment instead")


def test_serve_with_token_flag_warns() -> None:
    server = ProcessServer("--token", "s3cret", "--no-demo")
    try:
        with Raw(server.url) as raw:
            error, _ = raw.call("graph.list")
            assert error[1].startswith("unauthorized: ")
            assert raw.ok("initialize", {"token": "s3cret"})["name"] == "opgraph"
    finally:
        server.stop()
    assert WARNING in server.stderr_lines


def test_serve_reads_opgraph_token_and_does_not_warn(monkeypatch) -> None:
    monkeypatch.setenv("OPGRAPH_TOKEN", "from-env")
    original = env_without_token

    def keep_token() -> dict[str, str]:
        env = original()
        env["OPGRAPH_TOKEN"] = os.environ["OPGRAPH_TOKEN"]
        return env

    monkeypatch.setattr("server_harness.env_without_token", keep_token)
    server = ProcessServer("--no-demo")
    try:
        with Raw(server.url) as raw:
            error, _ = raw.call("initialize", {"token": "wrong"})
            assert error[1] == "unauthorized: initialize: missing or wrong token"
            assert raw.ok("initialize", {"token": "from-env"})["name"] == "opgraph"
        done = subprocess.run(opgraph_command("call", server.url, "graph.list"),
                              capture_output=True, timeout=TIMEOUT * 3, env=keep_token(),
                              text=True)
        assert done.returncode == 0 and done.stdout.strip() == "[]"
        assert "warning" not in done.stderr
        flagged = subprocess.run(opgraph_command("call", server.url, "graph.list", "--token",
                                                 "from-env"), capture_output=True,
                                 timeout=TIMEOUT * 3, env=env_without_token(), text=True)
        assert flagged.returncode == 0 and flagged.stderr.strip() == WARNING
    finally:
        server.stop()
    assert not any("warning" in line for line in server.stderr_lines)
