"""Does the exported artifact fit the recipe's target device (X5)? Checked on the artifact itself, before anyone
flashes it: weights in flash, peak activations in RAM (a tensor arena plan), the format, operators and element
types the device's runtimes support, and an energy estimate per inference.

On a device with TFLite Micro the arena follows its conventions (16-byte alignment, inputs freed after their
last use); elsewhere LiteRT's (64-byte alignment, inputs kept for the whole run), which also stand in for ONNX
Runtime and TensorRT, whose planners are not modelled."""

from __future__ import annotations

import os
from pathlib import Path

from ..devices import Profile, load_profile, resolve_target
from ..errors import MissingDependencyError, UnsupportedError
from ..measure.arena import plan_arena
from ..measure.artifact_graph import read_graph
from ..measure.energy import artifact_energy

_PRECISION_DTYPES = {"int8": {"int8", "uint8"}, "fp16": {"float16"}, "fp32": {"float32"}}


def _b(n: int) -> str:
    return f"{n:,} B"


def check_device(artifact: str | os.PathLike[str], profile: Profile | str | os.PathLike[str]) -> dict:
    """The fit of ``artifact`` (.onnx / .tflite) on ``profile`` (a Profile, a packaged name or a YAML path).

    ``fits``: weights + the runtime's code within flash, and the activation arena + reserved RAM (+ the weights
    where the runtime loads them into RAM) within RAM. ``supported``: a runtime of the device loads the format,
    and it runs every operator and element type. ``checks`` lists each figure against its limit; ``reasons``
    says in words why each failed check failed."""
    profile = load_profile(profile)
    path = Path(artifact)
    graph = read_graph(path)
    micro = "tflite-micro" in profile.runtimes
    plan = plan_arena(graph, alignment=16 if micro else 64, keep_inputs=not micro)
    weights = graph.constant_bytes
    flash_needed = weights + profile.runtime_flash_bytes
    weights_in_ram = weights if profile.weights_in_ram else 0
    ram_needed = plan.arena_bytes + profile.reserved_ram_bytes + weights_in_ram
    checks, reasons = [], []

    def check(name: str, value, limit, ok: bool, reason: str) -> None:
        checks.append({"name": name, "value": value, "limit": limit, "ok": ok})
        if not ok:
            reasons.append(reason)

    check("flash_bytes", flash_needed, profile.flash_bytes, flash_needed <= profile.flash_bytes,
          f"flash: {_b(flash_needed)} needed (weights {_b(weights)} + runtime {_b(profile.runtime_flash_bytes)}) "
          f"> {_b(profile.flash_bytes)} on {profile.name}")
    in_ram = f" + weights loaded into RAM {_b(weights_in_ram)}" if weights_in_ram else ""
    peak = plan.peak_op.label if plan.peak_op else "none"
    check("ram_bytes", ram_needed, profile.ram_bytes, ram_needed <= profile.ram_bytes,
          f"RAM: {_b(ram_needed)} needed (activation arena {_b(plan.arena_bytes)}, peak at {peak}, + reserved "
          f"{_b(profile.reserved_ram_bytes)}{in_ram}) > {_b(profile.ram_bytes)} on {profile.name}")
    format_ok = graph.format in profile.formats
    check("format", graph.format, list(profile.formats), format_ok,
          f"format: the artifact is {graph.format}, but {profile.name} runs {', '.join(profile.formats)} models "
          f"({', '.join(profile.runtimes)})")
    if format_ok:
        ops = profile.unsupported_operators(graph.format, graph.op_types())
        check("operators", ops, f"operators.{graph.format} of {profile.name}", not ops,
              f"operators: {', '.join(ops)} not supported by {profile.name}")
    dtypes = profile.unsupported_dtypes(sorted({*graph.activation_dtypes(), *graph.weight_dtypes()}))
    check("dtypes", dtypes, list(profile.dtypes), not dtypes,
          f"element types: {', '.join(dtypes)} not supported by {profile.name} (allowed: {', '.join(profile.dtypes)})")
    notes = []
    computes = sorted({op.compute_dtype for op in graph.ops if op.macs})
    if computes and not set(computes) <= _PRECISION_DTYPES[profile.preferred_precision]:
        notes.append(f"{profile.name} prefers {profile.preferred_precision}; this artifact computes in "
                     f"{', '.join(computes)}")
    try:
        energy = artifact_energy(graph, weight_memory=profile.weight_memory,
                                 activation_memory=profile.activation_memory).to_dict()
    except UnsupportedError as e:
        energy = None
        notes.append(f"no energy estimate: {e}")
    by_name = {c["name"]: c["ok"] for c in checks}
    return {
        "profile": profile.name, "profile_version": profile.version, "artifact": str(path), "format": graph.format,
        "flash_bytes": flash_needed, "peak_ram_bytes": ram_needed, "weights_bytes": weights,
        "arena": plan.to_dict(),
        "fits": by_name["flash_bytes"] and by_name["ram_bytes"],
        "supported": all(ok for name, ok in by_name.items() if name not in ("flash_bytes", "ram_bytes")),
        "checks": checks, "reasons": reasons, "notes": notes, "energy": energy,
    }


def device_section(target_device: str, artifact: str | os.PathLike[str], *,
                   baseline: str | os.PathLike[str] | None = None) -> dict:
    """The report's ``device`` section for the recipe's ``optimization.target_device``: ``check_device`` of the
    compressed artifact, plus the baseline's flash / RAM / fits for comparison. A target without limits
    (``cloud``) or an artifact the estimate cannot read (TorchScript) is reported as not checked, with why."""
    profile = resolve_target(target_device)
    if profile is None:
        return {"target_device": target_device, "profile": None, "fits": None, "supported": None,
                "not_checked": f"{target_device!r} has no device profile, so there are no limits to check"}
    try:
        section = {"target_device": target_device, **check_device(artifact, profile)}
        if baseline is not None:
            base = check_device(baseline, profile)
            section["baseline"] = {k: base[k] for k in ("flash_bytes", "peak_ram_bytes", "fits", "supported")}
    except (UnsupportedError, MissingDependencyError) as e:
        return {"target_device": target_device, "profile": profile.name, "fits": None, "supported": None,
                "not_checked": str(e)}
    return section
