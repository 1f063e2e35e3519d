"""The HTTP layer stays thin: nothing under service/api imports numpy, onnxruntime or torch
(images and models are the data plane's business), and the service never imports build/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((SERVICE / "api").glob("*.py")), ids=lambda p: p.name)
def test_api_module_imports_no_numeric_or_model_code(path: Path) -> None:
    assert imported_modules(path).isdisjoint({"numpy", "onnxruntime", "torch", "PIL", "build"})


@pytest.mark.parametrize("path", sorted(SERVICE.rglob("*.py")), ids=lambda p: p.name)
def test_service_never_imports_torch_or_build(path: Path) -> None:
    assert imported_modules(path).isdisjoint({"torch", "torchvision", "build"})
