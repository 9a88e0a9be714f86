"""What every command shares: one-line errors with meaningful exit codes, and output helpers."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def friendly_errors(func: F) -> F:
    """Turn opgraph's errors, OS errors and bad values into one line on stderr and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from opgraph.errors import OpgraphError
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, typer.TyperException):
            raise  # typer prints usage errors (BadParameter, ...) itself, with exit code 2
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            raise fail(f"{where}{exc.strerror or exc}") from None
        except (OpgraphError, ValueError, TypeError, ArithmeticError) as exc:
            raise fail(str(exc)) from None
        except Exception as exc:
            from opgraph_client import ClientError, ServerError

            if isinstance(exc, ServerError | ClientError):
                raise fail(str(exc)) from None  # already "name: message", or plain words
            # Anything else reaching here is a bug; still one line, but say what kind.
            raise fail(f"{type(exc).__name__}: {exc}") from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    """Print ``data`` as indented, strict JSON on stdout: NaN and infinities become the strings
    ``"nan"``, ``"inf"`` and ``"-inf"`` (strict JSON has no such numbers), bytes base64."""
    typer.echo(json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False))


def _json_default(value: Any) -> Any:
    """Bytes (a PNG from graph.render, say) as ``{"base64": ...}``; anything else as text."""
    if isinstance(value, bytes | bytearray):
        import base64

        return {"base64": base64.b64encode(value).decode()}
    return str(value)


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return "nan" if data != data else ("inf" if data > 0 else "-inf")
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def console():
    """A rich Console on stdout."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@contextmanager
def progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields ``update(done, total)``. Silent when not a tty."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    if not err.is_terminal:
        yield lambda done, total: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total}"), TimeElapsedColumn(), console=err,
            transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def parse_binding(text: str) -> tuple[str, float]:
    """``name=value`` to ``(name, float)``; a clear BadParameter otherwise."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise typer.BadParameter(f"{text!r} is not name=value (e.g. x=3.0)")
    try:
        return name, float(value)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: {value!r} is not a number") from None

