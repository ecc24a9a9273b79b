"""The device check (X5): the pipeline reports whether the exported artifact fits the recipe's target device,
with each failed limit as value vs limit, before anyone flashes it."""

import json

import numpy as np
import pytest
import torch
import yaml
from onnx import TensorProto, helper, save
from torch import nn

from edgecompress import Dataset, compress
from edgecompress.devices import load_profile
from edgecompress.pipeline.device_check import check_device, device_section


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 1, 16, generator=g)
    y = (x.mean(dim=(1, 2)) > 0).long()
    return Dataset("synthetic", x[:200], y[:200], x[200:], y[200:])


def _wide_mlp():
    # 311,298 parameters: 1.25 MB in float32 (over a Cortex-M4's 1 MB flash), about 0.43 MB in int8
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16384), nn.ReLU(), nn.Linear(16384, 2))


def test_compress_reports_the_fit_on_the_target_device(tmp_path, fast_measure):
    recipe = {"quantization": {"enabled": True, "type": "int8", "calibration_samples": 64},
              "optimization": {"target_device": "cortex_m4"}, "output": {"format": "onnx"}}
    report = compress(_wide_mlp(), recipe, data=_data(), out_dir=tmp_path, measure=fast_measure).report
    device = report["device"]
    assert device["target_device"] == device["profile"] == "cortex_m4" and device["profile_version"] == 1
    # the float baseline does not fit the flash; the int8 artifact does
    assert device["baseline"]["fits"] is False and device["baseline"]["flash_bytes"] > 1024 * 1024
    assert device["fits"] is True and device["flash_bytes"] < 1024 * 1024
    checks = {c["name"]: c for c in device["checks"]}
    assert checks["flash_bytes"]["limit"] == 1024 * 1024 and checks["ram_bytes"]["limit"] == 256 * 1024
    assert checks["flash_bytes"]["value"] == device["weights_bytes"] + 65536  # + TFLite Micro's code
    # the peak is the first Linear (module "1"): its 16 quantized inputs and 16,384 8-bit outputs
    assert device["arena"]["peak_op"] == "Gemm 1" and device["arena"]["peak_live_bytes"] == 16 + 16384
    # ONNX is not what a Cortex-M4 runs, nor are the recipe's default uint8 activations (ONNX Runtime's fast
    # path): both reported, and the memory figures are still given
    assert device["supported"] is False
    assert device["reasons"] == [
        "format: the artifact is onnx, but cortex_m4 runs tflite models (tflite-micro)",
        "element types: uint8 not supported by cortex_m4 (allowed: int8, int16, int32, float32)"]
    assert device["energy"]["macs_by_dtype"] == {"uint8": 16 * 16384 + 16384 * 2}
    assert json.loads((tmp_path / "report.json").read_text())["device"] == json.loads(json.dumps(device))


def _onnx(tmp_path, nodes, initializers, name="model.onnx"):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=initializers)
    path = tmp_path / name
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    return path


def test_a_model_too_big_for_a_cortex_m4_is_reported_with_each_reason(tmp_path):
    # Gemm to 20,000 outputs: 1.28 MB of float32 weights and an 80 KB output, then Tile × 4 to 320 KB
    w = helper.make_tensor("fc.weight", TensorProto.FLOAT, [20000, 16], np.zeros(320000, np.float32))
    repeats = helper.make_tensor("repeats", TensorProto.INT64, [2], [1, 4])
    path = _onnx(tmp_path, [helper.make_node("Gemm", ["x", "fc.weight"], ["h"], transB=1),
                            helper.make_node("Tile", ["h", "repeats"], ["y"])], [w, repeats])
    result = check_device(path, "cortex_m4")
    assert result["fits"] is False
    flash, ram = result["reasons"][:2]
    assert flash == "flash: 1,345,552 B needed (weights 1,280,016 B + runtime 65,536 B) > 1,048,576 B on cortex_m4"
    assert ram == ("RAM: 432,768 B needed (activation arena 400,000 B, peak at Tile #1, + reserved 32,768 B) "
                   "> 262,144 B on cortex_m4")
    assert {c["name"]: c["ok"] for c in result["checks"]} == {
        "flash_bytes": False, "ram_bytes": False, "format": False, "dtypes": True}
    # a Cortex-M7 (2 MB flash, 512 KB RAM) holds it
    m7 = check_device(path, "cortex_m7")
    assert m7["fits"] is True and m7["peak_ram_bytes"] == 400_000 + 32768
    # on a board whose runtime loads weights into RAM, they count there too
    gateway = check_device(path, "edge_gateway")
    assert gateway["fits"] is True and gateway["supported"] is True
    assert gateway["peak_ram_bytes"] == gateway["arena"]["arena_bytes"] + 1073741824 + 1_280_016


