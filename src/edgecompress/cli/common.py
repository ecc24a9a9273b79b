"""What every command shares: the typer app, the consoles, and one error line (exit status 2) for every
EdgeCompressError and file-system error."""

from __future__ import annotations

import functools

import typer
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..errors import EdgeCompressError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress trained PyTorch models for edge devices and measure the real artifact.")
console = Console()
errors = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"edgecompress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """edgecompress"""


def guarded(fn, *args) -> None:
    try:
        fn(*args)
    except EdgeCompressError as e:
        # escaped: a path or value in the message may hold [brackets]; one line, for logs
        errors.print(f"[red]error:[/] {escape(str(e))}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def files_as_errors(fn):
    """An OSError (permission denied, disk full, a folder where a file was expected) as one error line too."""
    @functools.wraps(fn)
    def run(*args):
        try:
            fn(*args)
        except OSError as e:
            raise EdgeCompressError(f"{str(e.filename) + ': ' if e.filename else ''}{e.strerror or e}") from None
    return run
