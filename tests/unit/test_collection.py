"""Every folder under tests/ that holds test files must have its tests collected: pytest's
default norecursedirs once dropped tests/build/ silently (39 tests that never ran)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def collected_ids() -> list[str]:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return [line for line in run.stdout.splitlines() if "::" in line]


@pytest.mark.slow  # one full collection in a subprocess: ~7 s
def test_every_folder_with_test_files_is_collected() -> None:
    folders = {p.parent.relative_to(TESTS.parent).as_posix() for p in TESTS.rglob("test_*.py")}
    seen = {i.split("::")[0].rsplit("/", 1)[0] for i in collected_ids()}
    assert folders, "no test files found: the guard itself is broken"
    assert sorted(folders - seen) == []
