"""Decode memory per format and mode: what service.inference.preprocess really costs, in bytes
of peak RSS per decoded pixel, against what the pixel budget charges (issue 22, item 7).

Each case is a real file of one format and mode, written by Pillow or pillow-heif from a photo
upscaled to --size with light noise. It is decoded in a fresh interpreter, after a warm-up decode
of a small file of the same kind (the codec's libraries and tables are not the image's cost),
with glibc's mmap threshold as the service sets it and the JPEG draft off (every pixel decoded):
peak RSS (VmHWM, reset through /proc/self/clear_refs) minus RSS before, divided by the pixels.

    python -m bench.experiments.decode_memory [--size 4032x3024] [--cases webp_lossless_rgb,...]

Writes bench/results/decode_memory.json; docs/decisions/decode-memory.md holds the figures.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from PIL import Image

import service.inference.preprocess as pp
from service import paths
from service.limits.pixel_budget import BYTES_PER_BUDGET_PIXEL
from service.process import return_large_frees_to_os

RESULTS = Path(__file__).resolve().parent.parent / "results" / "decode_memory.json"
SOURCE = "photos/chelsea.png"
Encoder = Callable[[Image.Image], bytes]


def _save(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _with_alpha(image: Image.Image) -> Image.Image:
    """A left-to-right alpha ramp: transparency that a codec cannot drop as opaque."""
    rgba = image.convert("RGBA")
    ramp = np.linspace(0, 255, image.width, dtype=np.uint8)
    rgba.putalpha(Image.fromarray(np.broadcast_to(ramp, (image.height, image.width)).copy()))
    return rgba


def _grey16(image: Image.Image) -> Image.Image:
    wide = np.asarray(image.convert("L"), dtype=np.uint16) * 257
    return Image.frombuffer("I;16", image.size, wide.tobytes(), "raw", "I;16", 0, 1)


def _png48(image: Image.Image) -> bytes:
    """A 48-bit RGB PNG, written by hand: Pillow reads them but cannot write them."""
    wide = np.asarray(image, dtype=">u2") * 257
    rows = b"".join(b"\0" + row.tobytes() for row in wide)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", image.width, image.height, 16, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    idat = zlib.compress(rows, 1)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _heic_10bit(image: Image.Image) -> bytes:
    import pillow_heif

    wide = (np.asarray(image, dtype=np.uint16) * 257).astype("<u2")
    heif = pillow_heif.from_bytes(mode="RGB;16", size=image.size, data=wide.tobytes())
    out = io.BytesIO()
    heif.save(out, format="HEIF", quality=90)
    return out.getvalue()


def _rotated(image: Image.Image, fmt: str, **params: Any) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the decode turns it upright, one more full-size copy
    return _save(image, fmt, exif=exif.tobytes(), **params)


CASES: dict[str, Encoder] = {
    "jpeg_rgb": lambda im: _save(im, "JPEG", quality=90),
    "jpeg_rgb_rotated": lambda im: _rotated(im, "JPEG", quality=90),
    "jpeg_l": lambda im: _save(im.convert("L"), "JPEG", quality=90),
    "jpeg_cmyk": lambda im: _save(im.convert("CMYK"), "JPEG", quality=90),
    "png_rgb": lambda im: _save(im, "PNG", compress_level=1),
    "png_rgba": lambda im: _save(_with_alpha(im), "PNG", compress_level=1),
    "png_rgba_rotated": lambda im: _rotated(_with_alpha(im), "PNG", compress_level=1),
    "png_l": lambda im: _save(im.convert("L"), "PNG", compress_level=1),
    "png_la": lambda im: _save(_with_alpha(im).convert("LA"), "PNG", compress_level=1),
    "png_p": lambda im: _save(im.quantize(256), "PNG", compress_level=1),
    "png_p_transparent": lambda im: _save(im.quantize(256), "PNG", transparency=0),
    "png_l16": lambda im: _save(_grey16(im), "PNG", compress_level=1),
    "png_rgb48": _png48,
    "webp_lossy_rgb": lambda im: _save(im, "WEBP", quality=90),
    "webp_lossy_rgba": lambda im: _save(_with_alpha(im), "WEBP", quality=90),
    "webp_lossless_rgb": lambda im: _save(im, "WEBP", lossless=True, method=0),
    "webp_lossless_rgba": lambda im: _save(_with_alpha(im), "WEBP", lossless=True, method=0),
    # issue 22's case: a few hundred bytes, any number of pixels
    "webp_lossless_flat": lambda im: _save(Image.new("RGB", im.size, 90), "WEBP", lossless=True),
    "gif": lambda im: _save(im.quantize(256), "GIF"),
    "gif_transparent": lambda im: _save(im.quantize(256), "GIF", transparency=0),
    "tiff_rgb": lambda im: _save(im, "TIFF", compression="tiff_deflate"),
    "tiff_rgba": lambda im: _save(_with_alpha(im), "TIFF", compression="tiff_deflate"),
    "tiff_l16": lambda im: _save(_grey16(im), "TIFF", compression="tiff_deflate"),
    "tiff_cmyk": lambda im: _save(im.convert("CMYK"), "TIFF", compression="tiff_deflate"),
    "bmp_rgb": lambda im: _save(im, "BMP"),
    "heic_rgb": lambda im: _save(im, "HEIF", quality=90),
    "heic_rgba": lambda im: _save(_with_alpha(im), "HEIF", quality=90),
    "heic_10bit": _heic_10bit,
    "heic_444": lambda im: _save(im, "HEIF", quality=90, chroma="444"),
    "heic_l": lambda im: _save(im.convert("L"), "HEIF", quality=90),
    "heic_rgb_rotated": lambda im: _rotated(im, "HEIF", quality=90),
    "avif_rgb": lambda im: _save(im, "AVIF", quality=90, speed=10),
    "avif_rgba": lambda im: _save(_with_alpha(im), "AVIF", quality=90, speed=10),
    "avif_444": lambda im: _save(im, "AVIF", quality=90, speed=10, subsampling="4:4:4"),
    "avif_l": lambda im: _save(im.convert("L"), "AVIF", quality=90, speed=10),
    "avif_rgb_rotated": lambda im: _rotated(im, "AVIF", quality=90, speed=10),
}


def photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A natural photo at ``size``, with light noise so lossless codecs compress as on a photo."""
    base = Image.open(paths.data_dir() / SOURCE).convert("RGB")
    big = np.asarray(base.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(seed).normal(0, 3, big.shape)
    return Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8), "RGB")


