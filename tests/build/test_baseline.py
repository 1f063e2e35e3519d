"""The prediction baseline the build records: its figures from known logits, a real session on
the tiny model, and the manifest field (optional: older manifests still load)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from build.baseline import from_logits, measure
from service.model.manifest import PredictionBaseline, load_manifest, write_manifest
from tests.unit.tiny import colour_batch, write_tiny_artifacts


def test_the_baseline_of_known_logits() -> None:
    logits = np.log(
        np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.4999, 0.4999, 0.0002]])
    ).astype(np.float32)

    baseline = from_logits(logits, "int8")

    assert baseline.images == 4
    assert baseline.class_counts == {0: 3, 1: 1}  # the tie goes to the lower index
    assert baseline.mean_confidence == pytest.approx((0.7 + 0.8 + 0.6 + 0.4999) / 4, abs=1e-5)
    assert baseline.model_file == "int8"


@pytest.mark.parametrize("shape", [(0, 3), (3,)])
def test_no_logits_is_an_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="images, classes"):
        from_logits(np.zeros(shape, np.float32), "int8")


def test_measured_on_a_real_session(tmp_path: Path) -> None:
    model_dir = write_tiny_artifacts(tmp_path / "tiny")
    pixels = colour_batch([5, 5, 5, 300])

    baseline = measure(model_dir / "model.int8.onnx", "int8", pixels)

    assert baseline.class_counts == {5: 3, 300: 1}
    assert 0.5 < baseline.mean_confidence < 1.0


def test_the_manifest_field_round_trips_and_is_optional(tmp_path: Path) -> None:
    model_dir = write_tiny_artifacts(tmp_path / "tiny")
    manifest = load_manifest(model_dir)
    assert manifest.evaluation is not None
    assert manifest.evaluation.prediction_baseline is None  # a manifest written before it

    baseline = PredictionBaseline(
        images=2, model_file="int8_w7", mean_confidence=0.5, class_counts={999: 2}
    )
    evaluation = manifest.evaluation.model_copy(update={"prediction_baseline": baseline})
    write_manifest(model_dir, manifest.model_copy(update={"evaluation": evaluation}))

    loaded = load_manifest(model_dir).evaluation
    assert loaded is not None
    assert loaded.prediction_baseline == baseline
