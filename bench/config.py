"""What every benchmark shares: its options (quick mode, where results go, where the models and
the images are), the command line that sets them (``python -m bench.<name> [options]``), and
the images it sends: real ~500x375 ImageNet JPEGs from the data folder (listed by its
labels.csv, read with build.data's reader) or, when it is absent, the build's package photos
(scikit-image, matplotlib) re-encoded to JPEG in memory, so the quick run works anywhere."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bench.report import Section, save_section_data, write_report
from build.data import IMAGENET_SUBDIR, package_split, read_labels
from service import paths
from service.model.loading import model_file as served_file
from service.model.manifest import MANIFEST_NAME, load_manifest

RESULTS_ROOT = Path(__file__).resolve().parent / "results"
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

    def log(self, name: str) -> Path:
        """A child process's log file, in the results folder's logs/."""
        (self.out_dir / "logs").mkdir(exist_ok=True)
        return self.out_dir / "logs" / f"{name.replace(' ', '_')}.log"

    def built(self, models: Sequence[str], section: Section) -> list[str]:
        """The models whose artifacts exist; ``section`` says which were skipped."""
        found = [m for m in models if (self.model_dir(m) / MANIFEST_NAME).is_file()]
        if missing := [m for m in models if m not in found]:
            section.add(f"**Skipped, no artifacts in {self.artifacts_dir}:** {', '.join(missing)}.")
        return found


def model_file(model_dir: Path, precision: str) -> Path:
    """The file the server would serve for ``precision`` on this CPU (for int8: the weights it
    computes exactly, service/model/int8_weights.py), as the model's manifest names it."""
    manifest = load_manifest(model_dir)
    return model_dir / manifest.files[served_file(precision, manifest)].path


def image_paths(data_dir: Path, limit: int | None = None) -> list[Path]:
    """Labeled JPEGs in file-name order (deterministic), else the package photos (DataError,
    naming what is missing, when they are absent too)."""
    folder = data_dir / IMAGENET_SUBDIR
    if (folder / "labels.csv").is_file():
        found = [path for path, _ in sorted(read_labels(folder)) if path.is_file()]
    else:
        split = package_split()
        found = [*(image.path for image in split.evaluation), *split.calibration]
    return found[:limit] if limit else found


def load_jpegs(data_dir: Path, limit: int | None = None) -> list[bytes]:
    """The images as the benchmarks send them: JPEG bodies (package photos re-encoded)."""
    return [_as_jpeg(path) for path in image_paths(data_dir, limit)]


def _as_jpeg(path: Path) -> bytes:
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return path.read_bytes()
    with Image.open(path) as image, io.BytesIO() as buffer:
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; relative paths are from the working directory."""
    epilog = (
        f"--artifacts defaults to ${paths.ARTIFACTS_DIR_ENV} or {paths.DEFAULT_ARTIFACTS_DIR}, "
        f"--data-dir to ${paths.DATA_DIR_ENV} or {paths.DEFAULT_DATA_DIR}. Clients: raw asyncio "
        "HTTP/1.1 (~0.4 ms CPU/request here) or httpx (~2.5 ms): it shares the server's 2 cores."
    )
    p = argparse.ArgumentParser(description=description, epilog=epilog)
    p.add_argument("--quick", action="store_true", help="a short run that checks it runs")
    p.add_argument("--out", type=Path, help="results folder (default bench/results/<date>)")
    p.add_argument("--artifacts", type=Path, default=paths.artifacts_dir(), help="built models")
    p.add_argument("--data-dir", type=Path, default=paths.data_dir(), help="labeled images")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw", help="load generator")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d_%H%M%S")
    out_dir: Path = args.out or RESULTS_ROOT / now
    out_dir.mkdir(parents=True, exist_ok=True)
    return BenchConfig(
        args.quick, out_dir, args.artifacts.resolve(), args.data_dir.resolve(), args.client
    )


def run_benchmark(run: Callable[[BenchConfig], Section], doc: str | None) -> None:
    """``python -m bench.<name>``: one benchmark, its data and its report (``doc``: the
    module's docstring, whose first line describes it)."""
    cfg = config_from_args(parser((doc or "").split("\n")[0]).parse_args())
    section = run(cfg)
    save_section_data(cfg.out_dir, section)
    print(write_report(cfg.out_dir, [section], cfg.quick))
