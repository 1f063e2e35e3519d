"""The service's memory worst case with its default settings (issue 22, item 7): both budgets
full at once. Slow uploads of a 19.5 MB PNG hold the body budget (all but their last byte sent)
while the costliest images per decoded byte arrive together: a 40 MP RGBA PNG, a lossless WebP,
a HEIC and an AVIF, each as large as the decode budget admits (charged by
service/inference/decode_cost.py). Peak RSS (VmHWM) of the server over its RSS at ready.

    python -m bench.experiments.memory_worst_case [--model resnet18]

Prints one JSON line per phase; writes bench/results/memory_worst_case.json.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pillow_heif
from PIL import Image

from bench import launch
from bench.config import RESULTS_ROOT
from service import paths

SLOW_UPLOADS = 16
PNG_SIDE = 6300  # 39.7 MP: just under the default IMGCLS_MAX_IMAGE_PIXELS
# What the default decode budget (320 MB) admits of each costlier format (docs/guide/images.md)
LARGEST: dict[str, tuple[str, str, int]] = {  # name -> (Pillow format, media type, megapixels)
    "webp": ("WEBP", "image/webp", 17),
    "heic": ("HEIF", "image/heic", 29),
    "avif": ("AVIF", "image/avif", 26),
}


ENCODER_PARAMS: dict[str, dict[str, Any]] = {
    "webp": {"lossless": True},
    "heic": {"quality": 50, "enc_params": {"preset": "ultrafast"}},
    "avif": {"quality": 50, "speed": 10},
}


def ramp(side_w: int, side_h: int, channels: int) -> Image.Image:
    """A compressible image (a few MB at 40 MP), so that it fits the upload limit."""
    pixels = np.empty((side_h, side_w, channels), dtype=np.uint8)
    pixels[..., 0] = np.linspace(0, 255, side_h, dtype=np.uint8)[:, None]
    pixels[..., 1] = np.linspace(0, 255, side_w, dtype=np.uint8)[None, :]
    pixels[..., 2:] = 128
    return Image.fromarray(pixels, "RGBA" if channels == 4 else "RGB")


def encoded(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def images() -> dict[str, tuple[str, bytes]]:
    pillow_heif.register_heif_opener()
    result = {
        "png_rgba_40mp": (
            "image/png",
            encoded(ramp(PNG_SIDE, PNG_SIDE, 4), "PNG", compress_level=1),
        )
    }
    for name, (fmt, media_type, megapixels) in LARGEST.items():
        height = int(math.sqrt(megapixels * 1e6 * 3 / 4))
        image = ramp(height * 4 // 3, height, 3)
        params = ENCODER_PARAMS[name]
        result[f"{name}_{megapixels}mp"] = (media_type, encoded(image, fmt, **params))
    return result


def rss_mb(pid: int, field: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024


def hold_bodies(url: str, body: bytes) -> list[socket.socket]:
    """SLOW_UPLOADS connections that send a head and all but the last byte of ``body``."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/classify HTTP/1.1\r\nHost: imgcls\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    socks = []
    for _ in range(SLOW_UPLOADS):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(head)
        socks.append(sock)
    time.sleep(1.0)  # the heads parsed: those over the body budget are refused at once
    for sock in socks:
        try:
            sock.sendall(body[:-1])
        except OSError:
            continue  # refused (503) and closed
    return socks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--artifacts", type=Path, default=paths.artifacts_dir())
    p.add_argument("--out", type=Path, default=RESULTS_ROOT / "memory_worst_case.json")
    args = p.parse_args()
    pictures = images()
    sizes = {name: round(len(data) / 1e6, 2) for name, (_, data) in pictures.items()}
    print(json.dumps({"files_mb": sizes}), flush=True)
    slow_body = encoded(ramp(2600, 2600, 3), "PNG", compress_level=0)[:19_500_000]
    port = launch.free_port()
    env = {
        "IMGCLS_MODEL_DIR": str(args.artifacts / args.model),
        "IMGCLS_PORT": str(port),
        "IMGCLS_REQUEST_TIMEOUT_S": "300",
    }
    log = args.out.with_suffix(".log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "service"]
    with launch.started(command, port, log, env) as server:
        pid = server.proc.pid
        ready = rss_mb(pid, "VmRSS")
        socks = hold_bodies(server.url, slow_body)
        time.sleep(2.0)
        holding = rss_mb(pid, "VmRSS")
        with ThreadPoolExecutor(len(pictures)) as pool:
            answers = dict(
                zip(
                    pictures,
                    pool.map(
                        lambda item: (
                            httpx.post(
                                f"{server.url}/v1/classify",
                                content=item[1],
                                headers={"Content-Type": item[0]},
                                timeout=300,
                            ).status_code
                        ),
                        pictures.values(),
                    ),
                    strict=True,
                )
            )
        for sock in socks:
            sock.close()
        result = {
            "model": args.model,
            "rss_at_ready_mb": round(ready, 1),
            "rss_bodies_held_mb": round(holding, 1),
            "peak_rss_mb": round(rss_mb(pid, "VmHWM"), 1),
            "answers": answers,
            "files_mb": sizes,
        }
    print(json.dumps(result), flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
