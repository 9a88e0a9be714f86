"""``opgraph lsp``: the language server, for editors (values and gradients beside the code)."""

from __future__ import annotations

import typer

DEFAULT_URL = "tcp://127.0.0.1:7450"


def lsp(
    connect: str = typer.Option(
        DEFAULT_URL, "--connect", "-c", metavar="URL",
        help="The graph server: tcp://HOST:PORT or unix:///PATH. An editor may also give "
        "it as the initialization option 'url', or in its settings."),
    spawn: bool = typer.Option(
        False, help="Start a graph server on the --connect address when none answers there "
        "(stopped with the language server)."),
    tcp: bool = typer.Option(False, help="Serve one editor over TCP instead of stdin/stdout."),
    host: str = typer.Option("127.0.0.1", help="With --tcp: the address to listen on."),
    port: int = typer.Option(2087, min=0, max=65535, help="With --tcp: the port (0: any)."),
    log_level: str = typer.Option("warning", help="debug, info, warning or error (to stderr)."),
) -> None:
    """Run the language server over stdin/stdout (how editors start language servers).

    It shows the graphs of the graph server beside the code that made them: values and
    gradients as inlay hints, diagnostics, hovers, code lenses. See docs/editors.md.
    """
    from opgraph_lsp.link import check_url

    try:
        check_url(connect)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--connect") from None
    from opgraph_lsp.main import serve

    raise typer.Exit(serve(connect, spawn=spawn, tcp=tcp, host=host, port=port,
                           log_level=log_level))
