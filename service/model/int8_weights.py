"""Which int8 weights this CPU computes exactly.

x86 CPUs without VNNI multiply uint8 activations by int8 weights with ``vpmaddubsw``, which adds
two u8 x s8 products into an int16 that saturates: with weights over the full int8 range a
quantized network then computes something else. Measured on an AVX2-only AMD EPYC:
EfficientNet-Lite0 int8 top-1 83.75 % on the CPU provider and 81.50 % on OpenVINO, against
87.25 % for the same file computed exactly, 87.75 % in fp32. Weights in 7 bits cannot saturate
(the ONNX Runtime quantization guide's ``reduce_range``), but they cost precision where nothing
saturates (top-1 agreement with fp32 97.25 -> 94.75 % computed exactly). So the build writes both
files and the server takes, per machine, the one its CPU computes exactly: 8-bit weights with
VNNI or AMX (int32 accumulation), 7-bit weights on x86 without them. Other architectures (Arm's
dot-product instructions accumulate in int32) take the 8-bit file.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path
from typing import Literal

WeightBits = Literal["int8", "int8_w7"]  # the manifest's file keys
# Any of these and the CPU provider's and OpenVINO's u8s8 kernels accumulate in int32.
EXACT_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_X86 = frozenset({"x86_64", "amd64", "i386", "i686"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first processor's feature flags (Linux); empty where /proc/cpuinfo is not there."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def int8_saturates(flags: frozenset[str], machine: str) -> bool:
    """True where full-range int8 weights saturate: x86 without VNNI or AMX. Without flags
    (not Linux) an x86 CPU is assumed to saturate: 7-bit weights are safe on any CPU."""
    return machine.lower() in _X86 and not flags & EXACT_INT8_FLAGS


@cache
def exact_int8_file() -> WeightBits:
    """The int8 file this machine computes exactly (read once: the CPU does not change)."""
    return "int8_w7" if int8_saturates(cpu_flags(), platform.machine()) else "int8"


def describe(file: WeightBits) -> str:
    return (
        "8-bit weights (this CPU has VNNI/AMX or is not x86: int32 accumulation)"
        if file == "int8"
        else "7-bit weights (x86 without VNNI: full-range int8 weights would saturate)"
    )
