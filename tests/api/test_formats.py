"""The formats phones and browsers send (HEIC/HEIF, AVIF) through /v1/classify on the real
model, whether the media type is declared, left to sniffing, or sent in a multipart part:

- a lossless HEIC that stores RGB as is (pillow-heif, matrix coefficients 0) holds the PNG's
  exact pixels, so it must get the PNG's exact answer, scores and all;
- an AVIF (Pillow's encoder, quality 100, 4:4:4) is within a few levels of the PNG
  (tests/unit/test_preprocess.py measures that), not equal to it, and an int8 model's top-1 can
  flip on a photo whose two best classes are close; so it must get exactly the answer of a PNG
  of its own decoded pixels: the service reads the container, its rotation and its colour
  path as Pillow does, and nothing else differs.

How far lossy encodings move answers is a figure, not a test: docs/guide/images.md."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.api.conftest import Served

pytestmark = pytest.mark.anyio

MEDIA_TYPES = {"PNG": "image/png", "HEIF": "image/heic", "AVIF": "image/avif"}
# RGB stored as is (no YCbCr rounding), by x265's fastest preset (its default takes seconds per
# photo on a busy 2-core host)
LOSSLESS_HEIC: dict[str, Any] = {
    "quality": -1,
    "chroma": "444",
    "matrix_coefficients": 0,
    "enc_params": {"preset": "ultrafast"},
}
HIGHEST_AVIF: dict[str, Any] = {"quality": 100, "subsampling": "4:4:4", "speed": 10}


def encoded(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


@pytest.fixture(scope="module")
def pictures(photo_paths: dict[str, Path]) -> dict[str, dict[str, bytes]]:
    """Every test photo as PNG, lossless RGB HEIC (pillow-heif), AVIF at quality 100 with 4:4:4,
    and that AVIF's own decoded pixels as PNG."""
    result = {}
    for name, path in sorted(photo_paths.items()):
        image = Image.open(path)
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
        avif = encoded(image, "AVIF", **HIGHEST_AVIF)
        result[name] = {
            "PNG": encoded(image, "PNG"),
            "HEIF": encoded(image, "HEIF", **LOSSLESS_HEIC),
            "AVIF": avif,
            "AVIF as PNG": encoded(Image.open(io.BytesIO(avif)), "PNG"),
        }
    return result


async def answer(client: httpx.AsyncClient, data: bytes, content_type: str) -> dict[int, float]:
    """class index -> score of the top 5."""
    response = await client.post(
        "/v1/classify?top_k=5", content=data, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    return {int(p["class_index"]): float(p["score"]) for p in response.json()["predictions"]}


async def top1(client: httpx.AsyncClient, data: bytes, content_type: str) -> int:
    return next(iter(await answer(client, data, content_type)))


@pytest.mark.parametrize(("fmt", "reference"), [("HEIF", "PNG"), ("AVIF", "AVIF as PNG")])
async def test_every_photo_gets_the_answer_of_the_pixels_it_holds(
    real: Served, pictures: dict[str, dict[str, bytes]], fmt: str, reference: str
) -> None:
    assert len(pictures) >= 5
    differ = {}
    for name, versions in pictures.items():
        expected = await answer(real.client, versions[reference], "image/png")
        declared = await answer(real.client, versions[fmt], MEDIA_TYPES[fmt])
        sniffed = await answer(real.client, versions[fmt], "application/octet-stream")
        if not (declared == expected and sniffed == expected):
            differ[name] = (expected, declared, sniffed)
    assert not differ, f"answers differ ({reference}, declared, sniffed): {differ}"


async def test_the_avif_is_not_its_own_reference(pictures: dict[str, dict[str, bytes]]) -> None:
    """The AVIF's reference is the AVIF's pixels, not the original's: on most photos they differ
    (a grey photo such as camera.png survives 4:4:4 exactly), else the test above would compare
    the PNG with itself and prove nothing about the AVIF."""
    changed = [name for name, v in pictures.items() if v["AVIF as PNG"] != v["PNG"]]
    assert len(changed) > len(pictures) / 2, changed


@pytest.mark.parametrize("media_type", ["image/heic", "image/heif"])
async def test_heic_in_a_multipart_part_under_either_media_type(
    real: Served, pictures: dict[str, dict[str, bytes]], media_type: str
) -> None:
    versions = pictures["chelsea.png"]
    reference = await top1(real.client, versions["PNG"], "image/png")
    response = await real.client.post(
        "/v1/classify", files={"file": ("IMG_0001.HEIC", versions["HEIF"], media_type)}
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["class_index"] == reference
