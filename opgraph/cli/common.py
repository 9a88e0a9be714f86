"""What every command shares: one-line errors with meaningful exit codes, and output helpers.

Every error is one line on stderr, ``error: ...``, and every warning one ``warning: ...`` line,
whichever command runs: usage errors (exit 2) included, and the warnings of plugins that failed
to load. A closed stdout (``opgraph ops check | head -1``) ends the command quietly.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

try:  # newer typer carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer depends on click itself
    from click.exceptions import (  # type: ignore[no-redef]
        ClickException,
        NoArgsIsHelpError,
        UsageError,
    )

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_CLOSED_PIPE = 128 + 13  # what a shell reports for a program ended by SIGPIPE


class StdoutClosed(Exception):
    """The reader of stdout went away (``| head -1``): stop quietly."""


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def usage(message: str) -> UsageError:
    """A usage error (exit 2) to raise: printed as one line, with a pointer to ``--help``."""
    return UsageError(message)


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr, as one line."""
    typer.echo(f"warning: {_one_line(message)}", err=True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """`warnings.showwarning` for the CLI: ``warning: message``, without the source line."""
    warn(str(message))


def _usage_line(exc: UsageError) -> str:
    """Click's usage error as one line: the message, then where help is."""
    message = _one_line(exc.format_message()).rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]  # "No such option" -> "no such option"
    command = exc.ctx.command_path if exc.ctx is not None else "opgraph"
    return f"error: {message} (see '{command} --help')"


class OpgraphGroup(TyperGroup):
    """The ``opgraph`` command group: one-line usage errors, one-line warnings, quiet exit on
    a closed stdout. (Click's own standalone mode prints a four-line block for usage errors.)"""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        prog_name = prog_name or "opgraph"  # also under `python -m opgraph`
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                    **extra)
            except NoArgsIsHelpError as exc:  # a bare `opgraph`: the help
                exc.show()
                sys.exit(EXIT_USAGE)
            except UsageError as exc:
                typer.echo(_usage_line(exc), err=True)
                sys.exit(exc.exit_code)
            except ClickException as exc:
                typer.echo(f"error: {_one_line(exc.format_message())}", err=True)
                sys.exit(exc.exit_code)
            except typer.Abort:
                typer.echo("error: aborted", err=True)
                sys.exit(EXIT_FAILED)
            except StdoutClosed:
                _quiet_exit()
        sys.exit(code if isinstance(code, int) else EXIT_OK)


class ExpressionCommand(TyperCommand):
    """A command whose arguments are an expression and bindings: an argument that starts with
    ``-`` but is none of the command's options (``opgraph eval "-x+1" x=2``) is an argument,
    as if ``--`` came before the arguments. Unknown ``--long`` options are still refused."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _dashed_arguments(self.get_params(ctx), args))


def _dashed_arguments(params: Sequence[Any], args: list[str]) -> list[str]:
    """``args`` with the options first, then ``--`` and the arguments in their order, when an
    argument starts with ``-``; unchanged otherwise."""
    takes_value: set[str] = set()
    flags: set[str] = set()
    for param in params:
        if getattr(param, "param_type_name", "") != "option":
            continue
        names = set(param.opts) | set(param.secondary_opts)
        (flags if param.is_flag or param.count else takes_value).update(names)
    options: list[str] = []
    arguments: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            arguments.extend(args[i + 1:])
            break
        name = token.split("=", 1)[0] if token.startswith("--") else token
        if name in takes_value:
            options.append(token)
            if name == token and i + 1 < len(args):  # the value is the next token
                i += 1
                options.append(args[i])
        elif name in flags or token.startswith("--") or token[:2] in takes_value:
            options.append(token)  # (an unknown --option is left for click to refuse)
        else:
            arguments.append(token)  # a name=value, or an expression such as "-x+1" or "-3"
        i += 1
    if not any(a.startswith("-") and a != "-" for a in arguments):
        return args
    return [*options, "--", *arguments]


def _stdout_closed() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has gone."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, ValueError, OSError):  # no real file descriptor (tests), or closed
        return False


def _quiet_exit() -> None:
    """End after the reader of stdout went away: nothing on stderr, exit 141 (as a shell
    reports a program that SIGPIPE ended). Stdout is pointed at /dev/null first, so that
    the interpreter's last flush of it cannot complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, ValueError, OSError):
        pass
    sys.exit(EXIT_CLOSED_PIPE)


