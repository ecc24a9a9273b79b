"""Peak RAM of one artifact in its runtime, measured in the process that runs this file.

    python -P path/to/probe.py --runtime onnxruntime --artifact model.onnx --input x.npy --threads 1 --iters 10
    python -m edgecompress.measure.probe ...   (same, but importing edgecompress first loads torch)

Prints one JSON line, in MiB of peak resident memory: baseline_rss_mb (after importing the runtime and
loading the input), peak_rss_mb (after loading the artifact and running it ``iters`` times) and
model_rss_mb (their difference), plus torch_preloaded: true when torch was in memory before the
runtime was imported, which inflates the baseline and peak of a runtime that does not need it.
On failure: {"error": ...} and exit code 1.

It imports only the standard library, numpy and the runtime, so it can run as a plain script.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import numpy as np

RUNTIMES = ("onnxruntime", "torchscript", "litert")  # memory.RUNTIMES repeats these: this file imports nothing of ours


def _vm_hwm_mb() -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None  # not Linux
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def _max_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB. On Linux, ru_maxrss carries over the peak of
    the parent that started us (the kernel keeps it across exec), so VmHWM, which starts afresh with the
    new program, is read instead."""
    hwm = _vm_hwm_mb()
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB elsewhere


def _onnxruntime(artifact: Path, x: np.ndarray, threads: int, iters: int) -> float:
    import onnxruntime as ort

    baseline = _max_rss_mb()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: x}
    for _ in range(iters):
        session.run(None, feeds)
    return baseline


def _torchscript(artifact: Path, x: np.ndarray, threads: int, iters: int) -> float:
    import torch

    torch.set_num_threads(threads)
    tensor = torch.from_numpy(x)
    baseline = _max_rss_mb()
    module = torch.jit.load(str(artifact), map_location="cpu").eval()
    with torch.inference_mode():
        for _ in range(iters):
            module(tensor)
    return baseline


def _litert(artifact: Path, x: np.ndarray, threads: int, iters: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    baseline = _max_rss_mb()
    interpreter = Interpreter(model_path=str(artifact), num_threads=threads)
    detail = interpreter.get_input_details()[0]
    sample = x[:1]  # TFLite artifacts are written at batch 1
    if detail["dtype"] != np.float32:  # integer interface: quantize like the converter's input
        scale, zero_point = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        sample = np.clip(np.round(sample / scale) + zero_point, info.min, info.max).astype(detail["dtype"])
    interpreter.allocate_tensors()
    for _ in range(iters):
        interpreter.set_tensor(detail["index"], sample)
        interpreter.invoke()
    return baseline


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """Bad arguments are reported like any other failure: a JSON line and exit code 1."""

    def error(self, message: str):  # type: ignore[override]
        raise ValueError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgecompress.measure.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", required=True, choices=RUNTIMES)
    parser.add_argument("--artifact", required=True, type=Path)
    parser.add_argument("--input", required=True, type=Path, help="a .npy file with one input batch")
    parser.add_argument("--threads", type=_positive, default=1)
    parser.add_argument("--iters", type=_positive, default=10)
    return parser


def main(argv: list[str] | None = None) -> int:
    torch_preloaded = "torch" in sys.modules
    try:
        args = _parser().parse_args(argv)
        # The input is loaded first so that its bytes fall in the baseline, not in the model's share.
        x = np.load(args.input, allow_pickle=False)
        run = {"onnxruntime": _onnxruntime, "torchscript": _torchscript, "litert": _litert}[args.runtime]
        baseline = run(args.artifact, x, args.threads, args.iters)
        peak = _max_rss_mb()
    except Exception as e:  # a process boundary: every failure becomes one JSON line and exit code 1
        message = f"{type(e).__name__}: {e}"
        print(message, file=sys.stderr)
        print(json.dumps({"error": message}))
        return 1
    print(json.dumps({"baseline_rss_mb": round(baseline, 3), "peak_rss_mb": round(peak, 3),
                      "model_rss_mb": round(peak - baseline, 3), "torch_preloaded": torch_preloaded}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
