"""`edgecompress compress` and `edgecompress demo`."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from ..errors import EdgeCompressError, EdgeCompressWarning
from .common import app, console, errors, guarded

DEMO_MODEL = "builtin:mnist1d_cnn"
DEMO_RECIPE = "builtin:default"


def _run_compress(model_spec: str, recipe: str, data: str | None, out: Path, weights: Path | None,
                  trust_pickle: bool = False, pub: Path | None = None) -> None:
    from ..measure import render_summary
    from ..model_io import check_output_folder, load_model
    from ..pipeline import compress
    from ..progress import make_progress

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EdgeCompressWarning)
        check_output_folder(out, model_spec, weights)
        if pub is not None:
            _verify_inputs(pub, model_spec, weights)
        with make_progress() as progress:
            loaded = load_model(model_spec, weights=weights, progress=progress, trust_pickle=trust_pickle)
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


def _verify_inputs(pub: Path, model_spec: str, weights: Path | None) -> None:
    """--pub: the model and weights files must belong to a folder signed by that key, checked before loading."""
    from ..security import verify_file

    files = [Path(p) for p in (model_spec, weights) if p is not None and Path(p).is_file()]
    if not files:
        raise EdgeCompressError(f"--pub verifies model files, and {model_spec} is not a file (builtin and "
                                "package.module:factory models are code; sign their --weights folder instead)")
    for f in files:
        verify_file(f, pub)


@app.command("compress")
def compress_cmd(
    model: str = typer.Argument(..., help="builtin:NAME | package.module:factory | model.pt2"),
    recipe: str = typer.Option(DEMO_RECIPE, "--recipe", "-r",
                               help="recipe YAML file or builtin:default / builtin:design"),
    data: str = typer.Option(None, "--data", "-d",
                             help="builtin:mnist1d | builtin:digits | data.npz | module:function"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="folder for the artifacts and report.json"),
    weights: Path = typer.Option(None, "--weights", "-w", help=".safetensors weights for a module:factory model"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle",
                                      help="also accept a pickle-based .pt/.pth/.pkl/.bin MODEL or --weights file "
                                           "you trust; it is read with torch's weights-only unpickler, which "
                                           "never calls a function the file names"),
    pub: Path = typer.Option(None, "--pub", help="load MODEL / --weights only from a folder signed by this "
                                                 "Ed25519 public key (edgecompress sign), verified first"),
) -> None:
    """Compress MODEL as the recipe says, export it, measure it on its runtime, and write a report."""
    guarded(_run_compress, model, recipe, data, out, weights, trust_pickle, pub)


@app.command()
def demo(out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="folder for the artifacts and report")) -> None:
    """Train (once, cached) the MNIST-1D CNN, prune and quantize it to INT8 ONNX, and measure it."""
    guarded(_run_compress, DEMO_MODEL, DEMO_RECIPE, None, out, None)
