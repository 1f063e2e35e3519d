"""What `make serve` installs (the Makefile's plan, read with `make -n`, nothing run): the service
and the model build only, never the test and bench extras; `make test` adds them. And the
README lists every target a user runs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def plan(target: str, venv: Path) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(
        ["make", "-n", target, f"VENV={venv}"], cwd=REPO, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return done.stdout


def extras(commands: str) -> set[str]:
    found = re.findall(r"pip install (?:--\S+ )*-e '\.\[([a-z,]+)\]'", commands)
    return {extra for group in found for extra in group.split(",")}


def test_make_serve_installs_the_service_and_the_build_only(tmp_path: Path) -> None:
    commands = plan("serve", tmp_path / "venv")
    assert extras(commands) == {"build"}
    assert "pip install -q" not in commands  # pip's progress shows


def test_make_test_installs_the_test_and_bench_tools_too(tmp_path: Path) -> None:
    assert extras(plan("test", tmp_path / "venv")) == {"build", "test", "bench"}


def test_the_readme_lists_every_target_a_user_runs() -> None:
    readme = (REPO / "README.md").read_text()
    targets = ("serve", "test", "samples", "image", "run-image", "stack", "bench", "install")
    missing = [t for t in targets if f"`make {t}`" not in readme]
    assert not missing, missing
