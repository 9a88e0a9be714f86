"""``opgraph serve`` and ``opgraph call``: run the server, or call it from the shell."""

from __future__ import annotations

import json

import typer

from opgraph.cli.common import fail, friendly_errors, print_json, warn

DEFAULT_URL = "tcp://127.0.0.1:7450"


TOKEN_WARNING = ("--token on the command line can be read by every user of this machine "
                 "(ps shows it); set OPGRAPH_TOKEN in the environment instead")


def _warn_if_token_flag(ctx: typer.Context) -> None:
    """Warn when the token came from the command line rather than OPGRAPH_TOKEN."""
    source = ctx.get_parameter_source("token")  # (an enum of the click typer brings)
    if source is not None and source.name == "COMMANDLINE":
        warn(TOKEN_WARNING)


def serve(
    ctx: typer.Context,
    listen: list[str] = typer.Option(
        [], "--listen", "-l", help="Address to listen on, repeatable: tcp://HOST:PORT, "
        "unix:///PATH, or http://HOST:PORT (the web viewer). "
        f"Default: {DEFAULT_URL}."),
    stdio: bool = typer.Option(False, help="Serve one client on stdin/stdout (for editors)."),
    token: str = typer.Option(
        None, envvar="OPGRAPH_TOKEN", show_envvar=True,
        help="Require this token in initialize. Prefer setting OPGRAPH_TOKEN: a --token "
        "given here is visible to every user in ps."),
    demo: bool = typer.Option(True, help="Load the seed's neuron as graph 'demo'."),
    max_message_mb: float = typer.Option(64, min=0.001, help="Largest message, in MiB."),
    max_nodes: int = typer.Option(2_000_000, min=1, help="Nodes per graph."),
    max_graphs: int = typer.Option(1_000, min=1, help="Graphs on the server."),
    max_connections: int = typer.Option(256, min=1, help="Clients at once."),
    request_timeout: float = typer.Option(
        60.0, min=0.001, help="Seconds a request's analysis, picture or check may take."),
    max_queued_mb: float = typer.Option(32, min=0.001,
                                        help="Unread output (MiB) before a client is dropped."),
    log_level: str = typer.Option("info", help="debug, info, warning or error (to stderr)."),
    data: str = typer.Option(
        None, "--data", help="The SQLite file the graphs are kept in (made if missing; "
        "PATH.lock, PATH-wal and PATH-shm go beside it). Every change is committed there "
        "before it is answered. Without --data (or with --memory), graphs live in memory "
        "only."),
    memory: bool = typer.Option(False, "--memory",
                                help="Keep graphs in memory only (lost when the server stops)."),
    quarantine: bool = typer.Option(
        False, help="Start even if the store holds graphs that are not valid graphs: set "
        "them aside (their rows kept) and say so, rather than refuse to start."),
    max_store_mb: float = typer.Option(
        None, min=0.001, help="Refuse changes once the store takes this many MiB on disk."),
) -> None:
    """Run the graph server (MessagePack-RPC), with the seed's neuron as graph 'demo'."""
    import asyncio
    import logging
    import sys

    from opgraph_server.address import parse_url
    from opgraph_server.limits import Limits, MiB
    from opgraph_server.server import serve as run

    _warn_if_token_flag(ctx)
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if memory and data:
        raise typer.BadParameter("--memory keeps graphs in memory only; do not also give "
                                 "--data", param_hint="--memory")
    if stdio and listen:
        raise typer.BadParameter("--stdio serves stdin/stdout; do not also give --listen")
    urls = listen or [DEFAULT_URL]
    for url in urls:
        try:
            parse_url(url, listen=True)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--listen") from None
    _load_plugins()
    limits = Limits(
        max_message_bytes=int(max_message_mb * MiB), max_nodes=max_nodes,
        max_graphs=max_graphs, max_connections=max_connections,
        request_timeout=request_timeout, max_queued_output=int(max_queued_mb * MiB),
    )

    def ready(addresses: list[str]) -> None:
        where = ", ".join(addresses)
        graphs = " with graph 'demo'" if demo else ""
        if data:
            typer.echo(f"graphs kept in {data}", err=True)
        typer.echo(f"opgraph server listening on {where}{graphs} (Ctrl-C stops it)", err=True)

    max_store = None if max_store_mb is None else int(max_store_mb * MiB)
    try:
        asyncio.run(run(urls, stdio=stdio, limits=limits, token=token, demo=demo, ready=ready,
                        data=data, quarantine=quarantine, max_store_bytes=max_store))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise fail(f"cannot listen on {', '.join(urls)}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise fail(str(exc)) from None


def _load_plugins() -> None:
    """Build the op table before listening: a plugin clash stops the server at start-up with
    one line, and plugins that failed to load are named, one warning line each."""
    import warnings

    from opgraph.errors import PluginError
    from opgraph.registry import default_registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            registry = default_registry()
        except PluginError as exc:
            raise fail(f"cannot start: {exc}") from None
    for problem in registry.problems:
        typer.echo(f"warning: {problem}", err=True)


@friendly_errors
def call(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="The server: tcp://HOST:PORT or unix:///PATH."),
    method: str = typer.Argument(..., help="The method, e.g. graph.list or node.get."),
    args: list[str] = typer.Argument(None, help="Arguments, each as JSON (strings may be bare)."),
    token: str = typer.Option(
        None, envvar="OPGRAPH_TOKEN", show_envvar=True,
        help="The server's token. Prefer setting OPGRAPH_TOKEN: a --token given here is "
        "visible to every user in ps."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the answer."),
) -> None:
    """Call any RPC method and print its result as one line of JSON; errors go to stderr.

    Example: opgraph call tcp://127.0.0.1:7450 node.get demo '[0, 9]'
    """
    from opgraph_client import Client, ServerError

    _warn_if_token_flag(ctx)
    params = [_json_arg(a, i) for i, a in enumerate(args or [])]
    try:
        with Client(url, token=token, timeout=timeout) as client:
            result = client.call(method, *params)
    except ServerError as exc:
        raise fail(str(exc)) from None
    print_json(result, compact=True)  # one line: for jq, grep and scripts


def _json_arg(text: str, index: int):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if text[:1] in "[{\"" or text in ("true", "false", "null"):
            raise typer.BadParameter(f"argument {index + 1} is not valid JSON: {text!r}") from None
        return text  # a bare word: a string, so `call URL graph.info demo` works