def friendly_errors(func: F) -> F:
    """Turn opgraph's errors, OS errors and bad values into one line on stderr and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from opgraph.errors import OpgraphError
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, typer.TyperException,
                StdoutClosed):
            raise  # the group prints usage errors (BadParameter, ...) itself, with exit code 2
        except OSError as exc:
            if exc.errno == errno.EPIPE and _stdout_closed():
                raise StdoutClosed from None
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            raise fail(f"{where}{exc.strerror or exc}") from None
        except (OpgraphError, ValueError, TypeError, ArithmeticError) as exc:
            raise fail(_one_line(str(exc))) from None
        except Exception as exc:
            from opgraph_client import ClientError, ServerError

            if isinstance(exc, ServerError | ClientError):
                raise fail(_one_line(str(exc))) from None  # "name: message", or plain words
            # Anything else reaching here is a bug; still one line, but say what kind.
            raise fail(f"{type(exc).__name__}: {_one_line(str(exc))}") from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any, *, compact: bool = False) -> None:
    """Print ``data`` as strict JSON on stdout: indented, or with ``compact`` on one line.

    Numbers stay numbers. NaN and the infinities, which strict JSON cannot hold, are written
    as ``null``, and a ``warning:`` line on stderr names each such field and its value
    (``warning: not finite: value = inf (written as null)``). Bytes are ``{"base64": ...}``.
    """
    odd: list[tuple[str, float]] = []
    clean = _finite(data, "", odd)
    if odd:
        shown = ", ".join(f"{path or 'the result'} = {value!r}" for path, value in odd[:5])
        more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
        warn(f"not finite: {shown}{more} (written as null in the JSON)")
    text = json.dumps(clean, indent=None if compact else 2, default=_json_default,
                      allow_nan=False)
    typer.echo(text)


def warn_if_not_finite(values: dict[str, float]) -> None:
    """A ``warning:`` line naming every value of ``values`` that is NaN or infinite."""
    odd = [f"{name} = {value!r}" for name, value in values.items()
           if isinstance(value, float) and not math.isfinite(value)]
    if odd:
        warn(f"not finite: {', '.join(odd)}")


def _json_default(value: Any) -> Any:
    """Bytes (a PNG from graph.render, say) as ``{"base64": ...}``; anything else as text."""
    if isinstance(value, bytes | bytearray):
        import base64

        return {"base64": base64.b64encode(value).decode()}
    return str(value)


def _finite(data: Any, path: str, odd: list[tuple[str, float]]) -> Any:
    """``data`` with every non-finite float replaced by None; ``odd`` collects (path, value)."""
    if isinstance(data, float) and not math.isfinite(data):
        odd.append((path, data))
        return None
    if isinstance(data, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), odd) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v, f"{path}[{i}]", odd) for i, v in enumerate(data)]
    return data


def console():
    """A rich Console on stdout. At a terminal tables fit its width; piped to another program
    they are never wrapped, so every row is one whole line (``opgraph ops | grep tanh``)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1; end as every command does
            self.quiet = True
            raise StdoutClosed

    # markup off: a label such as "w[0]" or "[red]y" is printed as it is, not read as a style
    if sys.stdout.isatty():
        return _Console(highlight=False, soft_wrap=True, markup=False)
    return _Console(highlight=False, soft_wrap=True, markup=False, width=100_000)


@contextmanager
def progress(description: str, *, eta: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields ``update(done, total)``. Silent when not a tty.
    With ``eta`` it shows the time left too (from the rate of the updates so far)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    err = Console(stderr=True)
    if not err.is_terminal:
        yield lambda done, total: None
        return
    class Count(ProgressColumn):
        def render(self, task: Task) -> Text:
            if task.total is None:
                return Text("")
            return Text(f"{int(task.completed):,}/{int(task.total):,}")

    columns = [TextColumn("{task.description}"), BarColumn(), Count(), TimeElapsedColumn()]
    if eta:
        columns += [TextColumn("left"), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


MORE = "--full for all"


def elide(items: Sequence[str], limit: int | None, *, tail: int = 0, sep: str = ", ",
          more: str = MORE) -> str:
    """``items`` joined by ``sep``, at most ``limit`` of them (None: all), the rest counted:
    ``a, b, c, … and 12,141 more; --full for all``. ``tail`` keeps that many of the last
    items too (a path: its start and its end), the count in between. ``more`` says where the
    rest is."""
    if not items:
        return "-"
    if limit is None or len(items) <= limit:
        return sep.join(items)
    tail = min(tail, max(limit - 1, 0))
    head = list(items[:limit - tail])
    hidden = len(items) - len(head) - tail
    if tail:
        return (f"{sep.join(head)}{sep}… {hidden:,} more …{sep}{sep.join(items[-tail:])} "
                f"({more})")
    return f"{sep.join(head)}{sep if head else ''}… and {hidden:,} more; {more}"


def parse_binding(text: str) -> tuple[str, float]:
    """``name=value`` to ``(name, float)``; a clear usage error otherwise."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise usage(f"{text!r} is not name=value (e.g. x=3.0)")
    try:
        return name, float(value)  # a float, whatever was written: x=3 is 3.0
    except ValueError:
        raise usage(f"{text!r}: {value!r} is not a number") from None

