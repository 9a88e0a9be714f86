"""``opgraph eval`` and ``opgraph plot``: expressions from the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from opgraph.cli.common import (
    console,
    fail,
    friendly_errors,
    parse_binding,
    print_json,
    usage,
    warn_if_not_finite,
)

EXPR_HELP = "A Python-syntax expression over names, numbers and ops: 'tanh(x*w + b)'."


def _bindings(pairs: list[str]) -> dict[str, float]:
    bound: dict[str, float] = {}
    for text in pairs:
        name, value = parse_binding(text)
        if name in bound:
            raise usage(f"{name!r} is given twice ({text!r}); give each name one value")
        bound[name] = value
    return bound


def _expression_error(exc) -> typer.Exit:
    """A bad expression is bad usage (exit 2), an op failing on the values is failed work
    (exit 1, as ``log(x)`` at ``x=-1``): one line with the position, and for a person at a
    terminal the text with a caret under the problem as well."""
    import sys

    from opgraph.cli.common import EXIT_FAILED, EXIT_USAGE
    from opgraph.errors import RuleError

    code = EXIT_FAILED if isinstance(exc, RuleError) or _clashed(exc) else EXIT_USAGE
    return fail(f"{exc}\n{exc.excerpt()}" if sys.stderr.isatty() else str(exc), code)


def _clashed(exc: BaseException) -> bool:
    """Whether ``exc`` comes of an op that two plugins define: the installation is at fault,
    not the command line (exit 1, not 2)."""
    from opgraph.errors import UnknownOpError
    from opgraph.registry import default_registry

    cause = exc.__cause__
    return isinstance(cause, UnknownOpError) and cause.name in default_registry().clashes


@friendly_errors
def eval_(
    expression: str = typer.Argument(..., help=EXPR_HELP),
    bindings: list[str] = typer.Argument(None, help="Values of the names: x=3 w=-0.5 ..."),
    json_: bool = typer.Option(False, "--json", help='Print {"value": ..., "grads": {...}}.'),
    save: Path = typer.Option(None, help="Also write the graph to this file (.opg or .json)."),
    svg: Path = typer.Option(None, help="Also draw the graph to this SVG file."),
    order: int = typer.Option(1, "--order", min=1, max=2,
                              help="2: also the second derivatives (the Hessian)."),
) -> None:
    """Evaluate an expression: its value and the gradient with respect to every name.

    Example: opgraph eval "3*x**2 - 4*x + 5" x=3   (value 20, d/dx 14). Numbers, bound or
    written in the expression, are floats (IEEE doubles). An expression may start with a
    minus sign: opgraph eval "-x + 1" x=2. A value or gradient that is NaN or infinite is
    named in a warning on stderr (and is null in --json). With --order 2 the second
    derivatives too: d2/dx2 (6 above) for one name, the Hessian for several
    ({"hessian": {"x": {"x": ..., "y": ...}, ...}} in --json).
    """
    from opgraph.expr import ExpressionError, build

    bound = _bindings(bindings or [])
    try:
        root, leaves = build(expression, bound)
    except ExpressionError as exc:
        raise _expression_error(exc) from None
    hessian = _hessian(root, leaves) if order == 2 else None
    root.backward()
    grads = {name: leaf.grad for name, leaf in leaves.items()}
    if save is not None:
        from opgraph.fileformat import save as save_graph

        save_graph(root, save)
    if svg is not None:
        from opgraph.render import render

        svg.write_bytes(render(root, format="svg"))
    if json_:
        print_json({"value": root.data, "grads": grads}
                   | ({} if hessian is None else {"hessian": hessian}))
        return
    warn_if_not_finite({"value": root.data, **{f"d/d{name}": g for name, g in grads.items()},
                        **{f"d2/d{a} d{b}": h for a, row in (hessian or {}).items()
                           for b, h in row.items()}})
    from rich.table import Table

    one = hessian is not None and len(leaves) == 1
    table = Table("name", "value", "gradient", *(["second derivative"] if one else []),
                  title=expression)
    for name, leaf in leaves.items():
        table.add_row(name, repr(leaf.data), repr(grads[name]),
                      *([repr(hessian[name][name])] if one else []))  # type: ignore[index]
    table.add_section()
    table.add_row("(result)", repr(root.data), "", *([""] if one else []))
    console().print(table)
    if hessian is not None and len(leaves) > 1:
        names = list(leaves)
        matrix = Table("d2/d row d column", *names, title="Hessian")
        for a in names:
            matrix.add_row(a, *(repr(hessian[a][b]) for b in names))
        console().print(matrix)
    for path in (save, svg):
        if path is not None:
            typer.echo(f"wrote {path}", err=True)


def _hessian(root, leaves: dict) -> dict[str, dict[str, float]]:
    """The second derivatives of ``root`` by name: ``{row: {column: d2 root/d row d column}}``.
    A rule that fails is failed work (exit 1); an op without a graph gradient rule (a plugin's)
    says so and that the first derivatives still work without --order 2."""
    from opgraph.errors import NoGradGraphError, RuleError
    from opgraph.higher import hessian

    names = list(leaves)
    try:
        matrix = hessian(root, [leaves[n] for n in names])
    except NoGradGraphError as exc:
        raise fail(f"--order 2: {exc}") from None
    except RuleError as exc:
        raise fail(str(exc)) from None
    return {a: dict(zip(names, row, strict=True)) for a, row in zip(names, matrix, strict=True)}


@friendly_errors
def plot(
    expression: str = typer.Argument(..., help="An expression in one free name: '3*x**2 - 4*x'."),
    output: Path = typer.Option(..., "-o", "--output", help="The picture: .png, .svg or .pdf."),
    range_: str = typer.Option(None, "--range", show_default=False,
                               help="The interval of x, as LOW:HIGH.  [default: -5:5]"),
    at: float = typer.Option(None, help="Draw the tangent at this x (the default range grows "
                                        "to include it; a --range given must)."),
    points: int = typer.Option(200, min=2, max=100_000, help="How many points to plot."),
    bindings: list[str] = typer.Argument(None, help="Values of other names: a=2 ..."),
    order: int = typer.Option(1, "--order", min=1, max=2,
                              help="2: also the second derivative f''."),
) -> None:
    """Plot a function and its derivative (from autograd), as the seed plots f(x).

    Points where the function or its derivative is undefined or infinite are left out (and
    counted); near a pole the y axis is clipped so that the rest of the curve keeps its shape.
    With --order 2 the second derivative f'' is drawn too (autograd of autograd).
    """
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from opgraph.errors import RuleError
    from opgraph.expr import ExpressionError, build
    from opgraph.graph import Graph

    low, high = _interval(range_ or DEFAULT_RANGE)
    notes: list[str] = []
    if at is not None and not low <= at <= high:
        if range_ is not None:
            raise usage(f"--at {at:g} is outside --range {range_}; widen the range to include "
                        f"it")
        margin = (high - low) / 10
        low, high = min(low, at - margin), max(high, at + margin)
        notes.append(f"range extended to {low:g}:{high:g} to include --at {at:g}")
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise typer.BadParameter(f"{output}: write a .png, .svg or .pdf file",
                                 param_hint="--output")
    bound = _bindings(bindings or [])
    var = _free_name(expression, bound)
    graph = Graph("plot")
    x = graph.leaf(low, var)
    step = (high - low) / (points - 1)
    root = first_error = None
    # Build at the first point where the function is defined (log(x) on -5:5 starts at 0.05),
    # not just at LOW; a failed build leaves the graph as it was.
    for i in range(points):
        graph.set(x.id, low + i * step)
        try:
            root, _ = build(expression, {**bound, var: x}, graph=graph)
            break
        except ExpressionError as exc:
            first_error = first_error or exc
            if not isinstance(exc.__cause__, RuleError):
                break  # not a domain problem: the same at every point
    if root is None:
        raise _expression_error(first_error) from None
    if order == 2:
        _check_second_order(root, x)
    xs = [low + i * step for i in range(points)]
    ys, dys, d2ys = _curves(xs, graph, x, root, order, (expression, bound, var))
    drawn = sum(math.isfinite(y) for y in ys)
    if not drawn:
        raise fail(f"the expression is undefined everywhere in [{low:g}, {high:g}]")
    if drawn < points:
        which = "f, f' or f''" if order == 2 else "f or f'"
        notes.append(f"{points - drawn} of {points} left out, where {which} is undefined or "
                     f"infinite")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    tangent = None if at is None else _tangent(graph, x, root, at)
    window = y_window([v for v in ys + dys + (d2ys if order == 2 else []) if math.isfinite(v)]
                      + ([tangent[0]] if tangent else []))
    if window is not None:
        ys, dys, d2ys = (_break_jumps(ys, window), _break_jumps(dys, window),
                         _break_jumps(d2ys, window))
        notes.append(f"y axis clipped to {window[0]:.4g}:{window[1]:.4g}, the curves go beyond")
    ax.plot(xs, ys, label=f"f({var}) = {expression}")
    ax.plot(xs, dys, label=f"f'({var}) (autograd)", linestyle="--")
    if order == 2:
        ax.plot(xs, d2ys, label=f"f''({var}) (autograd of autograd)", linestyle=":")
    if tangent is not None:
        fa, slope = tangent
        ax.plot([low, high], [fa + slope * (low - at), fa + slope * (high - at)],
                label=f"tangent at {var}={at:g}: slope {slope:.6g}", linewidth=0.8)
        ax.plot([at], [fa], "o")
    finite = ([v for v in ys + dys + (d2ys if order == 2 else []) if math.isfinite(v)]
              + ([tangent[0]] if tangent else []))
    bottom, top = window or (min(finite), max(finite))
    pad = (top - bottom) * 0.05 or 1.0
    ax.set_ylim(bottom - pad, top + pad)  # (the tangent line does not widen the axis)
    ax.set_xlim(low, high)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(var)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(output, format=fmt, dpi=100)
    plt.close(fig)
    extra = "".join(f"; {note}" for note in notes)
    typer.echo(f"wrote {output} ({drawn} points{extra})", err=True)


DEFAULT_RANGE = "-5:5"


def _free_name(expression: str, bound: dict) -> str:
    """The one name of ``expression`` that ``bound`` leaves free (bad usage otherwise)."""
    from opgraph.expr import ExpressionError, parse

    try:
        names = [n for n in parse(expression).names if n not in bound]
    except ExpressionError as exc:
        raise _expression_error(exc) from None
    if len(names) != 1:
        raise usage(
            f"the expression must have exactly one free name to plot, it has "
            f"{', '.join(map(repr, names)) if names else 'none'} (bind the others as name=value)")
    return names[0]


def _tangent(graph, x, root, at: float) -> tuple[float, float]:
    """f and f' at ``at``, for the tangent (failed work if either is undefined there)."""
    import math

    try:
        graph.set(x.id, at)
        graph.backward(root)
    except Exception as exc:
        raise fail(f"cannot draw the tangent: f is undefined at {x.label} = {at:g} ({exc})"
                   ) from None
    if not (math.isfinite(root.data) and math.isfinite(x.grad)):
        raise fail(f"cannot draw the tangent: f({at:g}) = {root.data!r}, f'({at:g}) = "
                   f"{x.grad!r}")
    return root.data, x.grad


def _curves(xs: list[float], graph, x, root, order: int,
            source: tuple[str, dict, str]) -> tuple[list[float], list[float], list[float]]:
    """f, f' and (with ``order`` 2, else NaN) f'' at each of ``xs``: NaN where any of them is
    undefined or infinite, so that the lines break there."""
    import math

    ys, dys, d2ys = [], [], []
    for xv in xs:
        d2y = math.nan
        try:
            graph.set(x.id, xv)
            if order == 2:
                y, dy, d2y = _second_order(*source, xv)
            else:
                graph.backward(root)
                y, dy = root.data, x.grad
        except Exception:
            y = dy = math.nan  # outside the function's domain (log of a negative number, ...)
        if not (math.isfinite(y) and math.isfinite(dy)) or (order == 2
                                                               and not math.isfinite(d2y)):
            y = dy = d2y = math.nan  # a pole, or log(0): nothing to draw there
        ys.append(y)
        dys.append(dy)
        d2ys.append(d2y)
    return ys, dys, d2ys


def _check_second_order(root, x) -> None:
    """Refuse --order 2 at once (exit 1) for an expression over an op without a graph
    gradient rule, naming the op and its plugin."""
    from opgraph.errors import NoGradGraphError
    from opgraph.higher import grad

    try:
        grad(root, x, create_graph=True)
    except NoGradGraphError as exc:
        raise fail(f"--order 2: {exc}") from None
    except Exception:
        pass  # a rule failing at this point only: the points where it fails are left out


def _second_order(expression: str, bound: dict, var: str, at: float) -> tuple[float, ...]:
    """f, f' and f'' at ``var`` = ``at``, on a graph built at that point (a gradient graph is
    built at a point: relu's slope, for one, is the side of the kink it was built on)."""
    from opgraph.expr import build
    from opgraph.higher import grad

    root, leaves = build(expression, {**bound, var: at})
    x = leaves[var]
    first = grad(root, x, create_graph=True)
    return root.data, first.data, grad(first, x)


def y_window(values: list[float]) -> tuple[float, float] | None:
    """The y range to show for these (finite) values: None (all of them) unless some lie far
    out of scale with the rest, as near a pole of ``1/x``; then the range between Tukey-style
    fences around the 10th and 90th percentiles, so that the curve keeps its shape."""
    if len(values) < 4:
        return None
    ordered = sorted(values)
    last = len(ordered) - 1
    q1, q9 = ordered[last // 10], ordered[last - last // 10]
    spread = q9 - q1 or max(abs(q1), 1.0)
    bottom, top = q1 - 1.5 * spread, q9 + 1.5 * spread
    if ordered[0] >= bottom and ordered[-1] <= top:
        return None
    return max(ordered[0], bottom), min(ordered[-1], top)


def _break_jumps(values: list[float], window: tuple[float, float]) -> list[float]:
    """``values`` with a NaN put where the curve jumps across the whole window (a pole), so
    that no line is drawn from one end of the axis to the other."""
    import math

    bottom, top = window
    out = list(values)
    for i in range(1, len(values)):
        a, b = values[i - 1], values[i]
        if math.isfinite(a) and math.isfinite(b) and ((a > top and b < bottom)
                                                      or (a < bottom and b > top)):
            out[i] = math.nan
    return out


def _interval(text: str) -> tuple[float, float]:
    import math

    low, sep, high = text.partition(":")
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not LOW:HIGH (e.g. -5:5)",
                                 param_hint="--range") from None
    if not sep or not lo < hi:
        raise typer.BadParameter(f"{text!r}: LOW must be below HIGH", param_hint="--range")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise typer.BadParameter(f"{text!r}: LOW and HIGH must be finite numbers",
                                 param_hint="--range")
    return lo, hi
