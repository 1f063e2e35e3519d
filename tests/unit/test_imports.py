"""Imports point one way (DESIGN.md section 2): checked on the source, so a violation fails here
before it ships. service/ never imports torch or build/; only runner.py imports onnxruntime;
the HTTP layer (service/api/) imports neither numpy nor onnxruntime."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module the file imports, anywhere in it (lazy imports too)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def imports() -> dict[str, set[str]]:
    return {str(p.relative_to(SERVICE)): imported_roots(p) for p in SERVICE.rglob("*.py")}


def test_the_walk_sees_imports() -> None:  # guards the guard: an empty walk would pass anything
    found = imports()
    assert "onnxruntime" in found["runner.py"]
    assert "numpy" in found["preprocess.py"]


def test_service_never_imports_torch_or_build() -> None:
    banned = {"torch", "torchvision", "build"}
    assert {f: sorted(m & banned) for f, m in imports().items() if m & banned} == {}


def test_only_the_runner_imports_onnxruntime() -> None:
    assert sorted(f for f, m in imports().items() if "onnxruntime" in m) == ["runner.py"]


def test_the_http_layer_imports_no_numpy_or_onnxruntime() -> None:
    banned = {"numpy", "onnxruntime"}
    offenders = {f: sorted(m & banned) for f, m in imports().items() if f.startswith("api/")}
    assert {f: m for f, m in offenders.items() if m} == {}
