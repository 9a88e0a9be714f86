"""``opgraph ops``: the op catalogue, and every op's gradient rule checked."""

from __future__ import annotations

import typer

from opgraph.cli.common import console, fail, friendly_errors, print_json

app = typer.Typer(help="The installed ops, and checks of their gradient rules.",
                  rich_markup_mode=None)


def _registry():
    import warnings

    from opgraph.registry import default_registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # problems are printed below, once, as one line each
        return default_registry()


def _report_problems(registry) -> None:
    for problem in registry.problems:
        typer.echo(f"warning: {problem}", err=True)


@app.callback(invoke_without_command=True)
@friendly_errors
def list_ops(
    ctx: typer.Context,
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List every installed op: name, arity, symbol, plugin, doc."""
    if ctx.invoked_subcommand is not None:
        return
    registry = _registry()
    _report_problems(registry)
    rows = [
        {"name": op.name, "arity": op.arity, "symbol": op.symbol, "plugin": op.plugin,
         "attrs": list(op.attrs), "doc": op.doc}
        for op in registry
    ]
    if json_:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("op", "arity", "symbol", "plugin", "doc", title=f"{len(rows)} ops")
    for row in rows:
        attrs = f" ({', '.join(row['attrs'])})" if row["attrs"] else ""
        table.add_row(row["name"] + attrs, str(row["arity"]), row["symbol"], row["plugin"],
                      row["doc"])
    console().print(table)


@app.command("check")
@friendly_errors
def check(
    points: int = typer.Option(25, min=1, max=100_000, help="Sample points per op."),
    seed: int = typer.Option(0, help="Seed of the sample points."),
    only: list[str] = typer.Option([], "--op", help="Check only these ops (repeatable)."),
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """Check every op's gradient rule against central finite differences; exit 1 on a failure."""
    from opgraph.gradcheck import check_op

    registry = _registry()
    _report_problems(registry)
    unknown = [name for name in only if name not in registry]
    if unknown:  # a mistyped --op is bad usage (exit 2), with the registry's suggestion
        from opgraph.errors import UnknownOpError

        raise typer.BadParameter(str(UnknownOpError(unknown[0], registry.names())),
                                 param_hint="--op")
    ops = [registry[name] for name in only] if only else list(registry)
    reports = [check_op(op, points=points, seed=seed) for op in ops]
    if json_:
        print_json([{"op": r.op, "plugin": r.plugin, "points": r.points, "ok": r.ok,
                     "failures": [f.__dict__ for f in r.failures[:5]]} for r in reports])
    else:
        for r in reports:
            typer.echo(("ok    " if r.ok else "FAIL  ") + str(r))
    bad = [r.op for r in reports if not r.ok]
    if bad:
        raise fail(f"gradient rule disagrees with finite differences: {', '.join(bad)}")
