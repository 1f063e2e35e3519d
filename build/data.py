"""The images that calibrate and evaluate the int8 model, always disjoint.

A user's model (``[data] dir``): one sub-folder per label; a seeded split stratified by class,
every chosen image decoded once first (unreadable ones skipped and named), sizes and a digest of
the folder in the manifest (folder_split). The catalog's named dataset: the 500 labeled
ImageNet sample images of ../shared/data (--data-dir / IMGCLS_DATA_DIR), a seeded 100 for
calibration and the other 400 for evaluation; without it, photos that ship inside installed
packages (scikit-image, matplotlib), labeled with the ImageNet classes a good classifier may
answer, and the report says the evaluation is small.

Every image goes through service.inference.preprocess.preprocess, the function the server runs,
so the int8 model is calibrated and judged on exactly the pixels it will be served.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from build import progress
from build.errors import DataError
from service.errors import ImgclsError
from service.inference.preprocess import PreprocessSpec, preprocess
from service.model.manifest import sha256_file

log = logging.getLogger("build")
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
    for path in progress.bar(paths, f"preprocess {what}", "img"):
        try:
            images.append(preprocess(path.read_bytes(), spec))
        except (OSError, ImgclsError) as exc:
            raise DataError(f"cannot use {path}: {exc}") from exc
    return np.stack(images)


# --- class folders: the user's images, one sub-folder per label ------------------------------
MIN_CALIBRATION_PER_CLASS = 2
MIN_EVALUATION_PER_CLASS = 5


@dataclass(frozen=True, slots=True)
class ClassCount:
    files: int  # in the folder
    calibration: int
    evaluation: int
    unreadable: int


@dataclass(frozen=True, slots=True)
class FolderSplit:
    """A seeded split of class folders, stratified by class, after every chosen image was
    decoded once (an unreadable one is skipped, named, and replaced by another of its class)."""

    split: DataSplit
    counts: dict[str, ClassCount]  # by label, in label order
    unreadable: tuple[tuple[Path, str], ...]
    digest: str  # over every image file of every class folder (relative path + sha256)


def _class_files(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder`` (sub-folders too), sorted: the order the seeded
    shuffle starts from, so the split depends on the files, not on the file system."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _check_folders(root: Path, labels: list[str]) -> None:
    seen: dict[str, int] = {}
    for number, label in enumerate(labels, 1):
        if label in seen:
            raise DataError(
                f"the labels name {label!r} twice (lines {seen[label]} and {number}): class "
                "folders cannot tell the two apart"
            )
        seen[label] = number
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for name in folders:
        if name not in seen:
            close = difflib.get_close_matches(name, labels, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"folder {root / name} is not a class in the labels{hint}")
    for label in labels:
        if not (root / label).is_dir():
            raise DataError(
                f"class {label!r} has no folder {root / label} (one sub-folder per label, "
                "named exactly as in the labels file)"
            )


def _targets(
    files: dict[str, int], fraction: float, max_cal: int, max_eval: int
) -> dict[str, tuple[int, int]]:
    """Per class: (calibration, evaluation) sizes, proportional to its files, within the caps,
    never below the minimums."""
    cal = {k: max(MIN_CALIBRATION_PER_CLASS, round(fraction * n)) for k, n in files.items()}
    ev = {k: n - cal[k] for k, n in files.items()}
    total_cal, total_ev = sum(cal.values()), sum(ev.values())
    if total_cal > max_cal:
        cal = {k: max(MIN_CALIBRATION_PER_CLASS, c * max_cal // total_cal) for k, c in cal.items()}
    if total_ev > max_eval:
        ev = {k: max(MIN_EVALUATION_PER_CLASS, e * max_eval // total_ev) for k, e in ev.items()}
    return {k: (cal[k], ev[k]) for k in files}


def _readable(path: Path, spec: PreprocessSpec) -> str | None:
    """None when the service could decode and preprocess ``path``, else the reason."""
    try:
        preprocess(path.read_bytes(), spec)
    except (OSError, ImgclsError) as exc:
        return str(exc) or type(exc).__name__
    return None


def folder_split(
    root: Path,
    labels: list[str],
    spec: PreprocessSpec,
    *,
    seed: int = SPLIT_SEED,
    fraction: float = 0.2,
    max_calibration: int = 200,
    max_evaluation: int = 2000,
    max_unreadable_fraction: float = 0.05,
) -> FolderSplit:
    """The seeded, class-stratified split of ``root``/<label>/ images."""
    _check_folders(root, labels)
    files = {label: _class_files(root / label) for label in labels}
    for label, paths in files.items():
        if not paths:
            raise DataError(f"class folder {root / label} is empty")
    needed = MIN_CALIBRATION_PER_CLASS + MIN_EVALUATION_PER_CLASS
    for label, paths in files.items():
        if len(paths) < needed:
            raise DataError(_too_few(root / label, len(paths), 0, needed))
    targets = _targets(
        {k: len(v) for k, v in files.items()}, fraction, max_calibration, max_evaluation
    )
    calibration: list[Path] = []
    evaluation: list[LabeledImage] = []
    unreadable: list[tuple[Path, str]] = []
    counts: dict[str, ClassCount] = {}
    tried = 0
    for index, label in enumerate(labels):
        order = list(files[label])
        # Seeded by class: adding a class or an image to another class leaves this split alone.
        random.Random(f"{seed}:{label}").shuffle(order)
        want_cal, want_ev = targets[label]
        good: list[Path] = []
        bad = 0
        for path in progress.bar(order, f"check {label}", "img"):
            if len(good) == want_cal + want_ev:
                break
            tried += 1
            reason = _readable(path, spec)
            if reason is None:
                good.append(path)
            else:
                bad += 1
                unreadable.append((path, reason))
        n_cal = min(want_cal, max(MIN_CALIBRATION_PER_CLASS, len(good) - MIN_EVALUATION_PER_CLASS))
        if len(good) < needed:
            raise DataError(_too_few(root / label, len(good), bad, needed))
        calibration += good[:n_cal]
        evaluation += [LabeledImage(p, frozenset({index})) for p in good[n_cal:]]
        counts[label] = ClassCount(len(files[label]), n_cal, len(good) - n_cal, bad)
    _check_unreadable(unreadable, tried, max_unreadable_fraction)
    every = tuple(p for paths in files.values() for p in paths)
    total = len(every)
    return FolderSplit(
        split=DataSplit(
            dataset=f"{root} ({len(labels)} classes, {total} images; seed {seed})",
            small=False,
            calibration=tuple(calibration),
            evaluation=tuple(evaluation),
            calibration_source=f"{root} (seed {seed}, stratified by class)",
        ),
        counts=counts,
        unreadable=tuple(unreadable),
        digest=tree_sha256(root, every),
    )


def _too_few(folder: Path, usable: int, unreadable: int, needed: int) -> str:
    bad = f" ({unreadable} unreadable)" if unreadable else ""
    return (
        f"class folder {folder} has {usable} usable images{bad}; at least {needed} are needed "
        f"({MIN_CALIBRATION_PER_CLASS} for calibration, {MIN_EVALUATION_PER_CLASS} for "
        "evaluation)"
    )


def _check_unreadable(unreadable: list[tuple[Path, str]], tried: int, allowed: float) -> None:
    if not unreadable:
        return
    named = "; ".join(f"{p} ({reason})" for p, reason in unreadable[:5])
    more = f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
    share = len(unreadable) / tried
    if share > allowed:
        raise DataError(
            f"{len(unreadable)} of {tried} images could not be read ({100 * share:.1f}%, more "
            f"than the {100 * allowed:g}% [data] max_unreadable_fraction allows): {named}{more}"
        )
    for path, reason in unreadable:
        log.warning("skipped unreadable image %s: %s", path, reason)
    log.warning("%d of %d images were unreadable and skipped", len(unreadable), tried)


def tree_sha256(root: Path, paths: tuple[Path, ...]) -> str:
    """One digest for a labeled folder: over each file's path relative to ``root`` (its class)
    and its sha256, sorted. Renaming a class or moving an image changes it."""
    rows = sorted(f"{p.relative_to(root).as_posix()}\t{sha256_file(p)}" for p in paths)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()
