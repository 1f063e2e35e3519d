"""The JPEG draft policy: what each margin decodes a 12 MP photo at, and the setting that picks
it for the service (IMGCLS_JPEG_DRAFT_MARGIN; 0: every pixel)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from service.inference.preprocess import DRAFT_MARGIN, PreprocessSpec, draft, open_image
from service.model.loading import preprocess_spec
from service.model.manifest import load_manifest
from service.settings import Settings
from tests.unit.tiny import write_tiny_artifacts


def phone_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4032, 3024), (90, 120, 150)).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.mark.parametrize(
    ("margin", "decoded"),
    [(1.0, (504, 378)), (2.0, (1008, 756)), (3.0, (2016, 1512)), (None, (4032, 3024))],
)
def test_each_margin_keeps_both_sides_at_least_margin_times_the_resize_size(
    margin: float | None, decoded: tuple[int, int]
) -> None:
    image = open_image(phone_jpeg(), 10**9)
    draft(image, PreprocessSpec(draft_margin=margin))
    assert image.size == decoded


def test_the_setting_picks_the_policy_and_defaults_to_the_measured_one(tmp_path: Path) -> None:
    model = load_manifest(write_tiny_artifacts(tmp_path / "tiny"))
    assert (Settings().jpeg_draft_margin or None) == DRAFT_MARGIN
    assert preprocess_spec(Settings(), model).draft_margin == DRAFT_MARGIN
    assert preprocess_spec(Settings(jpeg_draft_margin=0), model).draft_margin is None
    assert preprocess_spec(Settings(jpeg_draft_margin=3), model).draft_margin == 3.0
