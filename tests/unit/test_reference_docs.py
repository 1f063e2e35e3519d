"""docs/reference/ is generated from the code (service/reference_docs.py): every setting, metric
and error class is in it, each described, and the committed pages are what the generator writes
today."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import reference_docs
from service.errors import ImgclsError
from service.observability.metrics import Metrics
from service.settings import Settings

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"


def test_every_setting_is_described_and_in_the_reference() -> None:
    undescribed = [name for name, f in Settings.model_fields.items() if not f.description]
    assert undescribed == []
    text = reference_docs.settings()
    assert all(f"`IMGCLS_{name.upper()}`" in text for name in Settings.model_fields)


def test_every_metric_is_in_the_reference() -> None:
    text = reference_docs.metrics()
    names = {m.describe()[0].name for m in vars(Metrics()).values() if hasattr(m, "describe")}
    assert names
    assert all(f"`{name}" in text for name in names)


def test_every_error_class_is_in_the_reference_and_says_when() -> None:
    text = reference_docs.error_codes()
    for cls in reference_docs._classes(ImgclsError):
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{cls.code}` |")]
        when = row.split("|")[-2]  # the last column, between the last two bars
        assert when.strip(), f"{cls.code}: no 'when'"


@pytest.mark.parametrize("page", sorted(reference_docs.PAGES))
def test_the_committed_reference_is_current(page: str) -> None:
    name = reference_docs.FILES[page]
    assert (REFERENCE / name).read_text() == reference_docs.PAGES[page](), (
        f"docs/reference/{name} is stale: run `make reference` "
        f"(or `.venv/bin/python -m service.reference_docs {page} > docs/reference/{name}`)"
    )
