"""Softmax and top-k: pure functions, exact answers."""

from __future__ import annotations

import numpy as np
import pytest

from service.inference.postprocess import Prediction, softmax, top_k

LABELS = ["cat", "dog", "eel", "fox"]


def test_softmax_rows_sum_to_one_and_keep_order() -> None:
    probabilities = softmax(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(probabilities.sum(axis=1), [1.0, 1.0])
    np.testing.assert_allclose(probabilities[1], [1 / 3, 1 / 3, 1 / 3])
    assert probabilities[0, 2] > probabilities[0, 1] > probabilities[0, 0]


def test_softmax_does_not_overflow_on_large_logits() -> None:
    probabilities = softmax(np.array([1000.0, 999.0], dtype=np.float32))
    np.testing.assert_allclose(probabilities, [1 / (1 + np.exp(-1)), 1 / (1 + np.exp(1))])


def test_top_k_is_best_first_with_labels_indices_and_probabilities() -> None:
    logits = np.log(np.array([0.1, 0.6, 0.05, 0.25], dtype=np.float32))
    predictions = top_k(logits, 3, LABELS)
    assert [p.label for p in predictions] == ["dog", "fox", "cat"]
    assert [p.class_index for p in predictions] == [1, 3, 0]
    assert [p.score for p in predictions] == pytest.approx([0.6, 0.25, 0.1], abs=1e-6)
    assert all(isinstance(p, Prediction) for p in predictions)
    assert all(type(p.score) is float and type(p.class_index) is int for p in predictions)


def test_ties_go_to_the_lower_class_index() -> None:
    predictions = top_k(np.zeros(4, dtype=np.float32), 4, LABELS)
    assert [p.class_index for p in predictions] == [0, 1, 2, 3]
    assert [p.score for p in predictions] == pytest.approx([0.25] * 4)


def test_k_equal_to_the_number_of_classes_returns_all() -> None:
    assert len(top_k(np.arange(4, dtype=np.float32), 4, LABELS)) == 4


@pytest.mark.parametrize("k", [0, 5, -1])
def test_k_out_of_range_is_refused(k: int) -> None:
    with pytest.raises(ValueError, match=r"k must be in 1\.\.4"):
        top_k(np.zeros(4, dtype=np.float32), k, LABELS)


def test_labels_must_match_the_logits() -> None:
    with pytest.raises(ValueError, match="3 labels for 4 logits"):
        top_k(np.zeros(4, dtype=np.float32), 1, LABELS[:3])


def test_a_batch_of_logits_is_refused() -> None:
    with pytest.raises(ValueError, match="1-D"):
        top_k(np.zeros((2, 4), dtype=np.float32), 1, LABELS)
