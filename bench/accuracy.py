"""Accuracy beside speed: top-1/top-5 of each variant on the labeled evaluation images (the
build's split: disjoint from the 100 calibration images), and each int8 variant's top-1
agreement with fp32. ResNet-18 has random weights here: its accuracy is noise, its agreement
with fp32 still shows what quantization changed.

    python -m bench.accuracy [--quick] [--out DIR]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from bench.config import BenchConfig, model_file, run_benchmark
from bench.engine_worker import dynamic_int8_file, ort_session
from bench.report import Section, bar, fmt, table
from build.data import DataSplit, choose_split, load_pixels
from service.manifest import load_manifest
from service.preprocess import PreprocessSpec

MODELS = ("efficientnet_lite0", "resnet18")
VARIANTS = {
    "fp32": "ORT fp32 (reference)",
    "int8_dynamic": "ORT int8 dynamic (the write-up's recipe)",
    "int8_static": "ORT int8 static U8S8 (ours), CPU EP",
    "int8_openvino": "ours on the OpenVINO EP",
}
BATCH = 16


@dataclass(frozen=True)
class Scores:
    file_mb: float
    top1: float
    top5: float
    agreement_with_fp32: float  # % of images whose top-1 is fp32's


@dataclass(frozen=True)
class ModelAccuracy:
    images: int
    untrained: bool
    variants: dict[str, Scores]


def _scores(
    logits: npt.NDArray[np.float32], accept: list[frozenset[int]], fp32_top1: npt.NDArray[np.intp]
) -> tuple[float, float, float]:
    """top-1 %, top-5 % and % of top-1 equal to fp32's."""
    order = np.argsort(-logits, axis=1)[:, :5]
    top1 = [int(row[0]) in ok for row, ok in zip(order, accept, strict=True)]
    top5 = [bool(set(row.tolist()) & ok) for row, ok in zip(order, accept, strict=True)]
    return (
        100 * float(np.mean(top1)),
        100 * float(np.mean(top5)),
        100 * float(np.mean(order[:, 0] == fp32_top1)),
    )


def evaluate_model(
    cfg: BenchConfig, model: str, split: DataSplit, limit: int | None
) -> ModelAccuracy:
    model_dir = cfg.model_dir(model)
    manifest = load_manifest(model_dir)
    images = split.evaluation[:limit] if limit else split.evaluation
    spec = PreprocessSpec(manifest.input.resize_size, manifest.input.crop_size)
    pixels = load_pixels(tuple(image.path for image in images), spec, model)
    fp32, int8 = model_file(model_dir, "fp32"), model_file(model_dir, "int8")
    files = {"fp32": fp32, "int8_dynamic": dynamic_int8_file(fp32), "int8_static": int8}
    files["int8_openvino"] = int8
    logits = {}
    for variant, path in files.items():
        run = ort_session(path, 2, openvino=variant == "int8_openvino")
        logits[variant] = np.concatenate(
            [run(pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH)]
        )
    fp32_top1 = np.argmax(logits["fp32"], axis=1)
    accept = [image.accept for image in images]
    variants = {
        v: Scores(path.stat().st_size / 1e6, *_scores(logits[v], accept, fp32_top1))
        for v, path in files.items()
    }
    return ModelAccuracy(len(images), manifest.model.untrained, variants)


def run(cfg: BenchConfig) -> Section:
    section = Section("accuracy", "Accuracy beside speed (top-1 of each quantized variant)")
    split = choose_split(cfg.data_dir, required=False)
    limit = 40 if cfg.quick else None
    models = cfg.built(MODELS, section)
    progress = bar(len(models), "accuracy")
    results = {}
    for model in models:
        results[model] = evaluate_model(cfg, model, split, limit)
        progress.update(1)
    progress.close()
    section.data = {"dataset": split.dataset, "small": split.small}
    section.data["models"] = {m: asdict(r) for m, r in results.items()}
    section.add(
        f"Evaluation images: {split.dataset}"
        + (f", first {limit} only (quick mode)" if limit else "")
        + ". The same split the build evaluates on, disjoint from its calibration images. "
        "These may be ImageNet training images: compare variants, do not read the absolute "
        "top-1 as ImageNet-val accuracy. A difference under ~1 point on 400 images is noise."
    )
    rows = [
        [
            model + (" (random weights: accuracy is noise)" if result.untrained else ""),
            label,
            *(fmt(x) for x in asdict(result.variants[variant]).values()),
        ]
        for model, result in results.items()
        for variant, label in VARIANTS.items()
    ]
    headers = ["model", "variant", "file MB", "top-1 %", "top-5 %", "top-1 agrees with fp32 %"]
    section.add(table(headers, rows))
    return section


if __name__ == "__main__":
    run_benchmark(run, __doc__)
