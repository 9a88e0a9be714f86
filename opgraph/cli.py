"""The ``opgraph`` command line (filled in by the CLI work)."""

import typer

app = typer.Typer(help="opgraph: look inside scalar autograd graphs.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print opgraph's version."""
    from opgraph import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point of the ``opgraph`` script."""
    app()
