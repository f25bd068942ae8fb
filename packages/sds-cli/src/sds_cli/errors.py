"""Turning the toolkit's user errors into one sentence and exit status 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print `message` as one line on stderr and return the Exit to raise."""
    _stderr.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input becomes one sentence on stderr and exit status 2, without a traceback."""
    from sds_core.errors import SdsError

    try:
        yield
    except SdsError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail(
            "stopped at once by a second interrupt; resume from the last periodic checkpoint", EXIT_INTERRUPTED
        ) from None
