"""``make samples`` (build/samples.py) writes every file the README's examples send: real
images Pillow opens in the format their name says, and a text file that is not one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image, UnidentifiedImageError

from build.samples import write_samples

REPO = Path(__file__).resolve().parents[2]


def test_every_example_file_is_written(tmp_path: Path) -> None:
    written = {path.name for path in write_samples(tmp_path)}
    assert written == {"photo.jpg", "rocket.jpg", "chelsea.png", "coffee.png", "notes.txt"}
    for name, kind in [("photo.jpg", "JPEG"), ("rocket.jpg", "JPEG"), ("chelsea.png", "PNG")]:
        with Image.open(tmp_path / name) as image:
            assert image.format == kind
    with pytest.raises(UnidentifiedImageError):
        Image.open(tmp_path / "notes.txt")


def test_the_readme_sends_only_files_that_make_samples_writes(tmp_path: Path) -> None:
    written = {path.name for path in write_samples(tmp_path)}
    docs = [REPO / "README.md", *sorted((REPO / "docs" / "guide").glob("*.md"))]
    sent = {name for doc in docs for name in re.findall(r"samples/([\w.-]+)", doc.read_text())}
    assert sent
    assert sent <= written, sent - written
