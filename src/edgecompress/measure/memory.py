"""Peak RAM at inference, measured in a fresh process so that this process's torch does not count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ExportError, RecipeError, UnsupportedError

_STDERR_TAIL = 2000
# Located, not imported: importing it with the package makes ``python -m edgecompress.measure.probe``
# warn that the module is already loaded.
_PROBE = Path(__file__).with_name("probe.py")
RUNTIMES = ("onnxruntime", "torchscript", "litert")  # the probe's --runtime choices


def _probe_command(runtime: str, artifact: Path, input_path: Path, threads: int, iters: int) -> list[str]:
    # Run probe.py as a plain script: ``-m edgecompress.measure.probe`` would import the edgecompress
    # package, which loads torch (~200 MB) before the runtime and would inflate every figure.
    # ``-P`` keeps the measure folder itself off sys.path.
    return [sys.executable, "-P", str(_PROBE.resolve()), "--runtime", runtime,
            "--artifact", str(artifact), "--input", str(input_path), "--threads", str(threads),
            "--iters", str(iters)]


def peak_rss(runtime: str, artifact: str | os.PathLike[str], inputs: np.ndarray, *, threads: int = 1,
             iters: int = 10, timeout: float = 120) -> dict:
    """Load ``artifact`` in ``runtime`` ("onnxruntime" or "torchscript") in a new Python process, run it
    ``iters`` times on ``inputs`` with ``threads`` threads, and return the probe's peak-resident-memory
    figures in MiB (VmHWM on Linux, see probe.py): baseline_rss_mb (interpreter, runtime and input), peak_rss_mb, and
    model_rss_mb = peak − baseline, plus torch_preloaded."""
    if runtime not in RUNTIMES:
        raise UnsupportedError(f"peak RSS can be measured for runtimes {list(RUNTIMES)}, got {runtime!r}")
    for name, value in (("threads", threads), ("iters", iters)):
        if not isinstance(value, int) or value < 1:
            raise RecipeError(f"{name} must be an integer ≥ 1, got {value!r}")
    artifact = Path(artifact)
    if not artifact.exists():
        raise ExportError(f"artifact not found: {artifact}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # thread pools also cost memory (stacks)
    with tempfile.TemporaryDirectory(prefix="edgecompress-probe-") as tmp:
        input_path = Path(tmp) / "input.npy"
        np.save(input_path, np.ascontiguousarray(np.asarray(inputs)), allow_pickle=False)
        command = _probe_command(runtime, artifact, input_path, threads, iters)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise ExportError(f"the memory probe for {artifact} ({runtime}) did not finish in {timeout} s") from None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {}
    if done.returncode != 0 or "peak_rss_mb" not in result:
        raise ExportError(f"the memory probe for {artifact} ({runtime}) failed with exit code {done.returncode}: "
                          f"{result.get('error', 'no result')}\n{done.stderr[-_STDERR_TAIL:]}")
    return result
