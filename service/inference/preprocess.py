"""Bytes -> the model's input pixels. Pure functions, no I/O but the bytes given.

This is the ONLY preprocessing in the project: build/ imports it for calibration and
evaluation, so what the int8 model was calibrated on is exactly what it is served.

The model graph takes uint8 NHWC and normalises inside itself (see build/), so the output here
is just the resized, centre-cropped RGB pixels: no float maths per request. Every format is read
the same way: upright (EXIF orientation, or HEIF/AVIF's own rotation), embedded colour profiles
not applied (as the model was trained), alpha composited on white, wide samples scaled to 8 bits.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pillow_heif
from PIL import ExifTags, Image, ImageOps

from service.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.inference import decode_cost as decode_cost_model
from service.limits.pixel_budget import BYTES_PER_BUDGET_PIXEL, PixelBudget

Pixels = npt.NDArray[np.uint8]

# HEIC/HEIF through libheif (pillow-heif); AVIF is Pillow's own. Only the primary image is ever
# decoded: embedded thumbnails, depth maps and auxiliary (gain map) images are not even listed.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

# Pillow format names we accept (as the caller would write them), and the media types that
# announce them: the first one of each is the canonical type, listed in OpenAPI and in the 415.
FORMAT_NAMES: dict[str, str] = {
    "JPEG": "JPEG",
    "PNG": "PNG",
    "WEBP": "WebP",
    "GIF": "GIF",
    "BMP": "BMP",
    "TIFF": "TIFF",
    "HEIF": "HEIC/HEIF",
    "AVIF": "AVIF",
}
SUPPORTED_FORMATS: tuple[str, ...] = tuple(FORMAT_NAMES)
MEDIA_TYPES: tuple[str, ...] = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/tiff",
    "image/heic",
    "image/heif",
    "image/avif",
)
SUPPORTED_MEDIA_TYPES: frozenset[str] = frozenset(
    {*MEDIA_TYPES, "image/jpg", "image/pjpeg", "image/x-bmp", "image/x-ms-bmp"}
)
_WHITE = (255, 255, 255)


# The JPEG draft: decode at 1/2, 1/4 or 1/8 scale while both sides stay at least this many times
# resize_size; None decodes every pixel. Chosen by measurement (docs/decisions/jpeg-draft.md):
# at 12 MP no draft keeps >= 99.5 % top-1 agreement with the full decode, so none by default.
DRAFT_MARGIN: float | None = None


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    """Resize the shorter side to ``resize_size`` (bilinear), then centre-crop ``crop_size``:
    the torchvision ImageNet evaluation transform, without the normalisation. A JPEG is first
    decoded at reduced scale as ``draft_margin`` allows (None: every pixel decoded)."""

    resize_size: int = 256
    crop_size: int = 224
    draft_margin: float | None = DRAFT_MARGIN


def check_media_type(content_type: str | None) -> None:
    """Reject a declared type we cannot decode (415). ``None`` means "sniff the bytes"."""
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in ("", "application/octet-stream"):
        return
    if media_type not in SUPPORTED_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"unsupported media type {media_type!r}; send one of: {', '.join(MEDIA_TYPES)}"
        )


def _format_list() -> str:
    names = list(FORMAT_NAMES.values())
    return f"{', '.join(names[:-1])} or {names[-1]}"


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Read only the header: format and size are checked before any pixel is decoded."""
    if not data:
        raise BadImage("the image is empty")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit applies below; Pillow's bomb warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image has too many pixels: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for garbage; all mean "not an image"
        raise BadImage("the data is not a decodable image") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedMediaType(
            f"image format {image.format} is not supported; send {_format_list()}"
        )
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if width < 1 or height < 1:
        raise BadImage("the image has no pixels")
    return image


# Modes that Pillow resamples with the bilinear filter as they are (RGBA and LA premultiplied
# by alpha inside resize). Everything else ("1", "P", CMYK, YCbCr, ...) is converted first:
# Pillow resizes "1" and "P" with nearest-neighbour only.
_RESAMPLABLE = frozenset({"RGB", "L", "RGBA", "LA", "I;16", "I;16B", "I;16L", "I", "F"})
_WIDE = frozenset({"I;16", "I;16B", "I;16L", "I"})


