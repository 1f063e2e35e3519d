"""The images that calibrate and evaluate the int8 model, always disjoint.

With ../shared/data (found through --data-dir / IMGCLS_DATA_DIR): its 500 labeled ImageNet
sample images, a seeded 100 for calibration and the other 400 for evaluation. Without it: photos
that ship inside installed packages (scikit-image, matplotlib), labeled with the ImageNet classes a
good classifier may answer; unlabeled package images calibrate. That evaluation is small and the
report says so.

Every image goes through service.inference.preprocess.preprocess, the function the server runs, so
the int8
model is calibrated and judged on exactly the pixels it will be served.
"""

from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from build.errors import DataError
from service.errors import ImgclsError
from service.inference.preprocess import PreprocessSpec, preprocess
from service.model.manifest import sha256_file

IMAGENET_SUBDIR = "imagenet-sample-images"
CALIBRATION_SIZE = 100
SPLIT_SEED = 0


@dataclass(frozen=True, slots=True)
class LabeledImage:
    path: Path
    accept: frozenset[int]  # a top-1 in here counts as correct


@dataclass(frozen=True, slots=True)
class DataSplit:
    dataset: str
    small: bool
    calibration: tuple[Path, ...]
    evaluation: tuple[LabeledImage, ...]
    calibration_source: str


def files_sha256(paths: tuple[Path, ...]) -> str:
    """One digest for a set of files: over their sorted sha256s, so order does not matter."""
    digests = sorted(sha256_file(p) for p in paths)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def read_labels(folder: Path) -> list[tuple[Path, int]]:
    """The labeled set's labels.csv: (image path, ImageNet class index) per row, in file order.
    The one reader of that file (the build splits it, bench sends its images)."""
    with (folder / "labels.csv").open(newline="") as f:
        return [(folder / r["file"], int(r["class_index"])) for r in csv.DictReader(f)]


def imagenet_split(data_dir: Path, calibration_size: int = CALIBRATION_SIZE) -> DataSplit:
    folder = data_dir / IMAGENET_SUBDIR
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise DataError(f"no evaluation data: {labels} does not exist")
    rows = read_labels(folder)
    missing = [p.name for p, _ in rows if not p.is_file()]
    if missing or not rows:
        raise DataError(f"{labels} lists {len(missing)} missing images, e.g. {missing[:3]}")
    rng = random.Random(SPLIT_SEED)
    calibration = set(rng.sample(range(len(rows)), calibration_size))
    return DataSplit(
        dataset=f"{folder} (seed {SPLIT_SEED}: {len(rows) - calibration_size} evaluation images)",
        small=False,
        calibration=tuple(rows[i][0] for i in sorted(calibration)),
        evaluation=tuple(
            LabeledImage(path, frozenset({label}))
            for i, (path, label) in enumerate(rows)
            if i not in calibration
        ),
        calibration_source=f"{folder} (seeded {calibration_size})",
    )


# Photos inside packages, with the ImageNet indices a good classifier may answer for each (the
# semantics of ../shared/data/photos/expected.json, checked against EfficientNet-Lite0 fp32).
_PACKAGE_EVAL = {
    ("skimage", "chelsea.png"): (281, 282, 285),  # tabby, tiger cat, Egyptian cat
    ("skimage", "coffee.png"): (967, 968, 504),  # espresso, cup, coffee mug
    ("skimage", "rocket.jpg"): (657, 744, 812),  # missile, projectile, space shuttle
    ("skimage", "camera.png"): (872, 759, 732),  # tripod, reflex camera, Polaroid camera
    ("skimage", "motorcycle_left.png"): (665, 670, 518, 535),  # moped, scooter, helmet, brake
    ("matplotlib", "grace_hopper.jpg"): (652, 906, 834, 400, 667, 457),  # uniform, tie, gown...
}
# Unlabeled package images: calibration needs only realistic activations, not labels.
_PACKAGE_CALIBRATION = (
    "astronaut.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
    "clock_motion.png",
)


def _package_dir(package: str) -> Path:
    try:
        if package == "skimage":
            import skimage

            return Path(skimage.__file__).parent / "data"
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data"
    except ImportError as exc:
        raise DataError(
            f"no evaluation data: the labeled set is absent and {package} is not installed "
            "(install the 'build' extra or pass --data-dir)"
        ) from exc


def package_photos() -> tuple[LabeledImage, ...]:
    """The labeled photos that ship inside scikit-image and matplotlib: the evaluation set when
    ../shared/data is absent, and the test suite's photos on a machine without it."""
    return tuple(
        LabeledImage(_package_dir(pkg) / name, frozenset(accept))
        for (pkg, name), accept in _PACKAGE_EVAL.items()
    )


def package_split() -> DataSplit:
    evaluation = package_photos()
    calibration = tuple(_package_dir("skimage") / name for name in _PACKAGE_CALIBRATION)
    missing = [p for p in (*calibration, *(e.path for e in evaluation)) if not p.is_file()]
    if missing:
        raise DataError(f"no evaluation data: package photo {missing[0]} is missing")
    return DataSplit(
        dataset=f"package photos (scikit-image, matplotlib): {len(evaluation)} images, SMALL",
        small=True,
        calibration=calibration,
        evaluation=evaluation,
        calibration_source="scikit-image package images (unlabeled)",
    )


def choose_split(data_dir: Path, required: bool) -> DataSplit:
    """The labeled set when present; otherwise the package photos, unless the caller named the
    directory explicitly (``required``), in which case its absence is an error."""
    if (data_dir / IMAGENET_SUBDIR / "labels.csv").is_file() or required:
        return imagenet_split(data_dir)
    return package_split()


Pixels = npt.NDArray[np.uint8]


def load_pixels(paths: tuple[Path, ...], spec: PreprocessSpec, what: str) -> Pixels:
    """Stack the preprocessed images into one NHWC uint8 array."""
    images = []
    for path in tqdm(paths, desc=f"preprocess {what}", unit="img", leave=False):
        try:
            images.append(preprocess(path.read_bytes(), spec))
        except (OSError, ImgclsError) as exc:
            raise DataError(f"cannot use {path}: {exc}") from exc
    return np.stack(images)
