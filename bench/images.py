"""The images every benchmark sends: real ~500x375 ImageNet JPEGs from the data folder, or, when
it is absent, photos that ship inside scikit-image and matplotlib (re-encoded to JPEG in memory),
so the quick run works anywhere. Never copied into the repository."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

SAMPLE_DIR = "imagenet-sample-images"


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    jpeg: bytes
    class_index: int | None  # None for the fallback photos: no single right answer


def _labeled(data_dir: Path) -> list[Sample]:
    folder = data_dir / SAMPLE_DIR
    labels = folder / "labels.csv"
    if not labels.is_file():
        return []
    with labels.open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: row["file"])
    return [
        Sample(row["file"], (folder / row["file"]).read_bytes(), int(row["class_index"]))
        for row in rows
        if (folder / row["file"]).is_file()
    ]


def _package_photos() -> list[Path]:
    paths: list[Path] = []
    try:
        import skimage

        paths += sorted((Path(skimage.__file__).parent / "data").glob("*.png"))
        paths += sorted((Path(skimage.__file__).parent / "data").glob("*.jpg"))
    except ImportError:
        pass
    try:
        import matplotlib

        paths += [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    except ImportError:
        pass
    return [p for p in paths if p.is_file()]


def _as_jpeg(path: Path) -> bytes | None:
    try:
        with Image.open(path) as image:
            if min(image.size) < 128:  # skimage ships tiny test patterns: not photos
                return None
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=90)
            return buffer.getvalue()
    except OSError:
        return None


def _fallback() -> list[Sample]:
    samples = []
    for path in _package_photos():
        jpeg = _as_jpeg(path)
        if jpeg is not None:
            samples.append(Sample(path.name, jpeg, None))
    return samples


def load_samples(data_dir: Path, limit: int | None = None) -> list[Sample]:
    """Labeled JPEGs in file-name order (deterministic), else the package photos."""
    samples = _labeled(data_dir) or _fallback()
    if not samples:
        raise RuntimeError(f"no images: {data_dir / SAMPLE_DIR} is missing and so are the photos")
    return samples[:limit] if limit else samples
