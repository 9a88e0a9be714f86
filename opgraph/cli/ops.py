"""``opgraph ops``: the op catalogue, and every op's gradient rule checked."""

from __future__ import annotations

import typer

from opgraph.cli.common import console, fail, friendly_errors, print_json, usage, warn

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
        warn(str(problem))


def _row(op, clash: bool) -> dict:
    return {"name": op.name, "arity": op.arity, "symbol": op.symbol, "plugin": op.plugin,
            "attrs": list(op.attrs), "doc": op.doc, "clash": clash}


@app.callback(invoke_without_command=True)
@friendly_errors
def list_ops(
    ctx: typer.Context,
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List every installed op: name, arity, symbol, plugin, doc.

    An op that two plugins define is listed once per definition, marked CLASH: it is left out
    until one of them is uninstalled (the warning says which distributions they come from).
    """
    if ctx.invoked_subcommand is not None:
        return
    registry = _registry()
    _report_problems(registry)
    rows = [_row(op, False) for op in registry]
    for clash in registry.clashes.values():
        rows.extend(_row(op, True) for op in clash.definitions)
    rows.sort(key=lambda row: (row["name"], row["plugin"]))
    if json_:
        print_json(rows)
        return
    from rich.table import Table

    clashes = len(registry.clashes)
    title = f"{len(registry)} ops" + (f", {clashes} left out: defined twice (CLASH)"
                                      if clashes else "")
    table = Table("op", "arity", "symbol", "plugin", "doc", title=title)
    for row in rows:
        attrs = f" ({', '.join(row['attrs'])})" if row["attrs"] else ""
        mark = " CLASH" if row["clash"] else ""
        table.add_row(row["name"] + attrs + mark, str(row["arity"]), row["symbol"],
                      row["plugin"], row["doc"])
    console().print(table)


@app.command("check")
@friendly_errors
def check(
    points: int = typer.Option(25, min=1, max=100_000, help="Sample points per op."),
    seed: int = typer.Option(0, help="Seed of the sample points."),
    only: list[str] = typer.Option([], "--op", help="Check only these ops (repeatable)."),
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """Check every op's gradient rule against central finite differences; exit 1 on a failure.

    An op with a graph form of its gradient rule (for gradients of gradients) has that checked
    too: against the float rule, and its derivatives (the op's second derivatives) against
    finite differences of the float rule. Lines are printed as the ops are checked, one per op.
    """
    from opgraph.gradcheck import check_op
    from opgraph.higher import check_grad_graph

    registry = _registry()
    _report_problems(registry)
    for name in only:
        if name in registry.clashes:  # installed twice: the work cannot be done (exit 1)
            raise fail(f"--op {name}: two plugins define it, so it is left out (see the "
                       f"warning above)")
        if name not in registry:  # a mistyped --op is bad usage (exit 2), with a suggestion
            raise usage(f"--op: {registry.missing(name)}")
    ops = [registry[name] for name in only] if only else list(registry)
    bad, bad_graph = [], []
    reports = []
    for op in ops:
        report = check_op(op, points=points, seed=seed)
        graph = check_grad_graph(op, points=points, seed=seed)
        if not report.ok:
            bad.append(report.op)
        if not graph.ok:
            bad_graph.append(report.op)
        if json_:
            reports.append((report, graph))
        else:
            ok = report.ok and graph.ok
            # (an op without a graph rule keeps the line it always had)
            typer.echo(("ok    " if ok else "FAIL  ") + str(report)
                       + (f"; {graph}" if graph.has_rule else ""))
    if json_:
        print_json([{"op": r.op, "plugin": r.plugin, "points": r.points, "ok": r.ok and g.ok,
                     "failures": [f.__dict__ for f in r.failures[:5]],
                     "graph_rule": {"ok": g.ok, "failures": [f.__dict__
                                                             for f in g.failures[:5]]}
                     if g.has_rule else None}
                    for r, g in reports])
    problems = []
    if bad:
        problems.append(f"gradient rule disagrees with finite differences: {', '.join(bad)}")
    if bad_graph:
        problems.append(f"graph gradient rule disagrees with the float rule or with finite "
                        f"differences of it: {', '.join(bad_graph)}")
    if problems:
        raise fail("; ".join(problems))
