"""The recipe search's decisions, without building: bf16 detection from the CPU's flags, and
which measured step it keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from build.recipe import QuantRecipe
from build.recipe_search import Measured, bf16_support, cheapest_near_best
from service.model.manifest import SearchStep

FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 {extra}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize(
    ("extra", "supported", "reason"),
    [
        ("avx512f avx512_bf16", True, "this CPU has avx512_bf16"),
        ("amx_tile amx_bf16 amx_int8", True, "this CPU has amx_bf16"),
        ("avx512f avx512_vnni", False, "this CPU has neither AVX-512 BF16 nor AMX-BF16 "
         "(no avx512_bf16/amx_bf16 flag)"),
    ],
)  # fmt: skip
def test_bf16_is_detected_from_the_cpu_flags(
    tmp_path: Path, extra: str, supported: bool, reason: str
):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(FLAGS.format(extra=extra))

    assert bf16_support(cpuinfo) == (supported, reason)


def test_bf16_without_cpuinfo_says_why(tmp_path: Path):
    supported, reason = bf16_support(tmp_path / "missing")

    assert not supported
    assert reason.startswith(f"cannot read {tmp_path / 'missing'}")


def _step(label: str, agreement: float, meets: bool) -> Measured:
    stage = "float layers" if "float" in label else "calibration"
    step = SearchStep(stage=stage, label=label, top1_agreement=agreement, meets_gate=meets)
    return Measured(QuantRecipe(), step)


def test_a_slower_recipe_must_win_by_more_than_one_image():
    steps = [
        _step("minmax", 95.5, True),
        _step("percentile", 95.25, True),
        _step("+ 1 in float", 95.75, True),  # within one image (0.25 points of 400) of the best
        _step("+ 2 in float", 95.75, True),
    ]

    assert cheapest_near_best(steps, images=400) is steps[0]
    assert cheapest_near_best(steps, images=10_000) is steps[2]  # 0.01 points: it wins


def test_steps_that_miss_the_gate_are_never_kept():
    steps = [_step("minmax", 99.0, False), _step("+ 1 in float", 90.0, True)]

    assert cheapest_near_best(steps, images=100) is steps[1]
    assert cheapest_near_best(steps[:1], images=100) is None
