"""The manifest a build writes: schema, and checksums the service verifies before loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from build.catalog import class_names
from service.model.manifest import ManifestError, load_labels, load_manifest, verified_model_path


@pytest.fixture
def model_copy(trained_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / trained_model_dir.name
    shutil.copytree(trained_model_dir, target)
    return target


def test_built_manifest_matches_the_contract(trained_model_dir: Path):
    manifest = load_manifest(trained_model_dir)

    assert manifest.model.name == "efficientnet_lite0"
    assert manifest.model.version == f"1.0-{manifest.model.weights_sha256[:8]}"
    assert not manifest.model.untrained
    assert (manifest.input.name, manifest.input.dtype, manifest.input.layout) == (
        "image", "uint8", "NHWC",
    )  # fmt: skip
    assert manifest.input.shape == ("batch", 224, 224, 3)
    assert manifest.input.mean == pytest.approx((127 / 255,) * 3)
    assert manifest.input.std == pytest.approx((128 / 255,) * 3)
    assert (manifest.output.name, manifest.output.num_classes) == ("logits", 1000)
    assert manifest.quantization.format == "QDQ"
    assert manifest.quantization.per_channel
    assert (manifest.quantization.activation_type, manifest.quantization.weight_type) == (
        "QUInt8", "QInt8",
    )  # fmt: skip
    assert manifest.evaluation is not None
    assert manifest.evaluation.passed
    # phone_sizes: the served path evaluated at 12 MP and ~3 MP (trained weights only)
    assert set(manifest.stage_seconds) == {"export", "quantize", "evaluate", "phone_sizes"}
    assert {"torch", "onnx", "onnxruntime-openvino", "numpy"} <= set(manifest.versions)
    labels = load_labels(trained_model_dir, manifest)
    assert labels == class_names()
    assert labels[281] == "tabby"


@pytest.mark.parametrize("precision", ["fp32", "int8", "int8_w7"])
def test_checksums_verify(trained_model_dir: Path, precision: str):
    manifest = load_manifest(trained_model_dir)

    path = verified_model_path(trained_model_dir, manifest, precision)  # type: ignore[arg-type]

    assert path == trained_model_dir / f"model.{precision.replace('_', '-')}.onnx"


def test_one_changed_byte_is_refused(model_copy: Path):
    manifest = load_manifest(model_copy)
    model = model_copy / "model.int8.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))

    with pytest.raises(ManifestError, match=r"model\.int8\.onnx: sha256 .* does not match"):
        verified_model_path(model_copy, manifest, "int8")
    assert verified_model_path(model_copy, manifest, "fp32").is_file()


def test_unknown_field_is_refused(model_copy: Path):
    raw = json.loads((model_copy / "manifest.json").read_text())
    raw["model"]["surprise"] = 1
    (model_copy / "manifest.json").write_text(json.dumps(raw))

    with pytest.raises(ManifestError, match="does not match the manifest schema"):
        load_manifest(model_copy)


def test_missing_field_is_refused(model_copy: Path):
    raw = json.loads((model_copy / "manifest.json").read_text())
    del raw["files"]
    (model_copy / "manifest.json").write_text(json.dumps(raw))

    with pytest.raises(ManifestError, match="does not match the manifest schema"):
        load_manifest(model_copy)
