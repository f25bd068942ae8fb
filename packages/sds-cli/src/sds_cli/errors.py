"""Turning the toolkit's user errors into one sentence and exit status 2, and warnings into one line."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, TextIO

import typer
from rich.console import Console
from rich.markup import escape

from sds_cli.text import printable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print `message` as one line on stderr and return the Exit to raise.

    Error sentences often quote a prompt or a path from a file: control characters are shown
    escaped (`sds_cli.text.printable`), so neither can move the cursor or fake output."""
    _stderr.print(f"[bold red]error:[/] {escape(printable(message))}", markup=True)
    return typer.Exit(code)


def warning_line(message: Warning | str) -> str:
    """A warning as the one line the CLI prints: "warning: MESSAGE", whitespace runs joined."""
    return "warning: " + printable(" ".join(str(message).split()))


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A `warnings.showwarning` for the CLI: one line on stderr, without the source line that
    Python's default prints (a user of the command has no use for it)."""
    stream = file if file is not None else sys.stderr
    with suppress(OSError, ValueError):  # stderr closed or gone: a warning is not worth a crash
        stream.write(warning_line(message) + "\n")


def install_warning_display() -> None:
    """Show every warning of this process as one line (for the console-script entry point)."""
    warnings.showwarning = show_warning


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Within the block, warnings are shown by `show_warning` (the previous display comes back after)."""
    previous: Any = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        yield
    finally:
        if warnings.showwarning is show_warning:
            warnings.showwarning = previous


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input becomes one sentence on stderr and exit status 2, without a traceback; warnings
    raised meanwhile are one line each ("warning: MESSAGE")."""
    from sds_core.errors import SdsError

    with one_line_warnings():
        try:
            yield
        except SdsError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail(
                "stopped at once by a second interrupt; resume from the last periodic checkpoint", EXIT_INTERRUPTED
            ) from None
