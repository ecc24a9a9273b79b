"""The `edgecompress` command: a thin typer app that builds the inputs and calls the Python API."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.console import Console

from . import __version__
from .errors import EdgeCompressError, EdgeCompressWarning

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress trained PyTorch models for edge devices and measure the real artifact.")
console = Console()
errors = Console(stderr=True)

DEMO_MODEL = "builtin:mnist1d_cnn"
DEMO_RECIPE = "builtin:default"


def _version(value: bool) -> None:
    if value:
        console.print(f"edgecompress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """edgecompress"""


def _run_compress(model_spec: str, recipe: str, data: str | None, out: Path, weights: Path | None) -> None:
    from .measure import render_summary
    from .model_io import load_model
    from .pipeline import compress
    from .progress import make_progress

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EdgeCompressWarning)
        with make_progress() as progress:
            loaded = load_model(model_spec, weights=weights, progress=progress)
            data = data or loaded.dataset
            if data is None:
                raise EdgeCompressError("--data is required for a model that is not builtin "
                                        "(builtin:mnist1d, builtin:digits, a .npz file or module:function)")
            result = compress(loaded.model, recipe, data=data, example_inputs=loaded.example_inputs,
                              out_dir=out, progress=progress)
    for w in caught:
        if issubclass(w.category, EdgeCompressWarning):
            errors.print(f"[yellow]warning:[/] {w.message}")
    for renderable in render_summary(result.report):
        console.print(renderable)
    console.print(f"artifacts and report.json in [bold]{result.out_dir}[/]")


def _guarded(fn, *args) -> None:
    try:
        fn(*args)
    except EdgeCompressError as e:
        errors.print(f"[red]error:[/] {e}", markup=True, highlight=False)
        raise typer.Exit(2) from None


@app.command("compress")
def compress_cmd(
    model: str = typer.Argument(..., help="builtin:NAME | package.module:factory | model.pt2"),
    recipe: str = typer.Option(DEMO_RECIPE, "--recipe", "-r",
                               help="recipe YAML file or builtin:default / builtin:design"),
    data: str = typer.Option(None, "--data", "-d",
                             help="builtin:mnist1d | builtin:digits | data.npz | module:function"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="folder for the artifacts and report.json"),
    weights: Path = typer.Option(None, "--weights", "-w", help=".safetensors weights for a module:factory model"),
) -> None:
    """Compress MODEL as the recipe says, export it, measure it on its runtime, and write a report."""
    _guarded(_run_compress, model, recipe, data, out, weights)


@app.command()
def demo(out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="folder for the artifacts and report")) -> None:
    """Train (once, cached) the MNIST-1D CNN, prune and quantize it to INT8 ONNX, and measure it."""
    _guarded(_run_compress, DEMO_MODEL, DEMO_RECIPE, None, out, None)


def main() -> None:
    app()
