"""Calibration and evaluation sets: disjoint, seeded, hashed; the package-photo fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from build import data
from build.errors import DataError
from service.inference.preprocess import PreprocessSpec


@pytest.fixture(scope="module")
def imagenet(data_dir: Path) -> data.DataSplit:
    if not (data_dir / data.IMAGENET_SUBDIR / "labels.csv").is_file():
        pytest.skip(f"no labeled set under {data_dir} (set IMGCLS_DATA_DIR)")
    return data.imagenet_split(data_dir)


def test_imagenet_split_is_100_calibration_400_evaluation_disjoint(imagenet: data.DataSplit):
    evaluation = {e.path for e in imagenet.evaluation}

    assert len(imagenet.calibration) == 100
    assert len(evaluation) == 400
    assert not evaluation & set(imagenet.calibration)
    assert not imagenet.small
    assert all(len(e.accept) == 1 for e in imagenet.evaluation)


def test_imagenet_split_is_seeded(data_dir: Path, imagenet: data.DataSplit):
    assert data.imagenet_split(data_dir).calibration == imagenet.calibration


def test_imagenet_labels_are_the_csv_class_index(data_dir: Path, imagenet: data.DataSplit):
    rows = (data_dir / data.IMAGENET_SUBDIR / "labels.csv").read_text().splitlines()[1:]
    csv_label = {r.split(",")[0]: int(r.split(",")[1]) for r in rows}

    assert {e.path.name: e.accept for e in imagenet.evaluation} == {
        e.path.name: frozenset({csv_label[e.path.name]}) for e in imagenet.evaluation
    }
    assert csv_label["n01440764_tench.JPEG"] == 0


def test_package_split_is_small_disjoint_and_present():
    split = data.package_split()

    assert split.small
    assert len(split.evaluation) == 6
    assert {p.name for p in split.calibration}.isdisjoint(e.path.name for e in split.evaluation)
    assert all(p.is_file() for p in split.calibration)
    chelsea = next(e for e in split.evaluation if e.path.name == "chelsea.png")
    assert chelsea.accept == frozenset({281, 282, 285})


def test_missing_default_data_falls_back_to_package_photos(tmp_path: Path):
    split = data.choose_split(tmp_path / "absent", required=False)

    assert split.small
    assert "SMALL" in split.dataset


def test_missing_explicit_data_is_an_error(tmp_path: Path):
    with pytest.raises(DataError, match="no evaluation data"):
        data.choose_split(tmp_path / "absent", required=True)


def test_labels_csv_listing_a_missing_image(tmp_path: Path):
    folder = tmp_path / data.IMAGENET_SUBDIR
    folder.mkdir()
    (folder / "labels.csv").write_text("file,class_index\ngone.JPEG,3\n")

    with pytest.raises(DataError, match=r"lists 1 missing images, e\.g\. \['gone\.JPEG'\]"):
        data.imagenet_split(tmp_path)


def test_files_hash_ignores_order_but_not_content(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    forward = data.files_sha256((a, b))

    assert data.files_sha256((b, a)) == forward
    b.write_bytes(b"3")
    assert data.files_sha256((a, b)) != forward


def test_pixels_come_from_the_service_preprocessing():
    split = data.package_split()
    pixels = data.load_pixels(split.calibration[:2], PreprocessSpec(256, 224), "test")

    assert pixels.shape == (2, 224, 224, 3)
    assert pixels.dtype == np.uint8


def test_an_undecodable_image_is_a_data_error(tmp_path: Path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")

    with pytest.raises(DataError, match=f"cannot use {broken}"):
        data.load_pixels((broken,), PreprocessSpec(), "test")
