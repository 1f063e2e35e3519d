"""The whole build, end to end, into temporary directories (slow tier), and the accuracy gate
failing on a deliberately damaged int8 model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from build import data
from build.__main__ import main
from build.pipeline import INT8_NAMES
from build.sessions import run, session
from service.inference.preprocess import PreprocessSpec, preprocess
from service.model import int8_weights as isa
from service.model.manifest import load_labels, load_manifest, verified_model_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lite0_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    if not (data_dir / data.IMAGENET_SUBDIR).is_dir():
        pytest.skip(f"no labeled set under {data_dir} (set IMGCLS_DATA_DIR)")
    out = tmp_path_factory.mktemp("artifacts")
    code = main(["--model", "efficientnet_lite0", "--out", str(out), "--data-dir", str(data_dir)])
    assert code == 0
    return out / "efficientnet_lite0"


def test_end_to_end_build_efficientnet_lite0(lite0_dir: Path):
    manifest = load_manifest(lite0_dir)
    ev = manifest.evaluation

    assert ev is not None
    assert (ev.images, ev.small, ev.gate_applicable, ev.passed) == (400, False, True, True)
    assert ev.fp32.top1 > 80.0  # EfficientNet-Lite0 scores ~88% on these images
    assert set(ev.int8_providers) == {"cpu", "openvino"}
    for result in ev.int8_providers.values():
        assert ev.fp32.top1 - result.int8.top1 <= 1.5
        assert result.top1_agreement > 90.0
    assert manifest.export.max_abs_logit_diff < 1e-3
    assert manifest.export.diff_images == 16
    assert manifest.quantization.calibration_images == 100
    assert manifest.model.weights_sha256 is not None
    assert manifest.model.weights_sha256.startswith("57934424")


def test_built_int8_model_classifies_a_cat(lite0_dir: Path):
    manifest = load_manifest(lite0_dir)
    labels = load_labels(lite0_dir, manifest)
    chelsea = data.package_split().evaluation[0].path
    spec = PreprocessSpec(manifest.input.resize_size, manifest.input.crop_size)
    pixels = preprocess(chelsea.read_bytes(), spec)[None]

    logits = run(session(verified_model_path(lite0_dir, manifest, "int8")), pixels)

    assert labels[int(np.argmax(logits))] in {"tabby", "tiger cat", "Egyptian cat"}


def _shift_classifier_rows(path: Path) -> None:
    """Damage: the classifier's int8 weight rows rolled by one, so every image's answer moves to
    a neighbouring class. Still a valid model that runs; just a wrong one."""
    model = onnx.load(str(path))
    graph = model.graph
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    dequant = next(n for n in graph.node if n.output[0] == gemm.input[1])
    weight = next(i for i in graph.initializer if i.name == dequant.input[0])
    rolled = np.roll(numpy_helper.to_array(weight), 1, axis=0)
    weight.CopyFrom(numpy_helper.from_array(rolled, weight.name))
    onnx.save(model, str(path))


def _evaluate_damaged(
    lite0_dir: Path, out: Path, data_dir: Path, damaged: isa.WeightBits, *options: str
) -> tuple[int, Path]:
    """The evaluate stage on a copy of the built model whose ``damaged`` int8 file has its
    classifier rows shifted: (exit code, the copy's folder)."""
    model_dir = out / "efficientnet_lite0"
    shutil.copytree(lite0_dir, model_dir)
    _shift_classifier_rows(model_dir / INT8_NAMES[damaged])
    code = main(
        ["--model", "efficientnet_lite0", "--stage", "evaluate", "--out", str(out),
         "--data-dir", str(data_dir), *options]
    )  # fmt: skip
    return code, model_dir


def _kept(err: str) -> Path:
    """The folder a gate failure names for its rejected manifest and report."""
    return Path(err.split("report and rejected manifest in ", 1)[1].split(";", 1)[0])


def test_gate_fails_on_a_damaged_int8_model(
    lite0_dir: Path, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
):
    served = isa.exact_int8_file()  # the one run here with its real kernels
    code, model_dir = _evaluate_damaged(lite0_dir, tmp_path / "out", data_dir, served)

    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("build: error: efficientnet_lite0: int8 failed the accuracy gate: cpu:")
    assert "openvino:" in err
    # --out as it was: the folder still holds the copied manifest (whose sha256 the damaged
    # file no longer matches, so no server loads it) and nothing new.
    assert (model_dir / "manifest.json").read_bytes() == (lite0_dir / "manifest.json").read_bytes()
    assert not (model_dir / "manifest.rejected.json").exists()
    rejected = json.loads((_kept(err) / "manifest.rejected.json").read_text())
    assert rejected["evaluation"]["passed"] is False
    assert rejected["evaluation"]["int8"]["top1"] < 10.0
    assert "FAILED" in (_kept(err) / "build_report.md").read_text()


def test_gate_checks_the_int8_file_this_cpu_does_not_serve_by_exact_reference(
    lite0_dir: Path, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
):
    # A CPU of the other kind (VNNI or not) would serve the other file: the build checks it too,
    # computed exactly, so an image built here is gated for both kinds of machine.
    other: isa.WeightBits = "int8" if isa.exact_int8_file() == "int8_w7" else "int8_w7"
    code, _ = _evaluate_damaged(lite0_dir, tmp_path / "out", data_dir, other)

    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"int8 failed the accuracy gate: {other} reference: int8 top-1" in err
    assert "cpu:" not in err
    assert "openvino:" not in err
    rejected = json.loads((_kept(err) / "manifest.rejected.json").read_text())
    assert rejected["evaluation"]["int8_reference"][other]["passed"] is False
    assert rejected["evaluation"]["int8_file"] == isa.exact_int8_file()


def test_gate_threshold_is_configurable(lite0_dir: Path, tmp_path: Path, data_dir: Path):
    served = isa.exact_int8_file()
    options = ("--max-top1-drop", "100")
    code, model_dir = _evaluate_damaged(lite0_dir, tmp_path / "out", data_dir, served, *options)

    assert code == 0
    assert load_manifest(model_dir).evaluation.max_top1_drop_points == 100.0  # type: ignore[union-attr]


def test_stages_one_by_one_random_resnet18_without_labeled_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("IMGCLS_DATA_DIR", str(tmp_path / "no-shared-data"))
    out = tmp_path / "out"
    common = ["--model", "resnet18", "--weights", "random", "--out", str(out)]

    for stage in ("export", "quantize", "evaluate"):
        assert main([*common, "--stage", stage]) == 0

    manifest = load_manifest(out / "resnet18")
    ev = manifest.evaluation
    assert manifest.model.untrained
    assert manifest.model.version == "1.0-random"
    assert manifest.model.weights_source == "random"
    assert ev is not None
    assert (ev.small, ev.images, ev.gate_applicable) == (True, 6, False)
    assert "SMALL" in ev.dataset
    assert manifest.quantization.calibration_images == 10
    assert set(manifest.stage_seconds) == {"export", "quantize", "evaluate"}
    for precision in ("fp32", "int8"):
        assert verified_model_path(out / "resnet18", manifest, precision).is_file()  # type: ignore[arg-type]
