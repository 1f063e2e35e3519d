"""CPU per phone photo by format: service.inference.preprocess (decode + resize + crop) of the
same 12 MP and ~3 MP photos saved as JPEG (quality 90; every pixel decoded, the default, and
with a 2x draft, IMGCLS_JPEG_DRAFT_MARGIN=2), PNG, WebP
(lossy, quality 90), HEIC (quality 66, 512-pixel grid tiles as iPhones write it) and AVIF
(quality 80). Process CPU, not thread CPU: libheif and dav1d decode on threads of their own.

    python -m bench.experiments.format_cost [--photos 8] [--repeats 3]

Medians over the photos; writes bench/results/format_cost.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from bench.config import RESULTS_ROOT
from build.data import imagenet_split
from build.phone_photos import PHONE_SIZES, phone_photo, seed_of
from service import paths
from service.inference.preprocess import PreprocessSpec, preprocess


def _encoder(fmt: str, **params: Any) -> Callable[[Image.Image], bytes]:
    def encode(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, fmt, **params)
        return out.getvalue()

    return encode


ENCODERS: dict[str, Callable[[Image.Image], bytes]] = {
    "JPEG q90": _encoder("JPEG", quality=90),
    "PNG": _encoder("PNG", compress_level=1),
    "WebP q90": _encoder("WEBP", quality=90),
    # build.phone_photos' recipe: 1.6-2.7 MB at 12 MP, as an iPhone's
    "HEIC q66": _encoder("HEIF", quality=66, tile_size=512, enc_params={"preset": "ultrafast"}),
    "AVIF q80": _encoder("AVIF", quality=80, speed=10),
}


DRAFTED = "JPEG q90, draft 2x"  # the JPEG q90 bytes, decoded with a 2x draft margin


def cpu_ms(data: bytes, repeats: int, spec: PreprocessSpec) -> float:
    preprocess(data, spec)  # the codec's first call: its tables and threads
    times = []
    for _ in range(repeats):
        start = time.process_time()
        preprocess(data, spec)
        times.append(time.process_time() - start)
    return 1e3 * min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS_ROOT / "format_cost.json")
    args = p.parse_args()
    sources = [e.path for e in imagenet_split(paths.data_dir()).evaluation[: args.photos]]
    results: dict[str, Any] = {"load_average_start": os.getloadavg()}
    drafted = PreprocessSpec(draft_margin=2.0)
    for size_name, pixels in PHONE_SIZES.items():
        names = [*ENCODERS, DRAFTED]
        samples: dict[str, list[float]] = {name: [] for name in names}
        sizes: dict[str, list[int]] = {name: [] for name in names}
        for path in sources:
            photo = phone_photo(Image.open(path), pixels, seed_of(path))
            for name, encode in ENCODERS.items():
                data = encode(photo)
                sizes[name].append(len(data))
                samples[name].append(cpu_ms(data, args.repeats, PreprocessSpec()))
                if name == "JPEG q90":
                    sizes[DRAFTED].append(len(data))
                    samples[DRAFTED].append(cpu_ms(data, args.repeats, drafted))
        results[size_name] = {
            name: {
                "cpu_ms": round(statistics.median(samples[name]), 1),
                "file_mb": round(statistics.median(sizes[name]) / 1e6, 2),
            }
            for name in names
        }
        print(size_name, json.dumps(results[size_name]), flush=True)
    results["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
