"""build.photo_size: the served path at phone size, scored against a full decode and gated, on
the tiny nearest-colour model (tests/unit/tiny.py: its answer is known for a solid colour,
however large the photo), with real sessions, real phone-size JPEGs and the real preprocessing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from build.data import LabeledImage
from build.phone_photos import phone_jpegs
from build.photo_size import allowed_drop, evaluate_phone_sizes, failures, subset
from build.report import phone_size_lines
from service.inference.preprocess import PreprocessSpec
from tests.unit.tiny import class_colour, tiny_model

CLASSES = (7, 345, 901)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    tiny_model(folder / "right.onnx")
    tiny_model(folder / "wrong.onnx", permute=True)  # disagrees with the right one everywhere
    return {"right": folder / "right.onnx", "wrong": folder / "wrong.onnx"}


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory: pytest.TempPathFactory) -> list[LabeledImage]:
    folder = tmp_path_factory.mktemp("labeled")
    images = []
    for c in CLASSES:
        path = folder / f"class_{c}.png"
        Image.new("RGB", (500, 375), class_colour(c)).save(path)
        images.append(LabeledImage(path, frozenset({c})))
    return images


def test_the_served_path_at_phone_size_is_scored_against_a_full_decode(
    models: dict[str, Path], evaluation: list[LabeledImage], tmp_path: Path
) -> None:
    result = evaluate_phone_sizes(
        models["right"], models["right"], evaluation, PreprocessSpec(draft_margin=1.0), 1.5,
        images=None, cache=tmp_path, providers=("cpu",),
    )  # fmt: skip
    assert set(result) == {"12mp", "3mp"}
    twelve = result["12mp"]
    assert (twelve.example_size, twelve.images, twelve.draft_margin) == ("4032x3024", 3, 1.0)
    assert twelve.fp32.top1 == twelve.fp32_full_decode.top1 == 100.0
    cpu = twelve.int8_providers["cpu"]
    assert (cpu.int8.top1, cpu.draft_agreement, cpu.top1_drop_points) == (100.0, 100.0, 0.0)
    assert twelve.passed
    assert result["3mp"].passed
    assert failures(result, 1.5) == []
    assert "| 4032x3024 | int8 | cpu | 100.00 | 100.00 | 100.00 | 0.00 |" in phone_size_lines(
        result
    )
    # The photos were made once: a second build reads them back.
    assert len(list(tmp_path.iterdir())) == 2 * len(CLASSES)


def test_the_gate_fails_when_served_int8_loses_more_than_the_drop(
    models: dict[str, Path], evaluation: list[LabeledImage], tmp_path: Path
) -> None:
    result = evaluate_phone_sizes(
        models["right"], models["wrong"], evaluation, PreprocessSpec(draft_margin=1.0), 1.5,
        images=None, cache=tmp_path, providers=("cpu",),
    )  # fmt: skip
    assert not result["12mp"].passed
    assert failures(result, 1.5)[0] == (
        "12mp cpu: served int8 top-1 0.00% vs fp32 full decode 100.00% (drop 100.00 > 33.3 points)"
    )


def test_the_subset_is_seeded_and_keeps_the_evaluation_order() -> None:
    many = [LabeledImage(Path(f"{i}.jpg"), frozenset({i})) for i in range(40)]
    chosen = subset(many, 5)
    assert chosen == subset(many, 5)
    assert len(chosen) == 5
    assert [many.index(i) for i in chosen] == sorted(many.index(i) for i in chosen)
    assert subset(many, None) == many


def test_phone_jpegs_are_the_same_bytes_for_the_same_image(
    evaluation: list[LabeledImage],
) -> None:
    path = [evaluation[0].path]
    first, again = phone_jpegs(path, "3mp"), phone_jpegs(path, "3mp")
    assert first == again
    assert Image.open(io.BytesIO(first[0])).size == (2016, 1512)


def test_with_the_default_policy_the_served_path_is_the_full_decode(
    models: dict[str, Path], evaluation: list[LabeledImage], tmp_path: Path
) -> None:
    result = evaluate_phone_sizes(
        models["right"], models["wrong"], evaluation, PreprocessSpec(), 1.5,
        images=None, cache=tmp_path, providers=("cpu",),
    )  # fmt: skip
    twelve = result["12mp"]
    assert twelve.draft_margin is None
    cpu = twelve.int8_providers["cpu"]
    assert (cpu.draft_agreement, cpu.int8.top1, cpu.int8_full_decode.top1) == (100.0, 0.0, 0.0)
    assert not twelve.passed  # still gated: served int8 against fp32's full decode


def test_the_gate_allows_at_least_one_image_of_a_small_subset() -> None:
    # 56 images: one changed answer is 1.79 points, more than a 1.5-point drop; 200: 0.5.
    assert allowed_drop(1.5, 56) == pytest.approx(100 / 56)
    assert allowed_drop(1.5, 200) == 1.5
