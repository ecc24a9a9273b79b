import warnings
from pathlib import Path

import pytest
import torch
from torch import nn


def tiny_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> dict[str, Path]:
    """One dynamo export of a tiny MLP, saved twice: weights inline, and weights in external data."""
    out = tmp_path_factory.mktemp("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # raised inside torch.export's pytree, not ours
        program = torch.onnx.export(tiny_mlp(), (torch.randn(1, 16),), dynamo=True, verbose=False)
    inline, external = out / "inline" / "mlp.onnx", out / "external" / "mlp.onnx"
    inline.parent.mkdir()
    external.parent.mkdir()
    program.save(str(inline), external_data=False)
    program.save(str(external), external_data=True)
    return {"inline": inline, "external": external}
