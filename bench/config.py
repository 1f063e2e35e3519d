"""The options every benchmark shares (quick mode, where results go, where the models and the
images are) and the command line that sets them."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from service.manifest import MANIFEST_NAME, Precision, load_manifest

REPO = Path(__file__).resolve().parent.parent
RESULTS_ROOT = REPO / "bench" / "results"
# Derived files (TorchScript, dynamically quantized ONNX) are rebuilt from the artifacts when
# missing; they live beside the results so one `rm -rf bench/results` cleans everything.
CACHE_DIR = RESULTS_ROOT / ".cache"


@dataclass(frozen=True)
class BenchConfig:
    quick: bool
    out_dir: Path
    artifacts_dir: Path
    data_dir: Path
    client: str = "raw"  # bench.loadgen sender: "raw" (cheap) or "httpx"
    python: str = sys.executable

    def model_dir(self, model: str) -> Path:
        return self.artifacts_dir / model

    def has_model(self, model: str) -> bool:
        return (self.model_dir(model) / MANIFEST_NAME).is_file()


def model_file(model_dir: Path, precision: Precision) -> Path:
    """A model file as the model's manifest names it."""
    return model_dir / load_manifest(model_dir).files[precision].path


def default_data_dir() -> Path:
    return Path(os.environ.get("IMGCLS_DATA_DIR", REPO.parent / "shared" / "data"))


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a short run (< 2 min) that checks the benchmark runs"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default bench/results/<date>)"
    )
    parser.add_argument("--artifacts", type=Path, default=REPO / "model_artifacts")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="labeled images (env IMGCLS_DATA_DIR, default ../shared/data)",
    )

    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load-generator client: raw asyncio HTTP/1.1 (~0.4 ms CPU/request here) or httpx "
        "(~2.5 ms): the client shares the server's 2 cores",
    )


def default_out_dir() -> Path:
    return RESULTS_ROOT / dt.datetime.now(dt.UTC).strftime("%Y-%m-%d_%H%M%S")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    out_dir: Path = args.out or default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir: Path = args.data_dir
    if not data_dir.is_absolute():
        data_dir = (REPO / data_dir).resolve()
    return BenchConfig(
        quick=args.quick,
        out_dir=out_dir,
        artifacts_dir=args.artifacts.resolve(),
        data_dir=data_dir,
        client=args.client,
    )