def _resample_mode(image: Image.Image) -> str:
    """The mode ``image`` is resampled in: its own, or the one it is converted to first."""
    if image.mode in _RESAMPLABLE:
        return image.mode
    if image.mode in ("PA", "RGBa", "La"):
        return "RGBA"
    return "RGB"  # a palette's transparency is composited in the palette first


def _resamplable(image: Image.Image) -> Image.Image:
    if image.mode == "P" and "transparency" in image.info:
        _palette_on_white(image)
    target = _resample_mode(image)
    return image if target == image.mode else image.convert(target)


def _palette_on_white(image: Image.Image) -> None:
    """Composite a palette image's transparency on white in its palette, in place: the same
    pixels as compositing after the resize (both are linear), from one RGB copy instead of an
    RGBA one, its premultiplied copy and Pillow's intermediate (5 bytes per pixel, not 9)."""
    colours = np.array(image.getpalette("RGB") or [], dtype=np.float64).reshape(-1, 3)
    alpha = np.full(len(colours), 255.0)
    transparency = image.info.pop("transparency")
    if isinstance(transparency, bytes):
        alpha[: len(transparency)] = np.frombuffer(transparency, np.uint8)[: len(colours)]
    elif isinstance(transparency, int) and transparency < len(colours):
        alpha[transparency] = 0.0
    blended = colours * (alpha[:, None] / 255.0) + 255.0 * (1.0 - alpha[:, None] / 255.0)
    image.putpalette(np.rint(blended).astype(np.uint8).tobytes(), "RGB")


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.mode or "a" in image.mode or "transparency" in image.info


def _rotated(image: Image.Image) -> bool:
    """Whether exif_transpose will turn the image, read without decoding a pixel: Pillow's PNG
    getexif() would decode the whole image to look for an EXIF chunk after the pixels."""
    try:
        if image.format == "PNG":
            exif = Image.Exif()
            exif.load(image.info.get("exif", b""))
        else:
            exif = image.getexif()
        return exif.get(ExifTags.Base.Orientation, 1) in range(2, 9)
    except Exception:  # broken EXIF: decode() reports it; charge the rotation meanwhile
        return True


def decode_cost(image: Image.Image) -> int:
    """Budget pixels (BYTES_PER_BUDGET_PIXEL each) that decoding the opened ``image`` takes at
    its peak, at the size it will be decoded (after draft()): its format's measured cost."""
    per_pixel = decode_cost_model.bytes_per_pixel(
        str(image.format), image.mode, _resample_mode(image), _has_alpha(image), _rotated(image)
    )
    return math.ceil(image.width * image.height * per_pixel / BYTES_PER_BUDGET_PIXEL)


def _wide_scale(image: Image.Image) -> int:
    """What 16/32-bit greyscale is scaled down from: the full 16-bit range for I;16, else 255
    unless a value exceeds it. Read from the whole image (getextrema makes no copy)."""
    if image.mode.startswith("I;16"):
        return 65535
    top = image.getextrema()[1]
    return 65535 if isinstance(top, int | float) and top > 255 else 255


