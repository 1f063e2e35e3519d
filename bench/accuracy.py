"""Accuracy beside speed: top-1/top-5 of each variant on the labeled evaluation images (the
build's split: disjoint from the 100 calibration images), and each int8 variant's top-1
agreement with fp32. ResNet-18 has random weights here: its accuracy is noise, its agreement
with fp32 still shows what quantization changed.

    python -m bench.accuracy [--quick] [--out DIR]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from bench.cli import run_benchmark
from bench.config import BenchConfig, model_file
from bench.engine_worker import dynamic_int8_file, ort_session
from bench.progress import bar
from bench.report import Section, table
from bench.stats import fmt
from build.data import DataSplit, choose_split
from service.manifest import load_manifest
from service.preprocess import PreprocessSpec, preprocess

MODELS = ("efficientnet_lite0", "resnet18")
VARIANTS = {
    "fp32": "ORT fp32 (reference)",
    "int8_dynamic": "ORT int8 dynamic (the write-up's recipe)",
    "int8_static": "ORT int8 static U8S8 (ours), CPU EP",
    "int8_openvino": "ours on the OpenVINO EP",
}
BATCH = 16


def _logits(run: Any, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    return np.concatenate([run(pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH)])


def _scores(
    logits: npt.NDArray[np.float32], accept: list[frozenset[int]], ref_top1: npt.NDArray[np.int64]
) -> dict[str, float]:
    order = np.argsort(-logits, axis=1)[:, :5]
    top1 = [int(row[0]) in ok for row, ok in zip(order, accept, strict=True)]
    top5 = [bool(set(row.tolist()) & ok) for row, ok in zip(order, accept, strict=True)]
    return {
        "top1": 100 * float(np.mean(top1)),
        "top5": 100 * float(np.mean(top5)),
        "agreement_with_fp32": 100 * float(np.mean(order[:, 0] == ref_top1)),
    }


def evaluate_model(
    cfg: BenchConfig, model: str, split: DataSplit, limit: int | None
) -> dict[str, Any]:
    model_dir = cfg.model_dir(model)
    manifest = load_manifest(model_dir)
    spec = PreprocessSpec(manifest.input.resize_size, manifest.input.crop_size)
    images = split.evaluation[:limit] if limit else split.evaluation
    pixels = np.stack([preprocess(item.path.read_bytes(), spec) for item in images])
    accept = [item.accept for item in images]
    files = {
        "fp32": model_file(model_dir, "fp32"),
        "int8_dynamic": dynamic_int8_file(model_file(model_dir, "fp32")),
        "int8_static": model_file(model_dir, "int8"),
        "int8_openvino": model_file(model_dir, "int8"),
    }
    logits = {
        variant: _logits(ort_session(path, 2, openvino=variant == "int8_openvino"), pixels)
        for variant, path in files.items()
    }
    ref_top1 = np.argmax(logits["fp32"], axis=1)
    return {
        "images": len(images),
        "untrained": manifest.model.untrained,
        "file_mb": {v: p.stat().st_size / 1e6 for v, p in files.items()},
        "variants": {v: _scores(lg, accept, ref_top1) for v, lg in logits.items()},
    }


def run(cfg: BenchConfig) -> Section:
    section = Section("accuracy", "Accuracy beside speed (top-1 of each quantized variant)")
    split = choose_split(cfg.data_dir, required=False)
    limit = 40 if cfg.quick else None
    models = [m for m in MODELS if cfg.has_model(m)]
    progress = bar(len(models), "accuracy")
    section.data = {"dataset": split.dataset, "small": split.small, "models": {}}
    for model in models:
        section.data["models"][model] = evaluate_model(cfg, model, split, limit)
        progress.update(1)
    progress.close()
    section.add(
        f"Evaluation images: {split.dataset}"
        + (f", first {limit} only (quick mode)" if limit else "")
        + ". The same split the build evaluates on, disjoint from its calibration images. "
        "These may be ImageNet training images: compare variants, do not read the absolute "
        "top-1 as ImageNet-val accuracy. A difference under ~1 point on 400 images is noise."
    )
    rows = []
    for model, result in section.data["models"].items():
        note = " (random weights: accuracy is noise)" if result["untrained"] else ""
        for variant, label in VARIANTS.items():
            scores = result["variants"][variant]
            rows.append(
                [
                    f"{model}{note}",
                    label,
                    fmt(result["file_mb"][variant]),
                    fmt(scores["top1"]),
                    fmt(scores["top5"]),
                    fmt(scores["agreement_with_fp32"]),
                ]
            )
    section.add(
        table(
            ["model", "variant", "file MB", "top-1 %", "top-5 %", "top-1 agrees with fp32 %"], rows
        )
    )
    missing = sorted(set(MODELS) - set(models))
    if missing:
        section.add(f"**Skipped, no artifacts:** {', '.join(missing)}.")
    return section


def main(argv: list[str] | None = None) -> None:
    run_benchmark("Accuracy of the quantized variants", run, argv)


if __name__ == "__main__":
    main()
