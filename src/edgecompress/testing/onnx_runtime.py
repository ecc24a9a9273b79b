"""ONNX Runtime helpers for tests: a session together with the ops of the graph it really runs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def optimized_session(path: Path, workdir: Path):
    """(session, Counter of op types in ONNX Runtime's optimized graph): what the runtime executes after its
    constant folding and Q/DQ fusion, to check that a file rewrite keeps the same kernels."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(Path(workdir) / f"{Path(path).stem}.opt.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
