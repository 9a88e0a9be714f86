"""The ``opgraph`` command line (typer). Heavy imports happen inside commands."""

from __future__ import annotations

import typer

from opgraph.cli import evaluate, files, lsp, ops, serve
from opgraph.cli.common import ExpressionCommand, OpgraphGroup

# Help as wide as the terminal allows (click stops at 80 columns by default, which cut the
# command summaries short even in a wide terminal).
CONTEXT = {"max_content_width": 200, "help_option_names": ["--help", "-h"]}

app = typer.Typer(
    name="opgraph",
    cls=OpgraphGroup,
    help="opgraph: a scalar autograd engine with plugin ops, and a server to look inside it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # usage errors as plain lines, not boxes
    context_settings=CONTEXT,
)
app.add_typer(ops.app, name="ops")
app.command("eval", cls=ExpressionCommand,
            short_help="Value and gradients of an expression.")(evaluate.eval_)
app.command(cls=ExpressionCommand,
            short_help="Plot a function and its derivative.")(evaluate.plot)
app.command(short_help="Size, depth, critical path, dominators, diagnostics of a graph.")(
    files.analyze)
app.command(short_help="Draw a graph, or a node's neighbourhood (SVG, PNG, DOT).")(
    files.render)
app.command(short_help="Check a graph's gradients against finite differences.")(
    files.gradcheck)
app.command(short_help="Run the graph server (MessagePack-RPC).")(serve.serve)
app.command(short_help="Call any method of a running server; the result as one JSON line.")(
    serve.call)
app.command(short_help="Run the language server (values and gradients in any LSP editor).")(
    lsp.lsp)


def _print_version(value: bool) -> None:
    if value:
        from opgraph import __version__

        typer.echo(f"opgraph {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print opgraph's version and exit."),
) -> None:
    """opgraph: a scalar autograd engine with plugin ops, and a server to look inside it."""


@app.command(short_help="Print opgraph's version.")
def version() -> None:
    """Print opgraph's version (the same as ``opgraph --version``)."""
    from opgraph import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point of the ``opgraph`` script."""
    app()
