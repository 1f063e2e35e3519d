"""The settings reference is generated from Settings: every field is described, and the
committed docs/reference/settings.md is what the generator writes today."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from service.settings_reference import reference

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "reference" / "settings.md"


def test_every_setting_is_described() -> None:
    undescribed = [name for name, f in Settings.model_fields.items() if not f.description]
    assert undescribed == []


def test_every_setting_is_in_the_reference() -> None:
    text = reference()
    assert all(f"`IMGCLS_{name.upper()}`" in text for name in Settings.model_fields)


def test_the_committed_reference_is_current() -> None:
    assert COMMITTED.read_text() == reference(), (
        "docs/reference/settings.md is stale: run "
        "`.venv/bin/python -m service.settings_reference > docs/reference/settings.md`"
    )
