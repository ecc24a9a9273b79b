"""compress(model, recipe, data=...): plan → baseline → stages in order → export → measure → report."""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import Progress
from torch import nn

from .. import __version__
from ..datasets import as_dataset
from ..errors import DataError, EdgeCompressWarning
from ..export import Artifact
from ..fileio import write_json_atomic
from ..measure import check_targets, count_flops, environment, ratios
from ..measure.html_report import write_html_report
from ..recipe import Recipe, load_recipe
from ..security.provenance import register_compression
from ..training import predict
from .device_check import device_section
from .measuring import MeasureSettings, measure_artifact
from .plan import Plan, QuantizeStep, make_plan
from .sealing import dataset_sha256, record_failed_run, seal_run
from .stages import RunContext, run_step

__all__ = ["compress", "CompressionResult", "MeasureSettings"]


@dataclass
class CompressionResult:
    model: nn.Module  # the compressed model in PyTorch (the quantized representation when quantized)
    report: dict
    artifacts: list[Artifact] = field(default_factory=list)
    out_dir: Path | None = None


def _example_inputs(model: nn.Module, given, dataset) -> tuple[torch.Tensor, ...]:
    if given is not None:
        return tuple(given) if isinstance(given, (tuple, list)) else (given,)
    if callable(getattr(model, "example_inputs", None)):
        return tuple(model.example_inputs())
    return (dataset.x_test[:1],)


def _check_model_runs(model: nn.Module, dataset) -> None:
    # An odd batch of 3 also catches programs exported with a fixed batch size.
    try:
        with torch.no_grad():
            model.eval()(dataset.x_test[:3])
    except Exception as e:
        raise DataError(f"the model does not accept the data: a batch of shape {tuple(dataset.x_test[:3].shape)} "
                        f"fails with {type(e).__name__}: {str(e)[:300]}. (A torch.export program must be exported "
                        "with a dynamic batch dimension: dynamic_shapes=({0: torch.export.Dim('batch')},))") from None
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise DataError(f"the model's {name!r} contains NaN or Inf values")


