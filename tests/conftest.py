"""Fixtures shared by every test package: where the built models and the shared data live."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from build.data import package_photos
from service import paths

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    return REPO / paths.artifacts_dir()


@pytest.fixture(scope="session")
def trained_model_dir(artifacts_dir: Path) -> Path:
    """The model with real ImageNet weights. `make test` builds it first, so its absence is a
    failure, not a skip."""
    model_dir = artifacts_dir / "efficientnet_lite0"
    if not (model_dir / "manifest.json").is_file():
        pytest.fail(f"no built model in {model_dir}: run `make test-models`")
    return model_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return (REPO / paths.data_dir()).resolve()


@pytest.fixture(scope="session")
def photo_paths(data_dir: Path) -> dict[str, Path]:
    """name -> file of every test photo: ../shared/data/photos when present, else the same CC0
    photos as they ship in scikit-image and matplotlib (build/data.py lists them), so the suite
    runs whole on a machine without the shared data."""
    folder = data_dir / "photos"
    if (folder / "expected.json").is_file():
        return {name: folder / name for name in json.loads((folder / "expected.json").read_text())}
    return {image.path.name: image.path for image in package_photos()}


@pytest.fixture(scope="session")
def photos(data_dir: Path, photo_paths: dict[str, Path], trained_model_dir: Path) -> dict[str, Any]:
    """name -> {"accept": ImageNet indices a good top-1 may be, "accept_names", "assert"}: the
    schema of photos/expected.json, made from build/data.py's list when that file is absent."""
    expected = data_dir / "photos" / "expected.json"
    if expected.is_file():
        loaded: dict[str, Any] = json.loads(expected.read_text())
        return loaded
    labels = (trained_model_dir / "labels.txt").read_text().splitlines()
    return {
        image.path.name: {
            "accept": sorted(image.accept),
            "accept_names": [labels[i] for i in sorted(image.accept)],
            "assert": True,
        }
        for image in package_photos()
    }


@pytest.fixture(scope="session")
def photo_bytes(photo_paths: dict[str, Path]) -> Callable[[str], bytes]:
    return lambda name: photo_paths[name].read_bytes()
