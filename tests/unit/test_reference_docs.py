"""docs/reference/metrics.md and docs/reference/error-codes.md are generated from the code
(tools/reference_docs.py): every metric and every error class is in them, each error says when
it is answered, and the committed copies are what the generator writes today."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ImgclsError
from service.observability.metrics import Metrics
from tools import reference_docs

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"


def test_every_metric_is_in_the_reference() -> None:
    text = reference_docs.metrics()
    names = {m.describe()[0].name for m in vars(Metrics()).values() if hasattr(m, "describe")}
    assert names
    assert all(f"`{name}" in text for name in names)


def test_every_error_class_is_in_the_reference_and_says_when() -> None:
    text = reference_docs.error_codes()
    for cls in reference_docs._classes(ImgclsError):
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{cls.code}` |")]
        assert row.rstrip(" |").split("|")[-1].strip(), f"{cls.code}: no 'when'"


@pytest.mark.parametrize(
    ("page", "command"), [("metrics.md", "metrics"), ("error-codes.md", "errors")]
)
def test_the_committed_reference_is_current(page: str, command: str) -> None:
    assert (REFERENCE / page).read_text() == reference_docs.PAGES[command](), (
        f"docs/reference/{page} is stale: run "
        f"`.venv/bin/python -m tools.reference_docs {command} > docs/reference/{page}`"
    )