def _to_rgb(image: Image.Image, wide_scale: int) -> Image.Image:
    """The (small, already cropped) image to RGB. Transparency is composited on white (what a
    viewer shows), and 16/32-bit greyscale is scaled, not clipped, to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE:
        wide = np.asarray(image, dtype=np.int64)
        scaled = np.clip(wide, 0, wide_scale) * 255 // wide_scale
        image = Image.fromarray(scaled.astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def draft(image: Image.Image, spec: PreprocessSpec) -> None:
    """For JPEG, let libjpeg downscale in the DCT domain by 1/2, 1/4 or 1/8 while both sides
    stay >= draft_margin x resize_size: a 12 MP photo decodes several times faster, into a
    fraction of the memory, and the bilinear resize that follows sees nearly the same pixels.
    Reads no pixels; ``image.size`` is the size that will be decoded afterwards."""
    if image.format == "JPEG" and spec.draft_margin is not None:
        side = math.ceil(spec.resize_size * spec.draft_margin)
        image.draft("RGB", (side, side))


def decode(image: Image.Image) -> Image.Image:
    """Decode to an upright image in a mode resize_crop can resample (see _RESAMPLABLE), with
    no more full-size copies than the format needs: a 40-megapixel RGB PNG is one 120 MB array
    while it is resized, not three."""
    try:
        image.load()
        # In place: no copy of an upright image (most are); a rotated one is transposed once.
        ImageOps.exif_transpose(image, in_place=True)
        return _resamplable(image)
    except (ImageTooLarge, BadImage):
        raise
    except Exception as exc:  # truncated data, bad Huffman tables, broken EXIF, ...
        raise BadImage(f"the image could not be decoded: {exc}") from exc


def resize_crop(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """torchvision's Resize(resize_size) + CenterCrop(crop_size), on PIL, in the image's mode.

    Done as ONE resample of the crop's source box straight to crop_size: Pillow's filter still
    reads the pixels around the box, so the result matches resize-then-crop to within 1 LSB
    (mean 0.02 on the ImageNet samples), while only crop_size^2 output pixels are computed
    instead of the whole resized image: 0.87 vs 1.44 ms CPU on a 500x375 photo."""
    width, height = image.size
    if width <= height:
        new_w, new_h = spec.resize_size, int(spec.resize_size * height / width)
    else:
        new_w, new_h = int(spec.resize_size * width / height), spec.resize_size
    left = round((new_w - spec.crop_size) / 2.0)
    top = round((new_h - spec.crop_size) / 2.0)
    scale_x, scale_y = width / new_w, height / new_h
    box = (
        left * scale_x,
        top * scale_y,
        (left + spec.crop_size) * scale_x,
        (top + spec.crop_size) * scale_y,
    )
    size = (spec.crop_size, spec.crop_size)
    return image.resize(size, Image.Resampling.BILINEAR, box=box)


def preprocess(
    data: bytes,
    spec: PreprocessSpec,
    max_pixels: int = 50_000_000,
    budget: PixelBudget | None = None,
) -> Pixels:
    """Encoded image bytes -> (crop, crop, 3) uint8 RGB. Raises BadImage, ImageTooLarge or
    UnsupportedMediaType; never anything else. With a ``budget``, full-size pixels exist only
    while the budget has room for what they cost (service.limits.pixel_budget), and an image
    whose decode alone would take more than the whole budget is refused; the result is the same
    without."""
    image = open_image(data, max_pixels)
    draft(image, spec)
    cost = decode_cost(image)  # at the size that will be decoded: after JPEG's DCT scaling
    if budget is not None and cost > budget.capacity:
        raise ImageTooLarge(_over_budget(image, cost, budget.capacity))
    with budget.reserve(cost) if budget is not None else contextlib.nullcontext():
        # Rebound, so the image as opened is freed as soon as its converted copy exists.
        image = decode(image)
        wide_scale = _wide_scale(image) if image.mode in _WIDE else 255
        small = resize_crop(image, spec)
        del image  # the full-size pixels go before the budget is released
    return np.asarray(_to_rgb(small, wide_scale), dtype=np.uint8)


def _over_budget(image: Image.Image, cost: int, capacity: int) -> str:
    kind = FORMAT_NAMES.get(str(image.format), str(image.format))
    return (
        f"decoding this {image.width}x{image.height} {kind} image ({image.mode}) would take "
        f"about {_mb(cost)} MB, more than this server decodes at once ({_mb(capacity)} MB); "
        "send it smaller or in a format that costs less to decode (JPEG, PNG)"
    )


def _mb(budget_pixels: int) -> str:
    mb = budget_pixels * BYTES_PER_BUDGET_PIXEL / 1e6
    return f"{mb:.0f}" if mb >= 10 else f"{mb:.1f}"
