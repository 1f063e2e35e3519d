"""The command line: user errors end with one line and exit code 2, never a traceback. Every
case here fails before any model is exported, so these tests are fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "build", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("build: error: ")
    assert message in last
    assert result.stdout == ""


def test_unknown_model(tmp_path: Path):
    result = run_cli("--model", "vgg16", "--out", str(tmp_path))

    assert_one_line_error(
        result, "unknown model 'vgg16'; choose one of: auto, resnet18, efficientnet_lite0"
    )


def test_missing_weights_file(tmp_path: Path):
    missing = tmp_path / "missing.pth"
    result = run_cli("--model", "resnet18", "--weights", str(missing), "--out", str(tmp_path))

    assert_one_line_error(result, f"weights file {missing} does not exist")


def test_corrupt_weights_file(tmp_path: Path):
    corrupt = tmp_path / "resnet18-f37072fd.pth"
    corrupt.write_bytes(b"half a download")
    result = run_cli("--model", "resnet18", "--weights", str(corrupt), "--out", str(tmp_path))

    assert_one_line_error(result, f"weights file {corrupt} is corrupt")


def test_missing_data_dir_named_explicitly(tmp_path: Path):
    missing = tmp_path / "no-data"
    result = run_cli(
        "--model", "resnet18", "--weights", "random",
        "--data-dir", str(missing), "--out", str(tmp_path / "out"),
    )  # fmt: skip

    assert_one_line_error(
        result, f"no evaluation data: {missing}/imagenet-sample-images/labels.csv does not exist"
    )
    assert not (tmp_path / "out").exists()


def test_later_stage_without_earlier_ones(tmp_path: Path):
    result = run_cli(
        "--model", "resnet18", "--weights", "random", "--stage", "quantize", "--out", str(tmp_path)
    )  # fmt: skip

    assert_one_line_error(result, "build_state.json is missing: run the earlier stages first")


@pytest.mark.parametrize("stage", ["bogus"])
def test_bad_option_is_argparse_usage_error(tmp_path: Path, stage: str):
    result = run_cli("--stage", stage, "--out", str(tmp_path))

    assert result.returncode == 2
    assert "invalid choice: 'bogus'" in result.stderr
    assert "Traceback" not in result.stderr
