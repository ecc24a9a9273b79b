"""Energy per inference (X3) from MACs by data type and memory traffic, with Horowitz's ISSCC 2014 table."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgecompress.errors import DataError, UnsupportedError
from edgecompress.measure import artifact_energy, estimate_energy
from edgecompress.measure.artifact_graph import onnx_graph
from edgecompress.measure.energy import ACCESS_64BIT_PJ, MAC_PJ, OPERATION_PJ


def test_the_table_is_horowitz_2014():
    assert dict(OPERATION_PJ) == {"int8_add": 0.03, "int32_add": 0.1, "int8_mult": 0.2, "int32_mult": 3.1,
                                  "fp16_add": 0.4, "fp32_add": 0.9, "fp16_mult": 1.1, "fp32_mult": 3.7}
    assert dict(ACCESS_64BIT_PJ) == {"sram_8kb": 10.0, "sram_32kb": 20.0, "sram_1mb": 100.0, "dram": 1300.0}
    assert MAC_PJ["int8"] == pytest.approx(0.3)  # 8-bit multiply + 32-bit accumulate
    assert MAC_PJ["float32"] == pytest.approx(4.6) and MAC_PJ["float16"] == pytest.approx(1.5)


def test_a_million_macs():
    assert estimate_energy({"int8": 1_000_000}).total_pj == pytest.approx(300_000)  # 0.3 µJ
    assert estimate_energy({"float32": 1_000_000}).to_dict()["total_uj"] == pytest.approx(4.6)
    mixed = estimate_energy({"int8": 500_000, "float16": 500_000})
    assert mixed.compute_pj == pytest.approx(500_000 * 0.3 + 500_000 * 1.5)
    assert estimate_energy({"float32": 1}).total_pj / estimate_energy({"int8": 1}).total_pj == pytest.approx(4.6 / 0.3)


def test_memory_traffic_per_byte():
    e = estimate_energy({}, weight_bytes=8, activation_bytes=16, weight_memory="dram", activation_memory="sram_8kb")
    assert (e.weight_memory_pj, e.activation_memory_pj) == (pytest.approx(1300.0), pytest.approx(20.0))
    assert e.total_pj == pytest.approx(1320.0)
    assert e.to_dict()["source"].startswith("Horowitz, ISSCC 2014")


def test_invalid_inputs_name_what_is_allowed():
    with pytest.raises(UnsupportedError, match="no energy figure for MACs in int16; .* covers int8, uint8"):
        estimate_energy({"int16": 10})
    with pytest.raises(UnsupportedError, match="weight_memory 'hbm' .* allowed: 'sram_8kb'"):
        estimate_energy({}, weight_memory="hbm")
    with pytest.raises(DataError, match="must be an integer ≥ 0"):
        estimate_energy({"int8": -1})
    with pytest.raises(DataError, match="activation_bytes"):
        estimate_energy({}, activation_bytes=1.5)


def test_energy_of_an_artifact_graph():
    # x [1,16] → fc1 [16→64] → fc2 [64→32] in float32
    weights = [helper.make_tensor(f"fc{i}.weight", TensorProto.FLOAT, [n, k], np.zeros(n * k, np.float32))
               for i, (k, n) in enumerate([(16, 64), (64, 32)], start=1)]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "fc1.weight"], ["a"], transB=1),
         helper.make_node("Gemm", ["a", "fc2.weight"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=weights)
    model = onnx_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    e = artifact_energy(model, weight_memory="dram", activation_memory="sram_32kb")
    macs = 16 * 64 + 64 * 32
    assert dict(e.macs_by_dtype) == {"float32": macs}
    assert e.weight_bytes_read == 4 * macs  # every weight read once
    assert e.activation_bytes_moved == (64 + 256) + (256 + 128)  # each op reads its input, writes its output
    assert e.total_pj == pytest.approx(macs * 4.6 + 4 * macs * 1300 / 8 + 704 * 20 / 8)
