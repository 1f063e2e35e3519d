"""The decode path (service.inference.preprocess) under hostile bytes, every accepted format
(HEIC/HEIF and AVIF included): whatever it is given, it returns the model's (224, 224, 3) uint8
input or raises one of its three documented errors. Anything else (another exception type, a
wrong shape) would reach a caller as a 500."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from service.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.inference.preprocess import PreprocessSpec, preprocess

SPEC = PreprocessSpec()
MAX_PIXELS = 4_000_000  # small, so a fuzzed header that claims a huge size is refused cheaply
DOCUMENTED = (BadImage, ImageTooLarge, UnsupportedMediaType)
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
# The encoders' fastest settings: x265's and aom's defaults take seconds per image here, and the
# decoders under test read every preset's output alike.
FAST: dict[str, dict[str, object]] = {
    "HEIF": {"enc_params": {"preset": "ultrafast"}},
    "AVIF": {"speed": 10},
}


def decodes_or_refuses(data: bytes) -> None:
    try:
        pixels = preprocess(data, SPEC, MAX_PIXELS)
    except DOCUMENTED:
        return
    assert pixels.shape == (224, 224, 3)
    assert pixels.dtype == np.uint8


@pytest.fixture(scope="module")
def seeds(photo_bytes: Callable[[str], bytes]) -> dict[str, bytes]:
    """A real photo, small, in every accepted format: mutations of valid files reach far deeper
    into each decoder than random bytes do."""
    photo = Image.open(io.BytesIO(photo_bytes("coffee.png"))).convert("RGB")
    photo.thumbnail((48, 48))
    encoded = {}
    for fmt in FORMATS:
        out = io.BytesIO()
        photo.save(out, fmt, **FAST.get(fmt, {}))
        encoded[fmt] = out.getvalue()
    return encoded


@given(data=st.binary(max_size=4096))
def test_random_bytes_decode_or_are_refused(data: bytes) -> None:
    decodes_or_refuses(data)


MUTATIONS = {
    "edits": st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=8
    ),
    "cut": st.none() | st.integers(min_value=0),
    "insert": st.binary(max_size=64),
}


def mutated(seed: bytes, edits: list[tuple[int, int]], cut: int | None, insert: bytes) -> bytes:
    data = bytearray(seed)
    for position, value in edits:  # flipped bytes: headers, chunk lengths, Huffman tables...
        data[position % len(data)] = value
    if cut is not None:  # truncation anywhere, the commonest corruption on a network
        data = data[: cut % (len(data) + 1)]
    if insert:
        at = len(insert) * 7919 % (len(data) + 1)
        data[at:at] = insert
    return bytes(data)


@given(fmt=st.sampled_from(FORMATS), **MUTATIONS)
def test_mutated_images_decode_or_are_refused(
    seeds: dict[str, bytes],
    fmt: str,
    edits: list[tuple[int, int]],
    cut: int | None,
    insert: bytes,
) -> None:
    decodes_or_refuses(mutated(seeds[fmt], edits, cut, insert))


@given(fmt=st.sampled_from(["HEIF", "AVIF"]), **MUTATIONS)
def test_mutated_heic_and_avif_decode_or_are_refused(
    seeds: dict[str, bytes],
    fmt: str,
    edits: list[tuple[int, int]],
    cut: int | None,
    insert: bytes,
) -> None:
    """The newest decoders (libheif + libde265, libavif + its AV1 decoder), on their own: as
    many mutations again as the other formats share."""
    decodes_or_refuses(mutated(seeds[fmt], edits, cut, insert))


@given(
    mode=st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]),
    fmt=st.sampled_from(FORMATS),
    width=st.integers(min_value=1, max_value=700),
    height=st.integers(min_value=1, max_value=700),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_every_valid_image_of_any_mode_and_size_decodes(
    mode: str, fmt: str, width: int, height: int, seed: int
) -> None:
    """Valid files must be answered, not refused: extreme aspect ratios (1x700), one-pixel
    images, greyscale, palette, 16-bit, CMYK and float modes, in every format that stores them."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(noise, "RGBA").convert(mode)
    out = io.BytesIO()
    try:
        image.save(out, fmt, **FAST.get(fmt, {}))
    except (OSError, ValueError, KeyError):
        return  # this format cannot store this mode: nothing for a client to send
    pixels = preprocess(out.getvalue(), SPEC, MAX_PIXELS)
    assert pixels.shape == (224, 224, 3)
    assert pixels.dtype == np.uint8
