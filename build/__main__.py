"""python -m build: build one model (model.toml) into <out>/<name>/: export, quantize,
evaluate on the config's images, gate, manifest.

    python -m build --config model.toml [--out DIR]
    python -m build --model resnet18|efficientnet_lite0|auto     (the shipped configs)

User errors (a bad config, missing or unfit files, bad data, offline) end with one line on
stderr and exit code 2; a model that fails the accuracy gate ends with exit code 1; never a
traceback, and --out is left as it was.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from build import config, progress
from build.errors import BuildError, WeightsUnavailable
from build.photo_size import DEFAULT_IMAGES as DEFAULT_PHONE_SIZE_IMAGES
from build.pipeline import BuildOptions, run_build
from build.weights import official, resolve_official
from service import paths

log = logging.getLogger("build")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m build", description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--config", type=Path, help="the model.toml to build")
    which.add_argument(
        "--model",
        default=None,
        help=f"a shipped config (build/models/): {', '.join(config.shipped_names())}, or auto "
        "(resnet18 if its official weights can be had, else efficientnet_lite0)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="a state-dict FILE, or 'random' (untrained, speed work only), instead of the "
        "config's weights",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=paths.DEFAULT_ARTIFACTS_DIR,
        help="artifacts root (<out>/<name>/)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="replaces the config's [data] dir; for a named dataset, where it lives (env "
        f"{paths.DATA_DIR_ENV}, default {paths.DEFAULT_DATA_DIR}; when absent, package photos "
        "are used and the evaluation is marked small)",
    )
    p.add_argument("--stage", choices=("all", "export", "quantize", "evaluate"), default="all")
    p.add_argument(
        "--max-top1-drop",
        type=float,
        default=None,
        help="replaces [gate] max_top1_drop: fail when int8 top-1 is more than this many points "
        "below fp32",
    )
    p.add_argument(
        "--phone-size-images",
        type=lambda v: None if v == "all" else int(v),
        default=DEFAULT_PHONE_SIZE_IMAGES,
        help="evaluation images also classified as 12 MP and ~3 MP photos through the served "
        "path (a seeded subset; 'all'; 0 skips it; default %(default)s)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    return p


def config_path(args: argparse.Namespace) -> Path:
    """--config, or the shipped config --model names (default auto)."""
    if args.config is not None:
        return Path(args.config)
    name = args.model or "auto"
    if name != "auto":
        return config.shipped(name)
    resnet = config.shipped("resnet18")
    if args.weights is not None:
        return resnet
    try:
        resolve_official(official("torchvision:IMAGENET1K_V1", "resnet18"))
    except WeightsUnavailable as exc:
        log.warning("=" * 78)
        log.warning("--model auto: resnet18's official weights are unavailable: %s", exc)
        log.warning("--model auto: BUILDING efficientnet_lite0 INSTEAD (real ImageNet weights)")
        log.warning("=" * 78)
        return config.shipped("efficientnet_lite0")
    return resnet


def options_from(args: argparse.Namespace) -> BuildOptions:
    return BuildOptions(
        config=config_path(args),
        weights=args.weights,
        out=args.out,
        data_dir=args.data_dir,
        stage=args.stage,
        max_top1_drop=args.max_top1_drop,
        phone_size_images=args.phone_size_images,
    )


def _quiet_libraries() -> None:
    # The exporter and quantizer warn about things we handle on purpose (legacy exporter,
    # pre-processing done); the build's own log says what matters.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger().setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s build %(levelname)s %(message)s", stream=sys.stderr)
    _quiet_libraries()
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    if args.quiet:
        progress.quiet()
    try:
        model_dir = run_build(options_from(args))
    except BuildError as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("build: interrupted", file=sys.stderr)
        return 130
    print(model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
