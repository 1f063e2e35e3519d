"""JPEG decode policies: CPU cost and accuracy, through service.inference.preprocess (issue 10).

Policies; every one ends in service.inference.preprocess's own resize_crop and RGB conversion, the
functions the server and the build run:

- ``exact``: every pixel decoded by Pillow (no DCT-domain scaling): the reference.
- ``pillow``: ``service.inference.preprocess.preprocess`` as shipped: Pillow, with its draft mode
(DCT
  scaling by 1/2, 1/4 or 1/8 while both sides stay >= 256).
- ``sj_exact``: simplejpeg (libjpeg-turbo) decodes every pixel.
- ``m8_half``: simplejpeg's M/8 DCT scaling (3/8 too), used when it at least halves each side.
- ``m8_any``: simplejpeg's M/8 DCT scaling at every M (7/8, 6/8, ...) that keeps both sides
  >= 256.

``cost``: thread CPU ms per image (decode + resize + crop), interleaved rounds, medians, on the
labeled 500x375 photos and on the same photos upscaled (Lanczos) and re-encoded (quality 90),
since DCT scaling only matters on large images. ``accuracy``: top-1 of the int8 model on the
500 labeled images (as they are, and upscaled x2 and x3 so that most are DCT-scaled), and top-1
agreement of each policy with ``exact``; scored by build.evaluate.

    python -m bench.experiments.decode --sections cost,accuracy \\
        --model-dir model_artifacts/efficientnet_lite0
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import numpy.typing as npt
import simplejpeg
from PIL import Image

import service.inference.preprocess as pp
from bench.config import model_file
from build.data import read_labels
from build.evaluate import accuracy, agreement, predict
from build.sessions import session
from service import paths

POLICIES = ("exact", "pillow", "sj_exact", "m8_half", "m8_any")
SPEC = pp.PreprocessSpec()
Decoder = Callable[[bytes], npt.NDArray[np.uint8]]


def m8_preprocess(data: bytes, min_factor: float) -> npt.NDArray[np.uint8]:
    """simplejpeg's DCT scaling by M/8, the smallest that keeps both sides >= resize_size, when
    it divides each side by at least ``min_factor``; then the service's resize and crop."""
    image = pp.open_image(data, 10**9)
    side = SPEC.resize_size
    height, width, _, _ = simplejpeg.decode_jpeg_header(data, min_height=side, min_width=side)
    eighths = next(m for m in range(1, 9) if (image.width * m + 7) // 8 >= width)
    if 8 / eighths < min_factor:
        width, height = image.size
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGBX", min_height=height, min_width=width)
    decoded = Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
    return np.asarray(pp.resize_crop(decoded, SPEC).convert("RGB"), dtype=np.uint8)


@contextlib.contextmanager
def policy(name: str) -> Iterator[Decoder]:
    """The policy's decode function (service.inference.preprocess patched for the block, not per
    call:
    mock.patch costs more than some differences being measured)."""
    min_factor = {"sj_exact": float("inf"), "m8_half": 2.0, "m8_any": 1.0}
    if name in min_factor:
        yield lambda data: m8_preprocess(data, min_factor[name])
    elif name == "exact":
        with mock.patch.object(pp, "draft", return_value=None):
            yield lambda data: pp.preprocess(data, SPEC)
    elif name == "pillow":
        yield lambda data: pp.preprocess(data, SPEC)
    else:
        raise ValueError(name)


def upscaled(data: bytes, factor: float) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        size = (round(image.width * factor), round(image.height * factor))
        big = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    big.save(out, format="JPEG", quality=90)
    return out.getvalue()


def labeled(data_dir: Path) -> list[tuple[bytes, int]]:
    folder = data_dir / "imagenet-sample-images"
    return [(path.read_bytes(), label) for path, label in read_labels(folder)]


# ---------------------------------------------------------------- cost


def cpu_ms_per_image(datas: list[bytes], repeats: int, decode: Decoder) -> float:
    start = time.thread_time()
    for _ in range(repeats):
        for data in datas:
            decode(data)
    return (time.thread_time() - start) * 1e3 / (repeats * len(datas))


def cost(data_dir: Path, images: int, rounds: int, factors: list[float]) -> dict[str, Any]:
    base = [d for d, _ in labeled(data_dir) if Image.open(io.BytesIO(d)).size == (500, 375)]
    base = base[:images]
    results: dict[str, Any] = {}
    for factor in factors:
        datas = base if factor == 1 else [upscaled(d, factor) for d in base]
        with Image.open(io.BytesIO(datas[0])) as first:
            size = f"{first.width}x{first.height}"
        samples: dict[str, list[float]] = {p: [] for p in POLICIES}
        repeats = max(1, round(4 / factor**2))
        for _ in range(rounds):  # interleaved: a noisy neighbour hits every policy alike
            for name in POLICIES:
                with policy(name) as decode:
                    samples[name].append(cpu_ms_per_image(datas, repeats, decode))
        results[size] = {p: statistics.median(v) for p, v in samples.items()}
        print(size, {p: round(v, 2) for p, v in results[size].items()}, flush=True)
    return results


# ---------------------------------------------------------------- accuracy


def pixels_of(datas: list[bytes], name: str) -> npt.NDArray[np.uint8]:
    with policy(name) as decode:
        return np.stack([decode(d) for d in datas])


def accuracy_check(data_dir: Path, model_dir: Path, factors: list[float]) -> dict[str, Any]:
    rows = labeled(data_dir)
    accept = [frozenset({label}) for _, label in rows]
    sess = session(model_file(model_dir, "int8"), "cpu")  # this CPU's int8 file
    results: dict[str, Any] = {}
    for factor in factors:
        datas = [d if factor == 1 else upscaled(d, factor) for d, _ in rows]
        exact = pixels_of(datas, "exact")
        ref = predict(sess, exact, "exact")
        entry: dict[str, Any] = {}
        for name in POLICIES:
            pixels = exact if name == "exact" else pixels_of(datas, name)
            logits = ref if name == "exact" else predict(sess, pixels, name)
            entry[name] = {
                "top1": accuracy(logits, accept).top1,
                "agreement_with_exact": agreement(logits, ref),
                # images whose pixels differ from the exact decode's: those it DCT-scaled
                "pixels_differ_pct": round(
                    100
                    * float(
                        np.mean(
                            [not np.array_equal(a, b) for a, b in zip(pixels, exact, strict=True)]
                        )
                    ),
                    1,
                ),
            }
        results[f"x{factor:g}"] = entry
        print(f"x{factor:g}", json.dumps(entry), flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="cost,accuracy")
    p.add_argument("--model-dir", type=Path, default=Path("model_artifacts/efficientnet_lite0"))
    p.add_argument("--data-dir", type=Path, default=paths.data_dir())
    p.add_argument("--images", type=int, default=32, help="photos for the cost section")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cost-factors", default="1,1.3,1.6,2,3,4,8")
    p.add_argument("--accuracy-factors", default="1,2,3")
    p.add_argument("--out", type=Path, default=Path("bench/results/decode.json"))
    args = p.parse_args()
    sections = set(args.sections.split(","))
    floats: Callable[[str], list[float]] = lambda s: [float(x) for x in s.split(",")]  # noqa: E731
    out: dict[str, Any] = {"load_average_start": os.getloadavg()}
    if "cost" in sections:
        out["cost_cpu_ms_per_image"] = cost(
            args.data_dir, args.images, args.rounds, floats(args.cost_factors)
        )
    if "accuracy" in sections:
        out["accuracy"] = accuracy_check(
            args.data_dir, args.model_dir, floats(args.accuracy_factors)
        )
    out["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
