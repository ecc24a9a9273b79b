"""`edgecompress report DIR`: (re)render DIR/report.html from DIR/report.json."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import app, files_as_errors, guarded, say


@files_as_errors
def _run_report(folder: Path) -> None:
    import json

    from ..errors import DataError
    from ..measure.html_report import write_html_report

    source = folder / "report.json"
    if not source.is_file():
        raise DataError(f"{source} does not exist: give the folder an `edgecompress compress` run wrote (--out)")
    try:
        report = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{source} is not a JSON report: {e}") from None
    if not isinstance(report, dict):
        raise DataError(f"{source} holds a JSON {type(report).__name__}; a report is a JSON object")
    say(f"wrote {write_html_report(report, folder / 'report.html')}")


@app.command("report")
def report(folder: Path = typer.Argument(..., help="a folder `edgecompress compress` wrote (holds report.json)")
           ) -> None:
    """Render FOLDER/report.html from FOLDER/report.json: one self-contained page with the figures (no network
    needed to view it). An unchanged report.json gives the same bytes, so a signed manifest still verifies."""
    guarded(_run_report, folder)
