"""Fixtures shared by every test package: where the built models and the shared data live."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    return Path(os.environ.get("IMGCLS_ARTIFACTS_DIR", REPO / "model_artifacts"))


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
    return Path(os.environ.get("IMGCLS_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def photos(data_dir: Path) -> dict[str, Any]:
    """photos/expected.json: for each shipped photo, the ImageNet indices a good top-1 may be."""
    expected = data_dir / "photos" / "expected.json"
    if not expected.is_file():
        pytest.skip(f"{expected} is missing (set IMGCLS_DATA_DIR): the photo tests need it")
    loaded: dict[str, Any] = json.loads(expected.read_text())
    return loaded


@pytest.fixture(scope="session")
def photo_bytes(photos: dict[str, Any], data_dir: Path) -> Callable[[str], bytes]:
    return lambda name: (data_dir / "photos" / name).read_bytes()
