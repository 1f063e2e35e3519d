"""Pillow keeps a bounded number of freed image blocks for the next decode
(service.process.keep_image_blocks), so a large image's memory is reused instead of mapped and
zero-filled afresh; the operator's own PILLOW_* variables win."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from PIL import _imaging as pillow_core

from service.inference.preprocess import PreprocessSpec, preprocess
from service.process import IMAGE_BLOCK_BYTES, PILLOW_BLOCK_BYTES, keep_image_blocks


@pytest.fixture
def pillow_arena() -> Iterator[None]:
    """Pillow's arena is process-wide: put back its defaults (and free what it kept)."""
    size, kept = pillow_core.get_block_size(), pillow_core.get_blocks_max()
    yield
    pillow_core.set_blocks_max(kept)
    pillow_core.set_block_size(size)


def _large_jpeg() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_the_second_large_decode_reuses_the_first_ones_blocks(
    pillow_arena: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PILLOW_BLOCK_SIZE", raising=False)
    monkeypatch.delenv("PILLOW_BLOCKS_MAX", raising=False)
    assert keep_image_blocks(64 << 20) == 32
    assert pillow_core.get_block_size() == IMAGE_BLOCK_BYTES
    data = _large_jpeg()  # 3 MP: 12 MB of pixels, 6 blocks
    preprocess(data, PreprocessSpec())
    pillow_core.reset_stats()
    preprocess(data, PreprocessSpec())
    stats = pillow_core.get_stats()
    assert stats["reused_blocks"] >= 6
    assert stats["allocated_blocks"] <= 1
    assert pillow_core.get_stats()["blocks_cached"] <= 32


def test_what_is_kept_is_bounded(pillow_arena: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PILLOW_BLOCK_SIZE", raising=False)
    monkeypatch.delenv("PILLOW_BLOCKS_MAX", raising=False)
    assert keep_image_blocks(4 << 20) == 2
    preprocess(_large_jpeg(), PreprocessSpec())
    assert pillow_core.get_stats()["blocks_cached"] == 2  # of the image's 6, 2 kept
    assert keep_image_blocks(0) == 0  # Pillow's defaults again
    assert pillow_core.get_stats()["blocks_cached"] == 0
    assert (pillow_core.get_block_size(), pillow_core.get_blocks_max()) == (PILLOW_BLOCK_BYTES, 0)


@pytest.mark.parametrize("variable", ["PILLOW_BLOCK_SIZE", "PILLOW_BLOCKS_MAX"])
def test_the_operators_pillow_variables_win(
    pillow_arena: None, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "1")
    before = pillow_core.get_block_size(), pillow_core.get_blocks_max()
    assert keep_image_blocks(64 << 20) == -1
    assert (pillow_core.get_block_size(), pillow_core.get_blocks_max()) == before
