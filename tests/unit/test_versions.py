"""Version discovery (service/model/versions.py): which folders are versions, newest first by
number, the root-manifest layout, and pinning."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ModelNotFound
from service.model.manifest import ManifestError
from service.model.versions import candidates, discover
from tests.unit.tiny import write_tiny_artifacts
from tests.versions_repo import tiny_version


def test_numbered_folders_are_versions_newest_by_number_not_by_name(tmp_path: Path) -> None:
    for name in ("2", "10", "9"):
        tiny_version(tmp_path, name)
    (tmp_path / "latest").mkdir()  # not a number: ignored
    (tmp_path / "0").mkdir()  # not positive: ignored
    (tmp_path / "11").mkdir()  # no manifest: not a built version
    (tmp_path / "README.md").write_text("notes")
    versions = discover(tmp_path)
    assert [v.name for v in versions] == ["10", "9", "2"]  # 10 > 9, though "9" > "10" as text
    assert versions[0].path == tmp_path / "10"


def test_a_folder_with_its_manifest_at_the_root_is_one_version_named_by_its_manifest(
    tmp_path: Path,
) -> None:
    folder = write_tiny_artifacts(tmp_path / "tiny")
    assert [(v.name, v.path) for v in discover(folder)] == [("test-1", folder)]


def test_a_folder_without_any_version_says_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    expected = r"no manifest.json in .*, nor in numbered version folders \(1/, 2/"
    with pytest.raises(ManifestError, match=expected):
        discover(tmp_path)
    with pytest.raises(ManifestError, match="cannot list"):
        discover(tmp_path / "missing")


def test_pinning_picks_that_version_alone_and_an_absent_one_is_not_found(tmp_path: Path) -> None:
    for name in ("1", "2", "3"):
        tiny_version(tmp_path, name)
    versions = discover(tmp_path)
    assert [v.name for v in candidates(versions, None)] == ["3", "2", "1"]
    assert [v.name for v in candidates(versions, "2")] == ["2"]
    with pytest.raises(ModelNotFound, match="no version '7' on disk; the versions are 3, 2, 1"):
        candidates(versions, "7")
