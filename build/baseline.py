"""The prediction baseline, measured in the evaluation stage: what the int8 file that serves on
this CPU answers on the evaluation images (CPU provider), as the mean top-1 probability and the
predicted class counts. The service exports it beside the live figures
(service/observability/predictions.py), and the drift alerts compare the two
(deploy/prometheus/alerts.yml). It describes the evaluation set, not production traffic: a
deployment whose traffic differs by design should read the alerts against that."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from build.evaluate import predict
from build.sessions import session
from service.inference.postprocess import softmax
from service.model.manifest import PredictionBaseline

Logits = npt.NDArray[np.float32]


def measure(int8_path: Path, model_file: str, pixels: npt.NDArray[np.uint8]) -> PredictionBaseline:
    """Run ``int8_path`` on the CPU provider over ``pixels`` and summarise its answers."""
    return from_logits(predict(session(int8_path, "cpu"), pixels, "baseline"), model_file)


def from_logits(logits: Logits, model_file: str) -> PredictionBaseline:
    """The baseline of ``logits`` [images, classes]: the same top-1 probability (softmax in
    float64) and top-1 class (ties to the lower index) the service observes per answer."""
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"expected logits [images, classes], got shape {logits.shape}")
    confidence = softmax(logits).max(axis=1)
    classes, counts = np.unique(np.argmax(logits, axis=1), return_counts=True)
    return PredictionBaseline(
        images=int(logits.shape[0]),
        model_file=model_file,
        mean_confidence=round(float(confidence.mean()), 6),
        class_counts={int(c): int(n) for c, n in zip(classes, counts, strict=True)},
    )
