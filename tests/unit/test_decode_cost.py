"""The decode budget charges each format what it costs (service.inference.decode_cost, measured
by bench/experiments/decode_memory.py): a lossless WebP pixel ~2.3 budget pixels, a JPEG pixel
half of one; an image whose decode alone would take more than the whole budget is refused, so
decode memory stays within the budget whatever arrives."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from PIL import Image, ImageFile

from service.errors import ImageTooLarge
from service.inference.preprocess import PreprocessSpec, decode_cost, open_image, preprocess
from service.limits.pixel_budget import PixelBudget

SPEC = PreprocessSpec()
SIDE = 400  # small enough that no JPEG draft applies: every pixel is decoded


class RecordingBudget(PixelBudget):
    def __init__(self, capacity_pixels: int) -> None:
        super().__init__(capacity_pixels)
        self.charges: list[int] = []

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        self.charges.append(pixels)
        with super().reserve(pixels):
            yield


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def picture(mode: str) -> Image.Image:
    image = Image.effect_noise((SIDE, SIDE), 40).convert("RGB")
    if mode == "RGBA":
        image.putalpha(128)
    return image.convert(mode)


def rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


# Bytes per pixel: (format, params, mode) -> the measured peak, rounded up (an RGBA PNG's 8
# bytes are one budget pixel).
CASES = {
    "png_rgba": (("PNG", {}, "RGBA"), 8.0),
    "png_rgb": (("PNG", {}, "RGB"), 4.0),
    "png_l": (("PNG", {}, "L"), 1.0),
    "gif_palette": (("GIF", {}, "P"), 5.0),  # converted to RGB: both exist for a moment
    "png_palette_transparent": (("PNG", {"transparency": 0}, "P"), 5.0),  # on white in palette
    "jpeg_rgb": (("JPEG", {}, "RGB"), 4.0),
    "jpeg_rgb_rotated": (("JPEG", {"exif": rotated()}, "RGB"), 8.0),  # transposed: a copy
    "jpeg_cmyk": (("JPEG", {}, "CMYK"), 8.0),
    "webp_lossy": (("WEBP", {"quality": 80}, "RGB"), 18.25),
    "webp_lossless": (("WEBP", {"lossless": True}, "RGBA"), 18.25),
    "heic": (("HEIF", {"enc_params": {"preset": "ultrafast"}}, "RGB"), 10.5),
    "avif": (("AVIF", {"speed": 10}, "RGB"), 11.0),
    "avif_rgba": (("AVIF", {"speed": 10}, "RGBA"), 11.75),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_format_is_charged_its_measured_cost(case: str) -> None:
    (fmt, params, mode), bytes_per_pixel = CASES[case]
    budget = RecordingBudget(10 * SIDE * SIDE)
    preprocess(encode(picture(mode), fmt, **params), SPEC, budget=budget)
    assert budget.charges == [round(SIDE * SIDE * bytes_per_pixel / 8)]


def test_a_webp_whose_decode_exceeds_the_whole_budget_is_refused_and_a_png_is_not() -> None:
    """Issue 22: a 1.5 KB lossless WebP of 16000x2400 costs ~590 MB to decode; charged as
    pixels alike, it passed a budget meant to hold 320 MB. Here in miniature: a budget that
    holds the picture as PNG (8 B per pixel) but not as WebP (18)."""
    budget = PixelBudget(2 * SIDE * SIDE)
    flat = Image.new("RGBA", (SIDE, SIDE), (90, 90, 90, 255))
    preprocess(encode(flat, "PNG"), SPEC, budget=budget)
    with pytest.raises(ImageTooLarge, match=r"400x400 WebP image \(RGB\) would take about 2.9 MB"):
        preprocess(encode(flat, "WEBP", lossless=True), SPEC, budget=budget)
    assert budget.in_use == 0


def test_the_cost_is_read_without_decoding_a_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the budget is reserved nothing may be decoded, even to find an EXIF orientation
    (Pillow's PNG getexif() would load the whole image to look for it)."""
    loads: list[str] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        loads.append(str(self.format))
        return real_load(self)

    for fmt, params, mode in [case for case, _ in CASES.values()]:
        image = open_image(encode(picture(mode), fmt, **params), 10**9)
        monkeypatch.setattr(type(image), "load", spy)
        assert decode_cost(image) > 0
        monkeypatch.undo()
    assert loads == []
