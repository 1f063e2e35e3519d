"""Which int8 file a CPU serves (service/model/int8_weights.py): 8-bit weights where VNNI/AMX
accumulate in int32,
7-bit weights on x86 without them, and the loader really serving that file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from service.inference.classifier import Classifier
from service.model import int8_weights as isa
from service.model.manifest import file_entry, load_manifest, write_manifest
from service.observability.metrics import Metrics
from service.settings import Settings
from tests.unit.tiny import colour_png, tiny_model, write_tiny_artifacts

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 fma {extra}
bogomips\t: 4000.00

processor\t: 1
flags\t\t: fpu sse2 avx2 fma {extra}
"""


@pytest.mark.parametrize(
    ("extra", "machine", "file"),
    [
        ("", "x86_64", "int8_w7"),  # AVX2 only: vpmaddubsw saturates
        ("avx512f avx512bw", "x86_64", "int8_w7"),  # AVX-512 without VNNI saturates too
        ("avx512f avx512_vnni", "x86_64", "int8"),
        ("avx_vnni", "x86_64", "int8"),  # the AVX2-width VNNI of newer Intel/AMD cores
        ("amx_int8 amx_tile", "x86_64", "int8"),
        ("", "aarch64", "int8"),  # Arm's dot products accumulate in int32
    ],
)
def test_the_file_follows_the_cpus_int8_instructions(
    tmp_path: Path, extra: str, machine: str, file: str
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    flags = isa.cpu_flags(cpuinfo)
    assert {"avx2", "fma"} <= flags
    assert ("int8_w7" if isa.int8_saturates(flags, machine) else "int8") == file


def test_without_cpuinfo_an_x86_cpu_gets_the_weights_that_cannot_saturate(tmp_path: Path) -> None:
    flags = isa.cpu_flags(tmp_path / "missing")
    assert flags == frozenset()
    assert isa.int8_saturates(flags, "AMD64") is True


def _settings(artifacts: Path) -> Settings:
    return Settings(artifacts_dir=artifacts, provider="cpu", intra_op_threads=1)


async def _top1_and_file(artifacts: Path) -> tuple[int, str]:
    instance = Classifier(_settings(artifacts), Metrics())
    await instance.start()
    try:
        result = await instance.classify(colour_png(427), top_k=1, content_type="image/png")
        return result.predictions[0].class_index, instance.meta.model_file
    finally:
        await instance.stop()


@pytest.fixture
def two_files(tmp_path: Path) -> Path:
    """Tiny artifacts whose 7-bit file is a different model (classes shuffled), so which file
    answered shows in the answer itself."""
    model_dir = write_tiny_artifacts(tmp_path / "tiny")
    tiny_model(model_dir / "model.int8-w7.onnx", permute=True)
    manifest = load_manifest(model_dir)
    files = {**manifest.files, "int8_w7": file_entry(model_dir, model_dir / "model.int8-w7.onnx")}
    write_manifest(model_dir, manifest.model_copy(update={"files": files}))
    return tmp_path


@pytest.mark.anyio
@pytest.mark.parametrize("exact", ["int8", "int8_w7"])
async def test_the_server_loads_the_file_its_cpu_computes_exactly(
    two_files: Path, monkeypatch: pytest.MonkeyPatch, exact: str
) -> None:
    patched: Callable[[], str] = lambda: exact  # noqa: E731
    monkeypatch.setattr(isa, "exact_int8_file", patched)
    top1, file = await _top1_and_file(two_files)
    assert file == exact
    assert (top1 == 427) is (exact == "int8")  # the shuffled 7-bit model answers otherwise


@pytest.mark.anyio
async def test_a_model_built_without_the_7_bit_file_serves_its_int8_file_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = write_tiny_artifacts(tmp_path / "tiny")
    manifest = load_manifest(model_dir)
    files = {k: v for k, v in manifest.files.items() if k != "int8_w7"}
    write_manifest(model_dir, manifest.model_copy(update={"files": files}))
    monkeypatch.setattr(isa, "exact_int8_file", lambda: "int8_w7")
    with caplog.at_level(logging.WARNING, logger="service.model.loading"):
        top1, file = await _top1_and_file(tmp_path)
    assert (top1, file) == (427, "int8")
    assert "lists no such file: serving int8" in caplog.text
