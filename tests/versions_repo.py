"""Model folders holding several versions, for the version tests: tiny models (tests/unit/tiny.py)
in numbered folders, one of them with its classes permuted so that an answer shows which
version computed it, or copies of a real built model; and a tampered version that must be
refused."""

from __future__ import annotations

import shutil
from pathlib import Path

from service.model.manifest import load_manifest, write_manifest
from tests.unit.tiny import _manifest, tiny_model, write_tiny_artifacts

FILES = ("fp32", "int8", "int8-w7")


def tiny_version(root: Path, name: str, *, permute: bool = False) -> Path:
    """root/<name>: the tiny model; ``permute``: its classes shuffled (other answers)."""
    folder = write_tiny_artifacts(root / name)
    if permute:
        for file in FILES:
            tiny_model(folder / f"model.{file}.onnx", permute=True)
        write_manifest(folder, _manifest(folder, "tiny", False))
    return folder


def copied_version(source: Path, root: Path, name: str) -> Path:
    """root/<name>: a copy of a built model folder (its int8 files, labels and manifest)."""
    folder = root / name
    folder.mkdir(parents=True)
    manifest = load_manifest(source)
    wanted = {manifest.labels, "manifest.json"} | {e.path for e in manifest.files.values()}
    for file in wanted:
        if (source / file).is_file() and not file.endswith("fp32.onnx"):
            shutil.copy2(source / file, folder / file)
    return folder


def tamper(folder: Path) -> None:
    """Every model file changed after its manifest was written: its sha256 no longer matches."""
    for path in folder.glob("model.*.onnx"):
        with path.open("ab") as f:
            f.write(b"tampered")