def _status_kb(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0])


def child(path: Path, warm: Path) -> dict[str, Any]:
    """In the fresh interpreter: one decode's peak RSS over the RSS before it."""
    return_large_frees_to_os()
    spec = pp.PreprocessSpec()
    with mock.patch.object(pp, "draft", return_value=None):
        pp.preprocess(warm.read_bytes(), spec, 10**9)
        data = path.read_bytes()
        image = pp.open_image(data, 10**9)
        pixels, charged = image.width * image.height, pp.decode_cost(image)
        del image
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _status_kb("VmRSS")
        pp.preprocess(data, spec, 10**9)
        peak = _status_kb("VmHWM")
    return {
        "pixels": pixels,
        "file_bytes": len(data),
        "peak_mb": round((peak - before) / 1024, 1),
        "bytes_per_pixel": round((peak - before) * 1024 / pixels, 2),
        "charged_bytes_per_pixel": round(charged * BYTES_PER_BUDGET_PIXEL / pixels, 2),
    }


def measure(case: str, image: Image.Image, folder: Path) -> dict[str, Any]:
    path, warm = folder / f"{case}.bin", folder / f"{case}.warm"
    path.write_bytes(CASES[case](image))
    warm.write_bytes(CASES[case](image.resize((64, 48))))
    command = [sys.executable, "-m", __spec__.name, "--child", str(path), str(warm)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(result.stdout))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="4032x3024")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    width, height = (int(x) for x in args.size.split("x"))
    image = photo((width, height))
    results: dict[str, Any] = {"size": args.size}
    with tempfile.TemporaryDirectory() as folder:
        for case in args.cases.split(","):
            results[case] = measure(case, image, Path(folder))
            print(f"{case:22} {json.dumps(results[case])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
