"""Peak memory of decoding one image, in bytes per decoded pixel, by format and mode.

A decode costs Pillow's own pixels, once or twice at a time (a mode conversion, an EXIF
rotation, the premultiplied copy an RGBA resize makes), plus what the codec holds beside them:
nothing to speak of for the streaming decoders (JPEG, PNG, GIF, BMP, TIFF); for WebP, the two
RGBA canvases of libwebp's animation decoder (which Pillow uses for every WebP) and the frame's
copy; for HEIF and AVIF, the YUV planes and an interleaved RGB copy. The figures are measured
(bench/experiments/decode_memory.py, docs/decisions/decode-memory.md) and rounded up: the model
is below a measurement by at most ~2 MB of fixed buffers, above it by at most 2.6 bytes per
pixel (4.5 for greyscale HEIC and AVIF, charged as colour).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CodecCost:
    """Bytes per pixel a codec needs beside Pillow's own pixels."""

    while_decoding: float  # at the peak of the decode itself
    with_alpha: float  # the same, for an image with an alpha channel
    kept: float  # held by the codec until the image is dropped (through the resize)


_STREAMING = CodecCost(0.0, 0.0, 0.0)
_CODECS: dict[str, CodecCost] = {
    # 2 canvases x 4 B + the frame's bytes 4 B + lossless's ARGB rows; the canvases stay.
    "WEBP": CodecCost(14.25, 14.25, 8.0),
    # 4:2:0 YUV 1.5 B + RGB(A) 3-4 B; 4:4:4 (3 B of YUV) is the worst measured.
    "HEIF": CodecCost(6.5, 6.5, 0.0),
    # libavif's YUV and RGB(A) buffers, then Python's copy of the frame; its decoder keeps ~2.3 B.
    "AVIF": CodecCost(7.0, 7.75, 2.5),
}
# Pillow keeps these modes in 1 or 2 bytes per pixel, every other mode in 4.
_NARROW = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_PREMULTIPLIED_FOR_RESIZE = frozenset({"RGBA", "LA"})


def stored_bytes(mode: str) -> int:
    """Bytes per pixel of an image of ``mode`` in Pillow's memory."""
    return _NARROW.get(mode, 4)


def bytes_per_pixel(fmt: str, mode: str, target: str, has_alpha: bool, rotated: bool) -> float:
    """Peak bytes per pixel while an image of format ``fmt`` opened in ``mode`` is decoded,
    turned upright (``rotated``: by an EXIF orientation), converted to ``target`` (the mode it
    is resampled in) and resized. The image is freed when its converted copy exists."""
    codec = _CODECS.get(fmt, _STREAMING)
    decoded = stored_bytes(mode)
    resampled = stored_bytes(target)
    premultiplied = resampled if target in _PREMULTIPLIED_FOR_RESIZE else 0
    pipeline = max(
        2 * decoded if rotated else decoded,  # exif_transpose writes a new image, then swaps
        decoded + resampled if target != mode else decoded,  # both exist while converting
        resampled + premultiplied,
    )
    while_decoding = codec.with_alpha if has_alpha else codec.while_decoding
    return max(decoded + while_decoding, codec.kept + pipeline)
