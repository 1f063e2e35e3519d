"""Stage 3: top-1/top-5 of fp32 and int8 on labeled images disjoint from calibration, top-1
agreement between them, and the gate: the build fails when int8 loses more than
``max_top1_drop`` points of top-1 against fp32 on any execution provider."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from build import progress
from build.sessions import Provider, available_providers, reference_session, run, session
from service.inference.postprocess import top1_agreement
from service.model.manifest import Accuracy, ClassAccuracy, ProviderEvaluation

Logits = npt.NDArray[np.float32]
EVAL_BATCH = 16
DEFAULT_MAX_TOP1_DROP = 1.5


def predict(sess: Any, pixels: npt.NDArray[np.uint8], desc: str) -> Logits:
    chunks = [
        run(sess, pixels[i : i + EVAL_BATCH])
        for i in progress.bar(range(0, len(pixels), EVAL_BATCH), desc, "batch")
    ]
    return np.concatenate(chunks)


def accuracy(logits: Logits, accept: Sequence[frozenset[int]]) -> Accuracy:
    # Stable: ties (common in int8 logits) go to the lower class index, as the service answers.
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    hit1 = [int(row[0]) in ok for row, ok in zip(top5, accept, strict=True)]
    hit5 = [any(int(c) in ok for c in row) for row, ok in zip(top5, accept, strict=True)]
    return Accuracy(top1=_percent(hit1), top5=_percent(hit5))


def agreement(a: Logits, b: Logits) -> float:
    same, total = top1_agreement(a, b)
    return round(100.0 * same / total, 2)


def _percent(hits: Sequence[bool] | Sequence[np.bool_]) -> float:
    return round(100.0 * sum(bool(h) for h in hits) / len(hits), 2)


def latency_ms(sess: Any, image: npt.NDArray[np.uint8], runs: int = 30) -> float:
    """Median batch-1 latency after a warm-up: a check that fusion did not break, not a bench."""
    one = image[None]
    for _ in range(5):
        run(sess, one)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(sess, one)
        times.append(time.perf_counter() - start)
    return round(1000.0 * statistics.median(times), 2)


@dataclass(frozen=True, slots=True)
class Evaluation:
    fp32: Accuracy
    int8: dict[str, ProviderEvaluation]
    latency_ms_batch1: dict[str, float]
    gate_applicable: bool
    max_top1_drop: float
    # Other int8 files (by manifest key), computed by exact reference execution.
    reference: dict[str, ProviderEvaluation] = field(default_factory=dict)
    # The logits behind the figures: fp32, and int8 on the first provider (the CPU's).
    fp32_logits: Logits | None = None
    int8_logits: Logits | None = None

    @property
    def passed(self) -> bool:
        return all(p.passed for p in [*self.int8.values(), *self.reference.values()])

    def failures(self) -> list[str]:
        rows = [*self.int8.items(), *((f"{k} reference", p) for k, p in self.reference.items())]
        return [
            f"{name}: int8 top-1 {p.int8.top1:.2f}% vs fp32 {self.fp32.top1:.2f}% "
            f"(drop {self.fp32.top1 - p.int8.top1:.2f} > {self.max_top1_drop} points)"
            for name, p in rows
            if not p.passed
        ]


def evaluate(
    fp32_path: Path,
    int8_path: Path,
    pixels: npt.NDArray[np.uint8],
    accept: Sequence[frozenset[int]],
    max_top1_drop: float,
    gate_applicable: bool,
    providers: Sequence[Provider] | None = None,
    reference: Mapping[str, Path] | None = None,
) -> Evaluation:
    fp32_sess = session(fp32_path, "cpu")
    fp32_logits = predict(fp32_sess, pixels, "evaluate fp32")
    fp32 = accuracy(fp32_logits, accept)
    latency = {"cpu/fp32": latency_ms(fp32_sess, pixels[0])}
    del fp32_sess

    def scored(logits: Logits) -> ProviderEvaluation:
        int8 = accuracy(logits, accept)
        drop_ok = fp32.top1 - int8.top1 <= max_top1_drop
        return ProviderEvaluation(
            int8=int8,
            top1_agreement=agreement(fp32_logits, logits),
            passed=drop_ok or not gate_applicable,
        )

    results: dict[str, ProviderEvaluation] = {}
    first: Logits | None = None
    for provider in providers or available_providers():
        sess = session(int8_path, provider)
        logits = predict(sess, pixels, f"evaluate int8 ({provider})")
        first = logits if first is None else first
        results[provider] = scored(logits)
        latency[f"{provider}/int8"] = latency_ms(sess, pixels[0])
    exact = {
        key: scored(predict(reference_session(path), pixels, f"evaluate {key} (reference)"))
        for key, path in (reference or {}).items()
    }
    return Evaluation(
        fp32, results, latency, gate_applicable, max_top1_drop, exact, fp32_logits, first
    )


def per_class(
    fp32: Logits, int8: Logits, truth: Sequence[int], labels: Sequence[str]
) -> dict[str, ClassAccuracy]:
    """Top-1 of fp32 and int8 for each class present in ``truth`` (one class per image)."""
    truth_arr = np.asarray(truth)
    fp32_hit = np.argmax(fp32, axis=1) == truth_arr
    int8_hit = np.argmax(int8, axis=1) == truth_arr
    out: dict[str, ClassAccuracy] = {}
    for index, label in enumerate(labels):
        mask = truth_arr == index
        if mask.any():
            out[label] = ClassAccuracy(
                images=int(mask.sum()),
                fp32_top1=_percent(list(fp32_hit[mask])),
                int8_top1=_percent(list(int8_hit[mask])),
            )
    return out
