"""What the drift alerts' thresholds rest on (docs/decisions/prediction-monitoring.md): the
served int8 model's mean top-1 probability and class-mix divergence (total variation distance,
as deploy/prometheus/alerts.yml computes it) for traffic like the evaluation set and for
drifted traffic (noise, blank, blurred, dark, upside-down images), and the divergence's noise
floor: how far a sample of n answers from undrifted traffic already lies from the baseline.

    python -m bench.experiments.prediction_drift [--model-dir DIR] [--draws 200]

Reads the model's manifest baseline (build/baseline.py) and ../shared/data's 500 images.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from build import data
from build.evaluate import predict
from build.sessions import session
from service import paths
from service.inference.postprocess import softmax
from service.inference.preprocess import PreprocessSpec, preprocess
from service.model.loading import model_file
from service.model.manifest import PredictionBaseline, load_manifest

Logits = npt.NDArray[np.float32]
Transform = Callable[[Image.Image, np.random.Generator], Image.Image]
SIZES = (200, 500, 1000, 2000, 5000)


def tvd(classes: npt.NDArray[np.int64], baseline: PredictionBaseline, num_classes: int) -> float:
    """0.5 * sum |p - q| over every class: the divergence the alert computes in PromQL."""
    p = np.bincount(classes, minlength=num_classes) / len(classes)
    q = np.zeros(num_classes)
    for index, count in baseline.class_counts.items():
        q[index] = count / baseline.images
    return float(0.5 * np.abs(p - q).sum())


def noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))


def blank(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return Image.new("RGB", (400, 300), tuple(int(v) for v in rng.integers(0, 256, 3)))


DRIFTS: dict[str, Transform] = {
    "as evaluated (all 500)": lambda image, rng: image,
    "uniform noise": noise,
    "blank, random colour": blank,
    "blurred (radius 6)": lambda image, rng: image.filter(ImageFilter.GaussianBlur(6)),
    "dark (x0.25)": lambda image, rng: image.point(lambda v: v // 4),
    "upside down": lambda image, rng: image.rotate(180),
}


def encoded(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def logits_of(sess: object, images: list[bytes], spec: PreprocessSpec) -> Logits:
    pixels = np.stack([preprocess(image, spec) for image in images])
    return predict(sess, pixels, "drift")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = paths.artifacts_dir() / "efficientnet_lite0"
    parser.add_argument("--model-dir", type=Path, default=default_dir)
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()
    manifest = load_manifest(args.model_dir)
    evaluation = manifest.evaluation
    baseline = evaluation.prediction_baseline if evaluation else None
    if baseline is None:
        raise SystemExit(f"{args.model_dir}: the manifest has no prediction baseline; rebuild")
    file = model_file("int8", manifest)
    sess = session(args.model_dir / manifest.files[file].path, "cpu")
    spec = PreprocessSpec(manifest.input.resize_size, manifest.input.crop_size)
    num_classes = manifest.output.num_classes
    split = data.choose_split(paths.data_dir(), required=True)
    files = [e.path for e in split.evaluation] + list(split.calibration)
    originals = [Image.open(path).convert("RGB") for path in files]
    rng = np.random.default_rng(0)
    print(
        f"model {manifest.model.name} {file}; baseline: {baseline.images} images, mean "
        f"top-1 {baseline.mean_confidence:.3f}, {len(baseline.class_counts)} classes\n"
    )
    print("| traffic | images | mean top-1 | / baseline | TVD vs baseline | distinct top-1 |")
    print("|---|---|---|---|---|---|")
    reference: npt.NDArray[np.int64] | None = None
    for name, drift in DRIFTS.items():
        logits = logits_of(sess, [encoded(drift(im, rng)) for im in originals], spec)
        confidence = softmax(logits).max(axis=1)
        classes = np.argmax(logits, axis=1)
        reference = classes if reference is None else reference
        print(
            f"| {name} | {len(classes)} | {confidence.mean():.3f} | "
            f"{confidence.mean() / baseline.mean_confidence:.2f} | "
            f"{tvd(classes, baseline, num_classes):.3f} | {len(set(classes.tolist()))} |"
        )
    assert reference is not None
    print(
        "\nNoise floor: TVD of n answers drawn from undrifted traffic (the 500 images), "
        f"{args.draws} draws each\n"
    )
    print("| n answers | median TVD | p99 TVD |")
    print("|---|---|---|")
    for n in SIZES:
        draws = [tvd(rng.choice(reference, n), baseline, num_classes) for _ in range(args.draws)]
        print(f"| {n} | {np.median(draws):.3f} | {np.quantile(draws, 0.99):.3f} |")


if __name__ == "__main__":
    main()
