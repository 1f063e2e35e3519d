"""The served path at phone size: fp32 and the served int8 file on the evaluation images made
12 MP and ~3 MP (build/phone_photos.py), through service.inference.preprocess with the JPEG
draft the service uses, against the same images with every pixel decoded.

Per size: top-1 of fp32 and int8 (per provider) on both paths, and top-1 agreement between the
paths. The gate: int8's served top-1 may lose at most ``max_top1_drop`` points against fp32 with
every pixel decoded (the best the model can do on those images), on every provider, and at
least one image: a small split's one changed answer is more than the drop, and the evaluation
split's own gate has judged int8 against fp32 on those images already (allowed_drop). A seeded
subset of the evaluation images keeps the build's time in reason (``images``); the photos are
cached across builds (``cache``), since making a 12 MP one costs more than classifying it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from build.data import LabeledImage
from build.evaluate import Logits, accuracy, agreement, predict
from build.phone_photos import PHONE_SIZES, phone_jpegs, phone_size
from build.sessions import Provider, available_providers, session
from service.inference.preprocess import PreprocessSpec, preprocess
from service.model.manifest import PhoneSizeEvaluation, PhoneSizeProvider
from service.process import available_cpus

DEFAULT_IMAGES = 100
log = logging.getLogger("build")
SUBSET_SEED = 0
ROUNDING = 0.01  # top-1 figures are rounded to 0.01 points: their difference, to 0.01 more
Pixels = npt.NDArray[np.uint8]


def default_cache() -> Path:
    """Where the phone-size photos are kept between builds (XDG's cache folder)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "imgcls" / "phone-photos"


def subset(evaluation: Sequence[LabeledImage], images: int | None) -> list[LabeledImage]:
    """A seeded ``images`` of the evaluation images, in their order (None: all)."""
    if images is None or images >= len(evaluation):
        return list(evaluation)
    chosen = set(random.Random(SUBSET_SEED).sample(range(len(evaluation)), images))
    return [image for i, image in enumerate(evaluation) if i in chosen]


def evaluate_phone_sizes(
    fp32_path: Path,
    int8_path: Path,
    evaluation: Sequence[LabeledImage],
    spec: PreprocessSpec,
    max_top1_drop: float,
    images: int | None = DEFAULT_IMAGES,
    cache: Path | None = None,
    providers: Sequence[Provider] | None = None,
) -> dict[str, PhoneSizeEvaluation]:
    started = time.monotonic()
    chosen = subset(evaluation, images)
    accept = [image.accept for image in chosen]
    sessions = {"fp32": session(fp32_path, "cpu")} | {
        provider: session(int8_path, provider) for provider in providers or available_providers()
    }
    result = {}
    for size_name, pixels in PHONE_SIZES.items():
        jpegs = phone_jpegs([image.path for image in chosen], size_name, cache)
        served = _pixels(jpegs, spec)
        full = served if spec.draft_margin is None else _pixels(jpegs, _full_decode(spec))
        logits = {name: _both(s, served, full, size_name) for name, s in sessions.items()}
        result[size_name] = _scored(pixels, spec, logits, accept, max_top1_drop)
    log.info("phone-size evaluation: %d images, %.0f s", len(chosen), time.monotonic() - started)
    return result


def _full_decode(spec: PreprocessSpec) -> PreprocessSpec:
    return dataclasses.replace(spec, draft_margin=None)


def _both(s: Any, served: Pixels, full: Pixels, size_name: str) -> tuple[Logits, Logits]:
    """Logits of the served path and of the full decode: computed once when nothing is drafted
    (the same pixels)."""
    logits = predict(s, served, f"{size_name} served")
    if full is served:
        return logits, logits
    return logits, predict(s, full, f"{size_name} full")


def _pixels(jpegs: list[bytes], spec: PreprocessSpec) -> Pixels:
    # On every CPU: Pillow releases the GIL while it decodes and resizes, as in the service.
    with ThreadPoolExecutor(available_cpus()) as pool:
        return np.stack(list(pool.map(lambda data: preprocess(data, spec), jpegs)))


def _scored(
    pixels: int,
    spec: PreprocessSpec,
    logits: dict[str, tuple[Logits, Logits]],
    accept: list[frozenset[int]],
    max_top1_drop: float,
) -> PhoneSizeEvaluation:
    fp32_served, fp32_full = logits.pop("fp32")
    reference = accuracy(fp32_full, accept)

    def provider(served: Logits, full: Logits) -> PhoneSizeProvider:
        int8 = accuracy(served, accept)
        drop = round(reference.top1 - int8.top1, 2)
        return PhoneSizeProvider(
            int8=int8,
            int8_full_decode=accuracy(full, accept),
            draft_agreement=agreement(served, full),
            top1_drop_points=drop,
            passed=drop <= allowed_drop(max_top1_drop, len(accept)) + ROUNDING,
        )

    per_provider = {name: provider(*pair) for name, pair in logits.items()}
    width, height = phone_size((4, 3), pixels)
    return PhoneSizeEvaluation(
        example_size=f"{width}x{height}",
        pixels=pixels,
        images=len(accept),
        draft_margin=spec.draft_margin,
        fp32_full_decode=reference,
        fp32=accuracy(fp32_served, accept),
        fp32_draft_agreement=agreement(fp32_served, fp32_full),
        int8_providers=per_provider,
        passed=all(p.passed for p in per_provider.values()),
    )


def allowed_drop(max_top1_drop: float, images: int) -> float:
    """The gate's drop in points, never less than one image of ``images``."""
    return max(max_top1_drop, 100.0 / max(1, images))


def failures(phone_sizes: dict[str, PhoneSizeEvaluation], max_top1_drop: float) -> list[str]:
    return [
        f"{size} {name}: served int8 top-1 {p.int8.top1:.2f}% vs fp32 full decode "
        f"{ev.fp32_full_decode.top1:.2f}% (drop {p.top1_drop_points:.2f} > "
        f"{allowed_drop(max_top1_drop, ev.images):.3g} points)"
        for size, ev in phone_sizes.items()
        for name, p in ev.int8_providers.items()
        if not p.passed
    ]
