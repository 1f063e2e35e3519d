"""Prediction monitoring: what the model answers, as metrics, beside the build's baseline.

- Every answered image (cache hits too: the monitor describes what callers were told) adds its
  top-1 probability to ``imgcls_prediction_confidence``, its top-1 class to
  ``imgcls_predictions_total`` and, below the threshold, one to the low-confidence counter.
- Every class's series exists from zero once a model is set up: a series born mid-window loses
  its first increments to ``rate()``, and the class-mix divergence (deploy/prometheus/alerts.yml)
  must see every class. Bounded: one series per class of the model, never per input.
- The baseline (the manifest's ``evaluation.prediction_baseline``) is exported as gauges.
Setting up a model clears the previous model's series, so a swapped model never mixes label sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from service.observability.metrics import Metrics

__all__ = ["PredictionMonitor", "top1"]

Logits = npt.NDArray[np.float32]


def top1(logits: Logits) -> tuple[int, float]:
    """One image's top-1 class (ties: the lower index, as the top-k) and its softmax
    probability, in float64 after subtracting the maximum (no overflow)."""
    best = int(np.argmax(logits))
    wide = logits.astype(np.float64)
    return best, float(1.0 / np.exp(wide - wide[best]).sum())


class PredictionMonitor:
    def __init__(self, metrics: Metrics, labels: Sequence[str], low_confidence: float) -> None:
        self._confidence = metrics.prediction_confidence
        self._low = metrics.low_confidence
        self._threshold = low_confidence
        metrics.predictions.clear()
        self._classes = [
            metrics.predictions.labels(class_index=str(i), label=label)
            for i, label in enumerate(labels)
        ]
        metrics.low_confidence_threshold.set(low_confidence)
        self._metrics = metrics
        self._labels = labels

    def observe(self, logits: Logits) -> None:
        """One answered image's scores [num_classes]. On the event loop: ~20 us."""
        best, confidence = top1(logits)
        self._classes[best].inc()
        self._confidence.observe(confidence)
        if confidence < self._threshold:
            self._low.inc()

    def publish_baseline(
        self, mean_confidence: float, class_counts: Mapping[int, int], images: int
    ) -> None:
        """The build's baseline as gauges: mean confidence, images, and each predicted class's
        share (classes it never predicted stay absent, a share of 0)."""
        m = self._metrics
        self.no_baseline()
        m.baseline_confidence.set(mean_confidence)
        m.baseline_images.set(images)
        total = sum(class_counts.values())
        for index, count in sorted(class_counts.items()):
            share = m.baseline_class_share.labels(class_index=str(index), label=self._labels[index])
            share.set(count / total)

    def no_baseline(self) -> None:
        """A model built without one: gauges at 0 and no class shares, which the alerts read as
        "nothing to compare against" (they never fire)."""
        m = self._metrics
        m.baseline_class_share.clear()
        m.baseline_confidence.set(0)
        m.baseline_images.set(0)
