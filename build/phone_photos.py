"""Phone-size photos made from the labeled images: what callers send, as the build, the draft
experiment and the phone benchmark see it.

Phones send 12 MP (4032x3024) and ~3 MP photos; the labeled set is ~500x375. Each image is
upscaled to a phone size (aspect kept, bicubic), given seeded light noise (sensor grain:
Gaussian, sigma 2 levels, seeded by the image's name, as a 509-pixel tile repeated: 5x cheaper
than noise per pixel, and a prime period never lines up with JPEG's 8x8 blocks) and saved as
JPEG quality 90, 4:2:0, as a phone camera writes it. The same bytes with the same Pillow.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pillow_heif
from PIL import Image

from service.process import available_cpus

# name -> pixels; the 12 MP one is exactly 4032x3024 for a 4:3 image.
PHONE_SIZES: dict[str, int] = {"12mp": 4032 * 3024, "3mp": 2016 * 1512}
NOISE_SIGMA = 2.0
NOISE_TILE = 509
JPEG_QUALITY = 90
HEIC_QUALITY = 66
_FAST_HEVC = {"preset": "ultrafast"}
Kind = Literal["jpeg", "heic"]
_RECIPE = f"bicubic|{NOISE_SIGMA}|{NOISE_TILE}|q{JPEG_QUALITY}|v1"  # in the cache key


def phone_size(size: tuple[int, int], pixels: int) -> tuple[int, int]:
    """``size`` scaled to about ``pixels``, aspect kept."""
    factor = math.sqrt(pixels / (size[0] * size[1]))
    return round(size[0] * factor), round(size[1] * factor)


def phone_photo(image: Image.Image, pixels: int, seed: int) -> Image.Image:
    big = image.convert("RGB").resize(phone_size(image.size, pixels), Image.Resampling.BICUBIC)
    tile = np.random.default_rng(seed).standard_normal((NOISE_TILE, NOISE_TILE, 3))
    grain = np.rint(tile * NOISE_SIGMA).astype(np.int16)
    repeats = (math.ceil(big.height / NOISE_TILE), math.ceil(big.width / NOISE_TILE), 1)
    noisy = np.asarray(big, dtype=np.int16) + np.tile(grain, repeats)[: big.height, : big.width]
    np.clip(noisy, 0, 255, out=noisy)
    return Image.fromarray(noisy.astype(np.uint8), "RGB")


def phone_jpeg(data: bytes, pixels: int, seed: int) -> bytes:
    """The encoded image ``data`` as a phone-size JPEG (quality 90)."""
    return _phone_file(data, pixels, seed, "jpeg")


def _phone_file(data: bytes, pixels: int, seed: int, kind: Kind) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        photo = phone_photo(image, pixels, seed)
    out = io.BytesIO()
    if kind == "jpeg":
        photo.save(out, "JPEG", quality=JPEG_QUALITY)
    else:  # as iPhones tile it; x265's fastest preset, or a 12 MP photo takes ~15 s to encode
        heif = pillow_heif.from_pillow(photo)
        heif.save(out, quality=HEIC_QUALITY, tile_size=512, enc_params=_FAST_HEVC)
    return out.getvalue()


def seed_of(path: Path) -> int:
    """A seed per image that does not depend on the order images are listed in."""
    return int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:4], "big")


def phone_jpegs(paths: Sequence[Path], size_name: str, cache: Path | None = None) -> list[bytes]:
    """Every image of ``paths`` at the phone size ``size_name``; written to and read back from
    ``cache`` (a folder, keyed by content and recipe) when given: a 12 MP one takes ~0.5 s."""
    return _phone_files(paths, size_name, "jpeg", cache)


def phone_heics(paths: Sequence[Path], size_name: str, cache: Path | None = None) -> list[bytes]:
    """The same photos as HEIC (quality 66: 1.6-2.7 MB at 12 MP, as an iPhone's); ~4 s each."""
    return _phone_files(paths, size_name, "heic", cache)


def _phone_files(
    paths: Sequence[Path], size_name: str, kind: Kind, cache: Path | None
) -> list[bytes]:
    pixels = PHONE_SIZES[size_name]
    recipe = _RECIPE if kind == "jpeg" else f"{_RECIPE}|heic q{HEIC_QUALITY}"
    suffix = "jpg" if kind == "jpeg" else "heic"

    def one(path: Path) -> bytes:
        data = path.read_bytes()
        key = hashlib.sha256(data + f"{recipe}|{pixels}|{seed_of(path)}".encode()).hexdigest()
        cached = None if cache is None else cache / f"{key[:32]}.{suffix}"
        if cached is not None and cached.is_file():
            return cached.read_bytes()
        photo = _phone_file(data, pixels, seed_of(path), kind)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f"{cached.name}.{os.getpid()}.{threading.get_ident()}")
            partial.write_bytes(photo)
            partial.replace(cached)  # whole or absent: builds may share the cache
        return photo

    # On every CPU: Pillow and libheif release the GIL while they resize and encode.
    with ThreadPoolExecutor(available_cpus()) as pool:
        return list(pool.map(one, paths))
