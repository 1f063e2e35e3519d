"""Logits -> the top-k predictions. Pure functions: no state, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Logits = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    class_index: int
    score: float  # softmax probability, 0..1


def softmax(logits: Logits) -> npt.NDArray[np.float64]:
    """Softmax over the last axis. Computed in float64 after subtracting the maximum, so large
    logits neither overflow nor lose the small probabilities a top-5 shows."""
    wide = logits.astype(np.float64)
    shifted = np.exp(wide - wide.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def top_k(logits: Logits, k: int, labels: Sequence[str]) -> tuple[Prediction, ...]:
    """The k most probable classes of one image's logits (shape [num_classes]), best first.
    Ties go to the lower class index, so the answer never depends on the sort algorithm."""
    if logits.ndim != 1:
        raise ValueError(f"expected one image's logits (1-D), got shape {logits.shape}")
    if len(labels) != logits.shape[0]:
        raise ValueError(f"{len(labels)} labels for {logits.shape[0]} logits")
    if not 1 <= k <= logits.shape[0]:
        raise ValueError(f"k must be in 1..{logits.shape[0]}, got {k}")
    probabilities = softmax(logits)
    order = np.argsort(-probabilities, kind="stable")[:k]
    return tuple(
        Prediction(label=labels[i], class_index=int(i), score=float(probabilities[i]))
        for i in order
    )


def top1_agreement(reference: Logits, candidate: Logits) -> tuple[int, int]:
    """(images where both give the same top-1, images): the one definition the provider choice,
    the build's evaluation and bench use."""
    same = np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)
    return int(same.sum()), int(same.shape[0])
