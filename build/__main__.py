"""python -m build: export, quantize and evaluate one model into model_artifacts/<model>/.

User errors (unknown model, bad weights file, offline, no data) end with one line on stderr and
exit code 2; a model that fails the accuracy gate ends with exit code 1; never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from build.catalog import MODEL_NAMES
from build.errors import BuildError
from build.evaluate import DEFAULT_MAX_TOP1_DROP
from build.photo_size import DEFAULT_IMAGES as DEFAULT_PHONE_SIZE_IMAGES
from build.pipeline import BuildOptions, run_build
from service import paths


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m build", description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        default="auto",
        help=f"auto (default: resnet18 if its official weights can be had, else "
        f"efficientnet_lite0) or one of: {', '.join(MODEL_NAMES)}",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="a weights FILE, or 'random' (untrained, speed work only); default: the official ones",
    )
    p.add_argument("--out", type=Path, default=paths.DEFAULT_ARTIFACTS_DIR, help="artifacts root")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"labeled images (env {paths.DATA_DIR_ENV}, default {paths.DEFAULT_DATA_DIR}); "
        "when absent, package photos are used and the evaluation is marked small",
    )
    p.add_argument("--stage", choices=("all", "export", "quantize", "evaluate"), default="all")
    p.add_argument(
        "--max-top1-drop",
        type=float,
        default=DEFAULT_MAX_TOP1_DROP,
        help="fail when int8 top-1 is more than this many points below fp32 (default %(default)s)",
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


def options_from(args: argparse.Namespace) -> BuildOptions:
    data_dir = args.data_dir or paths.data_dir()
    return BuildOptions(
        model=args.model,
        weights=args.weights,
        out=args.out,
        data_dir=data_dir,
        data_dir_required=args.data_dir is not None,
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
    logging.getLogger("build").setLevel(logging.WARNING if args.quiet else logging.INFO)
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
