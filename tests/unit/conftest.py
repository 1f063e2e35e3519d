"""Fixtures for the data-plane tests (the tiny model itself: tests/unit/tiny.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.tiny import write_tiny_artifacts


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts dir holding one tiny model, built once per session."""
    root = tmp_path_factory.mktemp("artifacts")
    write_tiny_artifacts(root / "tiny")
    return root


@pytest.fixture(scope="session")
def tiny_model_path(tiny_artifacts: Path) -> Path:
    return tiny_artifacts / "tiny" / "model.int8.onnx"


@pytest.fixture
def no_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend onnxruntime offers only the CPU provider."""
    from service.model import runner

    monkeypatch.setattr(runner, "available_providers", lambda: [runner.CPU])
