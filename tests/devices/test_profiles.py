"""Device profiles (X5): the packaged set, its frozen versioned schema, and clear errors for bad profiles."""

from pathlib import Path
from typing import get_args

import pydantic
import pytest
import yaml

from edgecompress.devices import (
    ALIASES,
    MemoryLevel,
    Profile,
    ProfileError,
    list_profiles,
    load_profile,
    resolve_target,
    target_names,
)
from edgecompress.errors import EdgeCompressError
from edgecompress.measure.energy import MEMORY_PJ_PER_BYTE
from edgecompress.recipe import TARGET_DEVICES

PROFILES_DIR = Path(__file__).resolve().parents[2] / "src" / "edgecompress" / "devices" / "profiles"
KiB = 1024


def _write(tmp_path, data, name="board.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _valid(**changes) -> dict:
    data = yaml.safe_load((PROFILES_DIR / "cortex_m4.yaml").read_text())
    data.update(name="my_board", **changes)
    return data


def test_every_packaged_profile_loads_and_is_named_after_its_file():
    names = list_profiles()
    assert len(names) >= 7
    assert names == tuple(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
    for name in names:
        profile = load_profile(name)
        assert profile.name == name and profile.version >= 1 and profile.description
        assert profile.model_ram_bytes > 0 and profile.model_flash_bytes > 0


def test_the_device_classes_of_the_spec_are_all_covered():
    classes = {load_profile(n).device_class for n in list_profiles()}
    assert classes == {"mcu", "cortex_a", "phone", "gateway", "jetson", "npu"}


def test_microcontroller_figures():
    m4, m7 = load_profile("cortex_m4"), load_profile("cortex_m7")
    assert (m4.ram_bytes, m4.flash_bytes) == (256 * KiB, 1024 * KiB)
    assert (m7.ram_bytes, m7.flash_bytes) == (512 * KiB, 2048 * KiB)
    for mcu in (m4, m7):
        assert mcu.preferred_precision == "int8" and mcu.runtimes == ("tflite-micro",)
        assert not mcu.weights_in_ram  # weights are read in place from flash


def test_edge_tpu_is_int8_only_with_a_restricted_operator_set():
    tpu = load_profile("edge_tpu")
    assert set(tpu.dtypes) <= {"int8", "uint8", "int32"} and tpu.preferred_precision == "int8"
    assert tpu.formats == ("tflite",)
    assert "CONV_2D" in tpu.operators.tflite and "DEQUANTIZE" not in tpu.operators.tflite
    assert tpu.unsupported_operators("tflite", ["CONV_2D", "DEQUANTIZE", "ADD"]) == ["DEQUANTIZE"]
    assert tpu.unsupported_operators("onnx", ["Conv"]) == ["Conv"]  # no runtime of it loads ONNX
    assert tpu.unsupported_dtypes(["int8", "float32"]) == ["float32"]


def test_operator_names_are_real_tflite_builtins_and_onnx_ops():
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    import onnx

    builtins = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")}
    for name in list_profiles():
        ops = load_profile(name).operators
        if isinstance(ops.tflite, tuple):
            assert set(ops.tflite) <= builtins, (name, set(ops.tflite) - builtins)
        if isinstance(ops.onnx, tuple):
            assert all(onnx.defs.has(op) for op in ops.onnx), name


def test_memory_levels_are_those_of_the_energy_table():
    assert get_args(MemoryLevel) == tuple(MEMORY_PJ_PER_BYTE)


def test_profiles_are_frozen():
    with pytest.raises(pydantic.ValidationError):
        load_profile("cortex_m4").ram_bytes = 1


def test_recipe_targets_are_the_legacy_names_then_the_profiles():
    assert TARGET_DEVICES == target_names() == ("edge_mcu", "edge_gpu", "cloud", *list_profiles())
    assert load_profile("edge_mcu") == load_profile(ALIASES["edge_mcu"])
    assert resolve_target("edge_gpu").device_class == "jetson"
    assert resolve_target("cloud") is None


def test_a_user_profile_loads_from_a_path(tmp_path):
    path = _write(tmp_path, _valid(ram_bytes=64 * KiB, reserved_ram_bytes=8 * KiB))
    profile = load_profile(path)
    assert isinstance(profile, Profile) and profile.name == "my_board" and profile.model_ram_bytes == 56 * KiB
    assert load_profile(str(path)) == profile


def test_a_bad_value_names_the_file_the_field_and_the_allowed_values(tmp_path):
    path = _write(tmp_path, _valid(**{"class": "toaster"}))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message and "class:" in message and "'toaster'" in message
    for allowed in ("'mcu'", "'cortex_a'", "'phone'", "'gateway'", "'jetson'", "'npu'"):
        assert allowed in message
    assert isinstance(info.value, EdgeCompressError)


@pytest.mark.parametrize(("change", "expected"), [
    ({"ram_kb": 256}, "ram_kb: Extra inputs are not permitted"),
    ({"preferred_precision": "int4"}, "preferred_precision: Input should be 'int8', 'fp16' or 'fp32'"),
    ({"ram_bytes": "256KB"}, "ram_bytes: Input should be a valid integer"),
    ({"ram_bytes": 0}, "ram_bytes: Input should be greater than 0"),
    ({"dtypes": ["int8", "int5"]}, "dtypes.1: Input should be 'int2', 'uint2', 'int4', 'uint4', 'int8'"),
    ({"runtimes": ["tvm"]}, "runtimes.0: Input should be 'tflite-micro', 'litert', 'edgetpu'"),
    ({"reserved_ram_bytes": 300 * KiB}, "reserved_ram_bytes (307200) must be below ram_bytes (262144)"),
    ({"runtimes": ["tflite-micro", "onnxruntime"]}, "operators.onnx must list the operators"),
    ({"operators": {"tflite": ["CONV_2D"], "onnx": "*"}}, "operators.onnx is given but no runtime"),
    ({"version": 0}, "version: Input should be greater than or equal to 1"),
])
def test_each_invalid_field_is_reported(tmp_path, change, expected):
    with pytest.raises(ProfileError, match="invalid device profile") as info:
        load_profile(_write(tmp_path, _valid(**change)))
    assert expected in str(info.value)


def test_a_missing_field_is_named(tmp_path):
    data = _valid()
    del data["flash_bytes"]
    with pytest.raises(ProfileError, match="flash_bytes: Field required"):
        load_profile(_write(tmp_path, data))


def test_unknown_names_missing_files_and_non_mappings(tmp_path):
    with pytest.raises(ProfileError, match=r"unknown device profile 'toaster'; allowed: 'cortex_a53_iot'.*'edge_mcu'"):
        load_profile("toaster")
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "absent.yaml")
    with pytest.raises(ProfileError, match="must be a mapping"):
        load_profile(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(_write(tmp_path, "name: [unclosed\n"))
