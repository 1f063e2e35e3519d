"""What receiving an upload costs the server, before any decoding (issue 19, item 4): thread CPU
of service.http.uploads.read_one for a phone photo of ~1.7 MB and one of ~5 MB, sent as a raw
body, as multipart/form-data and as base64 JSON, per request and per MB.

The body arrives as uvicorn hands it to the app: http.request messages of 64 KiB. The upload
path is measured alone (no decode, no inference, no HTTP parsing, which are the same for the
three). ``--baseline REV`` measures uploads.py as it is at git revision REV too, interleaved
with the current one, so before and after come from the same run.

    python -m bench.experiments.upload_cost [--baseline main] [--repeats 40] [--rounds 5]

Writes bench/results/upload_cost.json and prints the table of docs/decisions/upload-copies.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import service.http.uploads as current
from bench.config import RESULTS_ROOT
from build.phone_photos import PHONE_SIZES, phone_photo
from service import paths
from service.limits.body_budget import BodyBudget
from service.settings import Settings

CHUNK = 64 * 1024
BOUNDARY = "----imgclsUploadCostBoundary7MA4YWxkTrZu0gW"
ReadOne = Callable[..., Awaitable[Any]]


def photos(targets_mb: tuple[float, ...] = (1.7, 5.0)) -> dict[str, bytes]:
    """A 12 MP phone photo as the JPEG closest to each target size: quality 80 to 100, and for
    the larger sizes more grain (a photo taken in low light)."""
    source = Image.open(paths.data_dir() / "imagenet-sample-images" / "n01440764_tench.JPEG")
    photo = phone_photo(source, PHONE_SIZES["12mp"], seed=0)
    grainy = np.asarray(photo, dtype=np.int16) + np.random.default_rng(1).integers(
        -14, 15, (photo.height, photo.width, 3), dtype=np.int16
    )
    variants = [photo, Image.fromarray(np.clip(grainy, 0, 255).astype(np.uint8))]
    encoded = []
    for variant in variants:
        for quality in range(80, 101):
            out = io.BytesIO()
            variant.save(out, "JPEG", quality=quality)
            encoded.append(out.getvalue())
    result = {}
    for target in targets_mb:
        best = min(encoded, key=lambda data: abs(len(data) - target * 1e6))
        result[f"{len(best) / 1e6:.1f} MB"] = best
    return result


def bodies(image: bytes) -> dict[str, tuple[str, bytes]]:
    """encoding -> (Content-Type, body)."""
    multipart = b"".join(
        [
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            'filename="IMG_0001.JPG"\r\nContent-Type: image/jpeg\r\n\r\n'.encode(),
            image,
            f"\r\n--{BOUNDARY}--\r\n".encode(),
        ]
    )
    as_json = json.dumps({"image": base64.b64encode(image).decode()}).encode()
    return {
        "raw": ("image/jpeg", image),
        "multipart": (f"multipart/form-data; boundary={BOUNDARY}", multipart),
        "json": ("application/json", as_json),
    }


def request(content_type: str, body: bytes, settings: Settings) -> Any:
    from starlette.requests import Request

    from service.http import state

    chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    messages = iter(
        [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in
         enumerate(chunks)]
    )  # fmt: skip

    async def receive() -> dict[str, Any]:
        return next(messages)

    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    # The app only as read_body asks for it: the settings of its body clock.
    app_state = types.SimpleNamespace(**{state._KEY: types.SimpleNamespace(settings=settings)})
    app = types.SimpleNamespace(state=app_state)
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/classify"}
    scope |= {"headers": headers, "app": app}
    return Request(scope, receive)


def cpu_ms(read_one: ReadOne, content_type: str, body: bytes, repeats: int) -> float:
    """Median thread CPU ms of one read_one call (the chunks are sliced beforehand)."""
    settings = Settings()
    loop = asyncio.new_event_loop()
    times = []
    try:
        for _ in range(repeats):
            req = request(content_type, body, settings)
            with BodyBudget(settings.body_budget_bytes).hold() as hold:
                start = time.thread_time()
                upload = loop.run_until_complete(read_one(req, settings, hold))
                times.append(time.thread_time() - start)
            assert len(upload.data) < len(body) + 1  # the image, not the envelope
    finally:
        loop.close()
    return 1e3 * statistics.median(times)


def _module_at(revision: str, path: str) -> types.ModuleType:
    """``path`` as it is at git ``revision``, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(f"{Path(path).stem}_at_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
    return module


def baseline_module(revision: str) -> types.ModuleType:
    """uploads.py as it is at ``revision``, with that revision's wire schemas."""
    schemas = _module_at(revision, "service/http/schemas.py")
    current_schemas = sys.modules["service.http.schemas"]
    sys.modules["service.http.schemas"] = schemas
    try:
        return _module_at(revision, "service/http/uploads.py")
    finally:
        sys.modules["service.http.schemas"] = current_schemas


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default=None, help="a git revision to compare with")
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS_ROOT / "upload_cost.json")
    args = p.parse_args()
    versions: dict[str, ReadOne] = {"after": current.read_one}
    if args.baseline:
        versions = {"before": baseline_module(args.baseline).read_one, **versions}
    samples: dict[str, list[float]] = {}
    images = photos()
    sizes = {name: len(data) for name, data in images.items()}
    for _ in range(args.rounds):  # interleaved: a noisy neighbour slows every variant alike
        for size_name, image in images.items():
            for encoding, (content_type, body) in bodies(image).items():
                for version, read_one in versions.items():
                    key = f"{size_name}|{encoding}|{version}"
                    ms = cpu_ms(read_one, content_type, body, args.repeats)
                    samples.setdefault(key, []).append(ms)
    results: dict[str, Any] = {"load_average": os.getloadavg(), "rows": []}
    print("| upload | encoding | version | CPU ms/request | CPU ms/MB |\n|---|---|---|---|---|")
    for key, values in samples.items():
        size_name, encoding, version = key.split("|")
        ms = statistics.median(values)
        per_mb = ms / (sizes[size_name] / 1e6)
        row = {"upload": size_name, "encoding": encoding, "version": version, "ms": ms}
        results["rows"].append(row | {"ms_per_mb": per_mb})
        print(f"| {size_name} | {encoding} | {version} | {ms:.2f} | {per_mb:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
