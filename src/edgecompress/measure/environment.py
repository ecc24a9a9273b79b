"""Where a figure was measured: CPU model and the instruction sets that matter for inference kernels,
core count, and the versions of the software stack."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Instruction sets that change which kernels a runtime picks, in the order they are reported.
RELEVANT_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
    "neon", "asimd", "asimdhp", "asimddp", "fphp", "i8mm", "bf16", "sve", "sve2", "sme",
)
PACKAGES = ("torch", "onnxruntime", "onnx", "onnxscript", "numpy", "edgecompress")
_CPUINFO = Path("/proc/cpuinfo")
_MODEL_KEYS = ("model name", "hardware", "cpu model", "processor")  # x86, then ARM/other kernels
_FLAG_KEYS = ("flags", "features")


def _cpuinfo_fields() -> dict[str, str]:
    """The first value of each key in /proc/cpuinfo (Linux only; empty elsewhere)."""
    try:
        text = _CPUINFO.read_text(errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _cpu_model(fields: dict[str, str]) -> str:
    for key in _MODEL_KEYS:
        value = fields.get(key, "")
        if value and not value.isdigit():  # on x86 "processor" is the core index
            return value
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags(fields: dict[str, str]) -> list[str]:
    present = set()
    for key in _FLAG_KEYS:
        present.update(fields.get(key, "").split())
    amx_extra = sorted(f for f in present if f.startswith("amx_") and f not in RELEVANT_FLAGS)
    return [f for f in RELEVANT_FLAGS if f in present] + amx_extra


def _cpu_count() -> int:
    """Cores this process may run on (its affinity mask), which is what a runtime's thread pool gets."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment() -> dict:
    """cpu, cpu_flags, cpu_count, python, platform, and the version of each of ``PACKAGES`` under its
    own name (None when not installed)."""
    fields = _cpuinfo_fields()
    return {
        "cpu": _cpu_model(fields),
        "cpu_flags": _cpu_flags(fields),
        "cpu_count": _cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **{package: _version(package) for package in PACKAGES},
    }


def cpu_summary(env: dict | None = None) -> str:
    """One line for table footers, e.g. "AMD EPYC · 2 cores · avx2 fma f16c · torch 2.13.0 ·
    onnxruntime 1.32.0". ``env``: an ``environment()`` dict, such as a report's; default: this machine."""
    env = environment() if env is None else env
    parts = [str(env.get("cpu") or "unknown CPU"), f"{env.get('cpu_count', '?')} cores"]
    flags = [f for f in env.get("cpu_flags") or [] if f != "sse4_2"]
    if flags:
        parts.append(" ".join(flags))
    parts += [f"{name} {env[name]}" for name in ("torch", "onnxruntime") if env.get(name)]
    return " · ".join(parts)
