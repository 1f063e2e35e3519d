"""Accuracy beside speed: top-1/top-5 of each variant on the labeled evaluation images (the
build's split: disjoint from the 100 calibration images), and each int8 variant's top-1
agreement with fp32. ResNet-18 has random weights here: its accuracy is noise, its agreement
with fp32 still shows what quantization changed.

    python -m bench.experiments.accuracy [--quick] [--out DIR]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bench.config import BenchConfig, model_file, run_benchmark
from bench.experiments.engine_worker import dynamic_int8_file
from bench.report import Section, bar, fmt, table
from build.data import DataSplit, choose_split, load_pixels
from build.evaluate import accuracy, agreement, predict
from build.sessions import Provider, session
from service.inference.preprocess import PreprocessSpec
from service.model.manifest import load_manifest

MODELS = ("efficientnet_lite0", "resnet18")
# variant -> label, the file it runs (fp32, int8 or int8_dynamic), provider
VARIANTS: dict[str, tuple[str, str, Provider]] = {
    "fp32": ("ORT fp32 (reference)", "fp32", "cpu"),
    "int8_dynamic": ("ORT int8 dynamic (the write-up's recipe)", "int8_dynamic", "cpu"),
    "int8_static": ("ORT int8 static U8S8 (ours), CPU EP", "int8", "cpu"),
    "int8_openvino": ("ours on the OpenVINO EP", "int8", "openvino"),
}


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


def evaluate_model(
    cfg: BenchConfig, model: str, split: DataSplit, limit: int | None
) -> ModelAccuracy:
    """Every variant on the same pixels, scored as the build scores fp32 and int8
    (build.evaluate), with 2 intra-op threads."""
    model_dir = cfg.model_dir(model)
    manifest = load_manifest(model_dir)
    images = split.evaluation[:limit] if limit else split.evaluation
    spec = PreprocessSpec(manifest.input.resize_size, manifest.input.crop_size)
    pixels = load_pixels(tuple(image.path for image in images), spec, model)
    accept = [image.accept for image in images]
    fp32 = model_file(model_dir, "fp32")
    files = {"fp32": fp32, "int8": model_file(model_dir, "int8")}
    files["int8_dynamic"] = dynamic_int8_file(fp32)
    logits, variants = {}, {}
    for variant, (_, file, provider) in VARIANTS.items():
        logits[variant] = predict(session(files[file], provider, 2), pixels, variant)
        top = accuracy(logits[variant], accept)
        agrees = agreement(logits["fp32"], logits[variant])
        variants[variant] = Scores(files[file].stat().st_size / 1e6, top.top1, top.top5, agrees)
    return ModelAccuracy(len(images), manifest.model.untrained, variants)


def run(cfg: BenchConfig) -> Section:
    section = Section("accuracy", "Accuracy beside speed (top-1 of each quantized variant)")
    split = choose_split(cfg.data_dir, required=False)
    limit = 40 if cfg.quick else None
    models = cfg.built(MODELS, section)
    with bar(len(models), "accuracy") as progress:
        results = {}
        for model in models:
            results[model] = evaluate_model(cfg, model, split, limit)
            progress.update(1)
    section.data = {"dataset": split.dataset, "small": split.small, "models": results}
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
        for variant, (label, _, _) in VARIANTS.items()
    ]
    headers = ["model", "variant", "file MB", "top-1 %", "top-5 %", "top-1 agrees with fp32 %"]
    section.add(table(headers, rows))
    return section


if __name__ == "__main__":
    run_benchmark(run, __doc__)