def test_a_user_profile_file_is_a_target(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(load_profile("cortex_m4").model_dump(by_alias=True)))
    data.update(name="tiny_board", ram_bytes=1024, reserved_ram_bytes=512)
    board = tmp_path / "tiny_board.yaml"
    board.write_text(yaml.safe_dump(data))
    w = helper.make_tensor("fc.weight", TensorProto.FLOAT, [256, 16], np.zeros(4096, np.float32))
    path = _onnx(tmp_path, [helper.make_node("Gemm", ["x", "fc.weight"], ["y"], transB=1)], [w])
    result = check_device(path, board)
    assert result["profile"] == "tiny_board" and result["fits"] is False
    assert result["reasons"][0].startswith("RAM: 1,600 B needed (activation arena 1,088 B, peak at Gemm fc")


def test_targets_without_a_profile_or_artifacts_without_a_graph_are_not_checked(tmp_path):
    cloud = device_section("cloud", tmp_path / "any.onnx")
    assert cloud["fits"] is None and "no device profile" in cloud["not_checked"]
    script = tmp_path / "model.pt"
    script.write_bytes(b"not read")
    torchscript = device_section("edge_mcu", script)
    assert torchscript["profile"] == "cortex_m4" and torchscript["fits"] is None
    assert ".onnx and .tflite" in torchscript["not_checked"]


@pytest.fixture(scope="module")
def int8_tflite(tmp_path_factory):
    pytest.importorskip("litert_torch")
    from edgecompress.testing.exports import int8_tflite
    from edgecompress.testing.tiny_models import TinyConv1d

    torch.manual_seed(0)  # the model's initial weights
    return int8_tflite(TinyConv1d(), tmp_path_factory.mktemp("device") / "conv1d_int8.tflite")


def test_an_int8_tflite_model_fits_and_runs_on_a_cortex_m4(int8_tflite):
    result = check_device(int8_tflite, "edge_mcu")
    assert result["profile"] == "cortex_m4" and result["fits"] is True and result["supported"] is True
    assert result["reasons"] == [] and result["notes"] == []
    assert result["energy"]["macs_by_dtype"] == {"int8": 16 * 8 * 3 + 8 * 16 * 8 * 3 + 16 * 8 * 4}


def test_the_edge_tpu_refuses_the_float_interface_of_an_int8_model(int8_tflite):
    result = check_device(int8_tflite, "edge_tpu")
    assert result["fits"] is True and result["supported"] is False
    assert result["reasons"] == [
        "operators: DEQUANTIZE not supported by edge_tpu",
        "element types: float32 not supported by edge_tpu (allowed: int8, uint8, int32)"]
    jetson = check_device(int8_tflite, "jetson_orin_nano")
    assert jetson["reasons"] == ["format: the artifact is tflite, but jetson_orin_nano runs onnx models "
                                 "(tensorrt, onnxruntime)"]
    assert jetson["notes"] == ["jetson_orin_nano prefers fp16; this artifact computes in int8"]
