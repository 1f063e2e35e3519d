"""The prediction monitor alone: the top-1 it observes, its bounded series, the baseline gauges,
and a new model's series replacing the previous model's."""

from __future__ import annotations

import numpy as np
import pytest

from service.inference.postprocess import softmax, top_k
from service.observability.metrics import Metrics
from service.observability.predictions import PredictionMonitor, top1

LABELS = ["cat", "dog", "fox"]


def series(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name
    }


@pytest.mark.parametrize("seed", range(5))
def test_top1_is_the_top_k_answer_and_its_softmax_probability(seed: int) -> None:
    logits = (np.random.default_rng(seed).standard_normal(1000) * 8).astype(np.float32)
    (best,) = top_k(logits, 1, [str(i) for i in range(1000)])
    index, confidence = top1(logits)
    assert index == best.class_index
    assert confidence == pytest.approx(float(softmax(logits).max()), rel=1e-12)


def test_ties_go_to_the_lower_index_and_huge_logits_do_not_overflow() -> None:
    assert top1(np.array([1.0, 5.0, 5.0], np.float32)) == (1, pytest.approx(0.4955, abs=1e-4))
    assert top1(np.array([1e30, 0.0], np.float32)) == (0, 1.0)


def test_every_class_starts_at_zero_and_each_answer_counts_once() -> None:
    metrics = Metrics()
    monitor = PredictionMonitor(metrics, LABELS, low_confidence=0.5)
    assert set(series(metrics, "imgcls_predictions_total").values()) == {0.0}
    assert len(series(metrics, "imgcls_predictions_total")) == 3

    monitor.observe(np.array([0.0, 9.0, 0.0], np.float32))  # dog, sure
    monitor.observe(np.array([0.1, 0.0, 0.0], np.float32))  # cat, unsure (0.36)

    counted = series(metrics, "imgcls_predictions_total")
    assert counted[(("class_index", "0"), ("label", "cat"))] == 1
    assert counted[(("class_index", "1"), ("label", "dog"))] == 1
    assert counted[(("class_index", "2"), ("label", "fox"))] == 0
    assert metrics.registry.get_sample_value("imgcls_prediction_low_confidence_total") == 1
    assert metrics.registry.get_sample_value("imgcls_prediction_confidence_count") == 2
    assert metrics.registry.get_sample_value("imgcls_prediction_low_confidence_threshold") == 0.5


def test_the_baseline_gauges_hold_shares_of_the_predicted_classes_only() -> None:
    metrics = Metrics()
    monitor = PredictionMonitor(metrics, LABELS, low_confidence=0.5)
    monitor.publish_baseline(0.8, {0: 1, 2: 3}, images=4)

    shares = series(metrics, "imgcls_prediction_baseline_class_share")
    assert shares == {
        (("class_index", "0"), ("label", "cat")): 0.25,
        (("class_index", "2"), ("label", "fox")): 0.75,
    }
    assert metrics.registry.get_sample_value("imgcls_prediction_baseline_confidence") == 0.8

    monitor.no_baseline()  # the next model has none
    assert series(metrics, "imgcls_prediction_baseline_class_share") == {}
    assert metrics.registry.get_sample_value("imgcls_prediction_baseline_images") == 0


def test_a_new_models_monitor_replaces_the_previous_label_set() -> None:
    metrics = Metrics()
    PredictionMonitor(metrics, LABELS, 0.5).observe(np.array([9.0, 0, 0], np.float32))
    PredictionMonitor(metrics, ["a", "b"], 0.5)
    assert set(series(metrics, "imgcls_predictions_total")) == {
        (("class_index", "0"), ("label", "a")),
        (("class_index", "1"), ("label", "b")),
    }
