"""The ``opgraph`` command line (typer). Heavy imports happen inside commands."""

from __future__ import annotations

import typer

from opgraph.cli import evaluate, files, ops, serve

app = typer.Typer(
    help="opgraph: a scalar autograd engine with plugin ops, and a server to look inside it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # usage errors as plain lines, not boxes
)
app.add_typer(ops.app, name="ops")
app.command("eval")(evaluate.eval_)
app.command()(evaluate.plot)
app.command()(files.analyze)
app.command()(files.render)
app.command()(files.gradcheck)
app.command()(serve.serve)
app.command()(serve.call)


@app.command()
def version() -> None:
    """Print opgraph's version."""
    from opgraph import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point of the ``opgraph`` script."""
    app()
