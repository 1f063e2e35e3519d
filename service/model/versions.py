"""Which built versions a model folder holds, newest first, and which to try serving.

Two layouts (docs/guide/model-versions.md):
- ``<model_dir>/<N>/manifest.json``: one version per folder whose name is a positive integer
  (Triton's and OpenVINO Model Server's layout); newest = the largest number, never the
  newest file time (a copy or a restore changes times, not names). Other folders are ignored.
- ``<model_dir>/manifest.json``: the folder is the only version, named by its manifest's
  ``model.version``.
Discovery reads folder names only: manifests are checked, and files hashed, when a version is
loaded (service/model/loading.py), so a broken version is refused then, with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from service.errors import ModelNotFound
from service.model.manifest import MANIFEST_NAME, ManifestError, load_manifest

__all__ = ["Version", "candidates", "discover"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Version:
    name: str  # what the API calls it: the folder's number, or the root manifest's version
    path: Path  # the folder holding its manifest.json


def discover(model_dir: Path) -> list[Version]:
    """The versions under ``model_dir``, newest first. Raises ManifestError when there is none."""
    if (model_dir / MANIFEST_NAME).is_file():
        return [Version(load_manifest(model_dir).model.version, model_dir)]
    numbered = [p for p in _subfolders(model_dir) if _number(p.name) is not None]
    for ignored in sorted(set(_subfolders(model_dir)) - set(numbered)):
        log.info("ignoring %s: a version folder is named by a positive integer", ignored)
    found = [Version(p.name, p) for p in numbered if (p / MANIFEST_NAME).is_file()]
    if not found:
        raise ManifestError(
            f"no {MANIFEST_NAME} in {model_dir}, nor in numbered version folders (1/, 2/, "
            "...): build the model first"
        )
    return sorted(found, key=lambda v: _number(v.name) or 0, reverse=True)


def candidates(versions: list[Version], wanted: str | None) -> list[Version]:
    """What to try, in order: the version ``wanted`` alone (ModelNotFound if absent), else
    every version newest first (the first that loads serves)."""
    if not wanted:
        return versions
    for version in versions:
        if version.name == wanted:
            return [version]
    names = ", ".join(v.name for v in versions)
    raise ModelNotFound(f"no version {wanted!r} on disk; the versions are {names}")


def _subfolders(model_dir: Path) -> list[Path]:
    try:
        return [p for p in model_dir.iterdir() if p.is_dir()]
    except OSError as exc:
        raise ManifestError(f"cannot list {model_dir}: {exc.strerror}") from None


def _number(name: str) -> int | None:
    return int(name) if name.isascii() and name.isdigit() and int(name) > 0 else None
