"""The schema of a device profile (X5): frozen, unknown keys refused, every number strict. A profile is data
that techniques, exporters and the pipeline consult; it never imports them."""

from __future__ import annotations

from types import MappingProxyType
from typing import Annotated, Literal

from annotated_types import Ge, Gt
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, StringConstraints, model_validator

from ..errors import RecipeError

DeviceClass = Literal["mcu", "cortex_a", "phone", "gateway", "jetson", "npu"]
Precision = Literal["int8", "fp16", "fp32"]
# int4 / uint4 / int2 / uint2: packed low-bit weight containers (ONNX INT4 / INT2 initializers).
DType = Literal["int2", "uint2", "int4", "uint4", "int8", "uint8", "int16", "int32", "int64", "float16", "float32",
                "bool"]
Runtime = Literal["tflite-micro", "litert", "edgetpu", "onnxruntime", "tensorrt"]
# Memory levels of the energy table (measure/energy.py, Horowitz ISSCC 2014); a test checks both agree.
MemoryLevel = Literal["sram_8kb", "sram_32kb", "sram_1mb", "dram"]

# The artifact format each runtime loads.
RUNTIME_FORMATS: MappingProxyType[str, str] = MappingProxyType({
    "tflite-micro": "tflite", "litert": "tflite", "edgetpu": "tflite", "onnxruntime": "onnx", "tensorrt": "onnx"})

Bytes = Annotated[StrictInt, Gt(0)]
OptionalBytes = Annotated[StrictInt, Ge(0)]
Name = Annotated[StrictStr, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
OpName = Annotated[StrictStr, StringConstraints(min_length=1)]
# An explicit list of operator names, or "*": every operator of that format's standard set.
OperatorSet = Literal["*"] | tuple[OpName, ...]


class ProfileError(RecipeError):
    """A device profile is unknown, unreadable or invalid; the message names the file, the field and what is
    allowed."""


class FrozenModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Operators(FrozenModel):
    """Operators the device's runtimes execute, per artifact format (ONNX op types, TFLite builtin names)."""

    onnx: OperatorSet | None = None
    tflite: OperatorSet | None = None


class Profile(FrozenModel):
    """One device. RAM and flash are what the model may use once ``reserved_ram_bytes`` (OS, application,
    stack, runtime state) and ``runtime_flash_bytes`` (the inference runtime's code) are taken off."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Name
    version: Annotated[StrictInt, Ge(1)]  # bump when any figure of the profile changes
    description: Annotated[StrictStr, StringConstraints(min_length=1)]
    device_class: DeviceClass = Field(alias="class")
    ram_bytes: Bytes
    flash_bytes: Bytes  # non-volatile storage the model is kept in (flash, eMMC, SD card)
    reserved_ram_bytes: OptionalBytes = 0
    runtime_flash_bytes: OptionalBytes = 0
    # False where weights are read in place from flash (microcontrollers); True where the runtime loads them
    # into RAM, which then holds weights and activations.
    weights_in_ram: StrictBool
    preferred_precision: Precision
    dtypes: Annotated[tuple[DType, ...], Field(min_length=1)]
    runtimes: Annotated[tuple[Runtime, ...], Field(min_length=1)]
    operators: Operators
    # Where the weights and the activations are read from, for the energy estimate.
    weight_memory: MemoryLevel
    activation_memory: MemoryLevel

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.reserved_ram_bytes >= self.ram_bytes:
            raise ValueError(f"reserved_ram_bytes ({self.reserved_ram_bytes}) must be below ram_bytes "
                             f"({self.ram_bytes})")
        if self.runtime_flash_bytes >= self.flash_bytes:
            raise ValueError(f"runtime_flash_bytes ({self.runtime_flash_bytes}) must be below flash_bytes "
                             f"({self.flash_bytes})")
        for runtime in self.runtimes:
            fmt = RUNTIME_FORMATS[runtime]
            if getattr(self.operators, fmt) is None:
                raise ValueError(f"runtime {runtime!r} runs {fmt} models, so operators.{fmt} must list the "
                                 "operators it supports (or be '*')")
        for fmt in ("onnx", "tflite"):
            if getattr(self.operators, fmt) is not None and fmt not in self.formats:
                raise ValueError(f"operators.{fmt} is given but no runtime of this profile runs {fmt} models "
                                 f"(runtimes: {', '.join(self.runtimes)})")
        return self

    @property
    def formats(self) -> tuple[str, ...]:
        """Artifact formats some runtime of the device loads, in the order of ``runtimes``."""
        return tuple(dict.fromkeys(RUNTIME_FORMATS[r] for r in self.runtimes))

    @property
    def model_ram_bytes(self) -> int:
        """RAM left for the model once the reserved part is taken off."""
        return self.ram_bytes - self.reserved_ram_bytes

    @property
    def model_flash_bytes(self) -> int:
        """Flash left for the model once the runtime's code is taken off."""
        return self.flash_bytes - self.runtime_flash_bytes

    def unsupported_operators(self, fmt: str, op_types: list[str] | tuple[str, ...]) -> list[str]:
        """The operators of ``op_types`` (names in the artifact's format) this device cannot run, sorted; every
        one of them when no runtime of the device loads ``fmt``."""
        allowed = getattr(self.operators, fmt, None) if fmt in self.formats else ()
        if allowed == "*":
            return []
        return sorted(set(op_types) - set(allowed or ()))

    def unsupported_dtypes(self, dtypes: list[str] | tuple[str, ...]) -> list[str]:
        """The element types of ``dtypes`` this device's runtimes do not compute with, sorted."""
        return sorted(set(dtypes) - set(self.dtypes))