def _sha256_of_state(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def compress(model: nn.Module, recipe, *, data, example_inputs=None, out_dir: str | Path | None = None,
             eval_data=None, progress: Progress | None = None, measure: MeasureSettings | None = None
             ) -> CompressionResult:
    """Compress ``model`` (left untouched) as ``recipe`` says, export the result, and measure both the
    original and the compressed artifact on the runtime they ship on. ``recipe``: a Recipe, a path, a
    parsed YAML dict or 'builtin:NAME'. ``data``: a Dataset, a data spec string, or an iterable of
    (inputs, labels) / inputs batches. A run that fails is recorded in the audit log too, then re-raised."""
    try:
        return _compress(model, recipe, data=data, example_inputs=example_inputs, out_dir=out_dir,
                         eval_data=eval_data, progress=progress, measure=measure)
    except Exception as error:
        record_failed_run(_sha256_of_state(model) if isinstance(model, nn.Module) else None, recipe, error)
        raise


def _compress(model: nn.Module, recipe, *, data, example_inputs, out_dir, eval_data, progress, measure
              ) -> CompressionResult:
    recipe: Recipe = load_recipe(recipe)
    dataset = as_dataset(data, eval_data=eval_data)
    plan: Plan = make_plan(recipe, dataset)  # refuses unsupported work before any of it starts
    for w in plan.warnings:
        warnings.warn(w, EdgeCompressWarning, stacklevel=2)
    settings = measure or MeasureSettings()
    original = copy.deepcopy(model).eval()
    example_inputs = _example_inputs(original, example_inputs, dataset)
    _check_model_runs(original, dataset)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="edgecompress-"))
    out.mkdir(parents=True, exist_ok=True)
    kd = recipe.training.distill_fine_tuning
    ctx = RunContext(dataset, original, recipe.training.batch_size, recipe.training.seed, example_inputs, progress,
                     distill=None if kd is None else (kd.temperature, kd.alpha))
    exporter = plan.exporter
    source_sha256 = _sha256_of_state(original)
    metadata = {"edgecompress_version": __version__, "source_model_sha256": source_sha256,
                "recipe": json.dumps(recipe.to_dict(), sort_keys=True)} if recipe.output.include_metadata else {}
    stages_report = []

    started = time.perf_counter()
    baseline_artifact = exporter.export(original, example_inputs, out / f"baseline{exporter.suffix}",
                                        scheme="fp32", metadata=metadata)
    reference = predict(original, dataset.x_test)
    baseline, baseline_parity = measure_artifact(
        exporter, baseline_artifact, exported_model=original, float_model=original, reference_logits=reference,
        ctx=ctx, settings=settings, label="baseline")
    stages_report.append({"name": "baseline", "seconds": round(time.perf_counter() - started, 3)})

    current, float_model = original, original
    for step in plan.steps:
        started = time.perf_counter()
        current, info = run_step(current, step, ctx)
        if not isinstance(step, QuantizeStep):
            float_model = current
        stages_report.append({"name": step.name, "seconds": round(time.perf_counter() - started, 3), **info})

    started = time.perf_counter()
    artifact = exporter.export(current, example_inputs, out / f"model{exporter.suffix}", scheme=plan.scheme,
                               metadata=metadata)
    compressed, parity = measure_artifact(
        exporter, artifact, exported_model=current, float_model=float_model, reference_logits=reference, ctx=ctx,
        settings=settings, label="compressed")
    stages_report.append({"name": "export", "seconds": round(time.perf_counter() - started, 3),
                          "format": exporter.name, "scheme": plan.scheme})

    opt = recipe.optimization
    targets = check_targets(compressed, max_size_mb=opt.max_size_mb, max_latency_ms=opt.max_latency_ms,
                            min_accuracy=opt.min_accuracy, target_flops=opt.target_flops,
                            flops=count_flops(float_model, example_inputs))
    compressed_dict = compressed.to_dict()
    compressed_dict["simulation_accuracy"] = parity.get("simulation_accuracy")
    report = {
        "edgecompress_version": __version__,
        "environment": environment(),
        "recipe": recipe.to_dict(),
        "data": {"name": dataset.name, "train": int(dataset.x_train.shape[0]), "test": int(dataset.x_test.shape[0]),
                 "labelled": dataset.labelled, "sample_shape": list(dataset.sample_shape)},
        "baseline": baseline.to_dict(),
        "compressed": compressed_dict,
        "ratios": ratios(baseline, compressed),
        "targets": targets,
        "stages": stages_report,
        "artifacts": [
            {"format": a.format, "role": role, "path": str(a.path), "scheme": a.scheme,
             "size_bytes": m.size_bytes, "sha256": _file_sha256(a.path), "parity": p}
            for a, m, p, role in ((baseline_artifact, baseline, baseline_parity, "baseline"),
                                  (artifact, compressed, parity, "compressed"))],
        "warnings": list(plan.warnings),
    }
    # X5: does the artifact fit the target device (flash, RAM arena, operators), before anyone flashes it
    report["device"] = device_section(opt.target_device, artifact.path, baseline=baseline_artifact.path)
    # S4: the artifact and its provenance into the registry ($EDGECOMPRESS_REGISTRY or the user data folder)
    report["registry"] = register_compression(report, dataset, parent_sha256=source_sha256)
    write_json_atomic(out / "report.json", report)
    write_html_report(report, out / "report.html")  # R2: the same report as one self-contained page
    seal_run(out, recipe, [baseline_artifact, artifact], report,  # manifest.json + one audit log entry
             inputs={"model": source_sha256, "data": dataset_sha256(dataset)})
    return CompressionResult(current, report, [baseline_artifact, artifact], out)
