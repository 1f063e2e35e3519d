"""The build: export -> quantize -> evaluate -> manifest, each stage runnable alone.

Between stages, what the manifest will need is kept in <model_dir>/build_state.json, so
``--stage evaluate`` after ``--stage quantize`` writes the same manifest as ``--stage all``.
The manifest is written last, only when the gate passes: a server never picks up a model that
failed its evaluation (a failed one is written to manifest.rejected.json for inspection).
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from build import catalog, data, evaluate, export, photo_size, quantize
from build.catalog import ModelEntry
from build.errors import BuildError, GateFailed, WeightsUnavailable
from build.graph import UInt8Classifier
from build.weights import ResolvedWeights, resolve
from service import paths
from service.model import int8_weights as isa
from service.model.int8_weights import WeightBits
from service.model.manifest import (
    MANIFEST_NAME,
    EvaluationInfo,
    ExportInfo,
    InputSpec,
    Manifest,
    ModelInfo,
    OutputSpec,
    PhoneSizeEvaluation,
    QuantizationInfo,
    file_entry,
    write_manifest,
)

log = logging.getLogger("build")
Stage = Literal["all", "export", "quantize", "evaluate"]
FP32_NAME = "model.fp32.onnx"
INT8_NAME = "model.int8.onnx"  # full-range weights, for CPUs with VNNI/AMX
INT8_W7_NAME = "model.int8-w7.onnx"  # 7-bit weights, for x86 without VNNI
# (service/model/int8_weights.py)
INT8_NAMES: dict[WeightBits, str] = {"int8": INT8_NAME, "int8_w7": INT8_W7_NAME}
LABELS_NAME = "labels.txt"
STATE_NAME = "build_state.json"
REJECTED_NAME = "manifest.rejected.json"
EXPORT_CHECK_IMAGES = 16


@dataclass(frozen=True, slots=True)
class BuildOptions:
    model: str = "auto"
    weights: str | None = None  # None: official; "random"; or a file
    out: Path = paths.DEFAULT_ARTIFACTS_DIR
    data_dir: Path = paths.DEFAULT_DATA_DIR
    data_dir_required: bool = False  # named explicitly: its absence is an error
    stage: Stage = "all"
    max_top1_drop: float = evaluate.DEFAULT_MAX_TOP1_DROP
    phone_size_images: int | None = photo_size.DEFAULT_IMAGES  # None: all; 0: skipped


class BuildState(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: ModelInfo
    export: ExportInfo | None = None
    quantization: QuantizationInfo | None = None
    stage_seconds: dict[str, float] = Field(default_factory=dict)


def choose_model(name: str, weights: str | None) -> tuple[ModelEntry, ResolvedWeights]:
    """``auto``: resnet18 when its official weights (or --weights) can be had, otherwise
    efficientnet_lite0, said loudly."""
    if name != "auto":
        entry = catalog.get(name)
        return entry, resolve(entry.official, weights)
    resnet = catalog.get("resnet18")
    try:
        return resnet, resolve(resnet.official, weights)
    except WeightsUnavailable as exc:
        lite0 = catalog.get("efficientnet_lite0")
        log.warning("=" * 78)
        log.warning("--model auto: resnet18's official weights are unavailable: %s", exc)
        log.warning("--model auto: BUILDING efficientnet_lite0 INSTEAD (real ImageNet weights)")
        log.warning("=" * 78)
        return lite0, resolve(lite0.official, None)


@dataclass
class Build:
    """One model's build: its entry, weights, folder and (lazily) its data."""

    entry: ModelEntry
    weights: ResolvedWeights
    options: BuildOptions
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.options.out / self.entry.name

    @cached_property
    def split(self) -> data.DataSplit:
        split = data.choose_split(self.options.data_dir, self.options.data_dir_required)
        if split.small:
            where, dataset = self.options.data_dir, split.dataset
            log.warning("no labeled set under %s: SMALL evaluation on %s", where, dataset)
        return split

    def pixels(self, paths: tuple[Path, ...], what: str) -> npt.NDArray[np.uint8]:
        return data.load_pixels(paths, self.entry.preprocess, what)

    @cached_property
    def eval_pixels(self) -> npt.NDArray[np.uint8]:
        return self.pixels(tuple(e.path for e in self.split.evaluation), "evaluation")

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("%s: %s ...", self.entry.name, stage)
        yield
        self.seconds[stage] = round(time.perf_counter() - start, 2)
        log.info("%s: %s done in %.1f s", self.entry.name, stage, self.seconds[stage])

    def load_state(self) -> BuildState:
        path = self.model_dir / STATE_NAME
        if not path.is_file():
            raise BuildError(f"{path} is missing: run the earlier stages first (--stage all)")
        return BuildState.model_validate_json(path.read_text())

    def save_state(self, state: BuildState) -> None:
        state.stage_seconds.update(self.seconds)
        (self.model_dir / STATE_NAME).write_text(state.model_dump_json(indent=2) + "\n")

    def model_info(self) -> ModelInfo:
        digest = self.weights.sha256
        return ModelInfo(
            name=self.entry.name,
            version=f"{self.entry.version}-{digest[:8] if digest else 'random'}",
            architecture=self.entry.architecture,
            weights_source=self.weights.source,
            weights_sha256=digest,
            untrained=self.weights.untrained,
        )


def run_export(b: Build) -> None:
    with b.timed("export"):
        if b.weights.untrained:
            log.warning("%s: RANDOM WEIGHTS: marked untrained, for speed work only", b.entry.name)
        wrapped = UInt8Classifier(b.entry.load(b.weights), b.entry.mean, b.entry.std).eval()
        b.model_dir.mkdir(parents=True, exist_ok=True)
        (b.model_dir / MANIFEST_NAME).unlink(missing_ok=True)  # stale until evaluate passes
        fp32 = b.model_dir / FP32_NAME
        export.export_onnx(wrapped, fp32, b.entry.preprocess.crop_size)
        (b.model_dir / LABELS_NAME).write_text("\n".join(b.entry.class_names()) + "\n")
        check = export.compare_with_torch(wrapped, fp32, b.eval_pixels[:EXPORT_CHECK_IMAGES])
    log.info(
        "%s: max |logit| difference torch vs ORT: %.2e", b.entry.name, check.max_abs_logit_diff
    )
    info = ExportInfo(
        exporter=export.exporter_name(),
        opset=export.OPSET,
        dynamic_batch=True,
        max_abs_logit_diff=check.max_abs_logit_diff,
        diff_images=check.images,
    )
    b.save_state(BuildState(model=b.model_info(), export=info))


def run_quantize(b: Build) -> None:
    state = b.load_state()
    recipe = b.entry.recipe
    with b.timed("quantize"):
        pixels = b.pixels(b.split.calibration, "calibration")
        outputs = {key: b.model_dir / name for key, name in INT8_NAMES.items()}
        quantize.quantize(b.model_dir / FP32_NAME, outputs, pixels, recipe)
    state.quantization = QuantizationInfo(
        format="QDQ",
        per_channel=True,
        activation_type="QUInt8",
        weight_type="QInt8",
        calibration_method=recipe.describe(),
        calibration_images=len(b.split.calibration),
        calibration_sha256=data.files_sha256(b.split.calibration),
        calibration_source=b.split.calibration_source,
        nodes_excluded=recipe.nodes_to_exclude,
    )
    b.save_state(state)


def run_evaluate(b: Build) -> Manifest:
    state = b.load_state()
    if state.export is None or state.quantization is None:
        raise BuildError(f"{b.model_dir / STATE_NAME}: export or quantize has not run")
    untrained = state.model.untrained
    # The file this CPU computes exactly runs on every provider with its real kernels; the
    # other is checked by exact reference execution, so both files are gated on any machine.
    served = isa.exact_int8_file()
    with b.timed("evaluate"):
        result = evaluate.evaluate(
            b.model_dir / FP32_NAME,
            b.model_dir / INT8_NAMES[served],
            b.eval_pixels,
            [e.accept for e in b.split.evaluation],
            b.options.max_top1_drop,
            gate_applicable=not untrained,
            reference={k: b.model_dir / n for k, n in INT8_NAMES.items() if k != served},
        )
        phone = _phone_sizes(b, b.model_dir / INT8_NAMES[served], gate_applicable=not untrained)
    state.stage_seconds.update(b.seconds)
    failures = result.failures() + photo_size.failures(phone, b.options.max_top1_drop)
    info = _evaluation_info(b, result)
    info = info.model_copy(update={"phone_sizes": phone, "passed": not failures})
    manifest = _manifest(b, state, state.export, state.quantization, info)
    _log_evaluation(b, result)
    log.info("%s: %s", b.entry.name, "\n".join(photo_size.report_lines(phone)))
    if failures:
        (b.model_dir / MANIFEST_NAME).unlink(missing_ok=True)
        (b.model_dir / REJECTED_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
        raise GateFailed(f"{b.entry.name}: int8 failed the accuracy gate: " + "; ".join(failures))
    (b.model_dir / REJECTED_NAME).unlink(missing_ok=True)
    write_manifest(b.model_dir, manifest)
    log.info("%s: wrote %s", b.entry.name, b.model_dir / MANIFEST_NAME)
    return manifest


def _phone_sizes(
    b: Build, int8_path: Path, gate_applicable: bool
) -> dict[str, PhoneSizeEvaluation]:
    if b.options.phone_size_images == 0:
        return {}
    return photo_size.evaluate_phone_sizes(
        b.model_dir / FP32_NAME,
        int8_path,
        b.split.evaluation,
        b.entry.preprocess,
        b.options.max_top1_drop,
        gate_applicable,
        images=b.options.phone_size_images,
        cache=photo_size.default_cache(),
    )


def _evaluation_info(b: Build, result: evaluate.Evaluation) -> EvaluationInfo:
    cpu = result.int8["cpu"]
    return EvaluationInfo(
        dataset=b.split.dataset,
        images=len(b.split.evaluation),
        small=b.split.small,
        fp32=result.fp32,
        int8=cpu.int8,
        top1_agreement=cpu.top1_agreement,
        max_top1_drop_points=result.max_top1_drop,
        passed=result.passed,
        gate_applicable=result.gate_applicable,
        int8_providers=result.int8,
        images_sha256=data.files_sha256(tuple(e.path for e in b.split.evaluation)),
        latency_ms_batch1=result.latency_ms_batch1,
        int8_file=isa.exact_int8_file(),
        int8_reference=result.reference,
    )


def _log_evaluation(b: Build, result: evaluate.Evaluation) -> None:
    small = " (SMALL evaluation: package photos only)" if b.split.small else ""
    log.info(
        "%s: fp32 top-1 %.2f%% top-5 %.2f%%%s",
        b.entry.name,
        result.fp32.top1,
        result.fp32.top5,
        small,
    )
    served = isa.exact_int8_file()
    log.info("%s: this CPU computes %s exactly: %s", b.entry.name, served, isa.describe(served))
    rows = [(f"{served} {name}", p) for name, p in result.int8.items()]
    rows += [(f"{file} reference", p) for file, p in result.reference.items()]
    for name, p in rows:
        log.info(
            "%s: int8 [%s] top-1 %.2f%% top-5 %.2f%% agreement %.2f%%",
            b.entry.name,
            name,
            p.int8.top1,
            p.int8.top5,
            p.top1_agreement,
        )
    if not result.gate_applicable:
        log.warning("%s: untrained weights: the accuracy gate does not apply", b.entry.name)
    log.info("%s: batch-1 latency ms %s", b.entry.name, result.latency_ms_batch1)


def _manifest(
    b: Build,
    state: BuildState,
    export_info: ExportInfo,
    quantization: QuantizationInfo,
    evaluation: EvaluationInfo,
) -> Manifest:
    spec = b.entry.preprocess
    return Manifest(
        model=state.model,
        input=InputSpec(
            name=export.INPUT_NAME,
            shape=("batch", spec.crop_size, spec.crop_size, 3),
            dtype="uint8",
            layout="NHWC",
            resize_size=spec.resize_size,
            crop_size=spec.crop_size,
            interpolation="bilinear",
            mean=b.entry.mean,
            std=b.entry.std,
        ),
        output=OutputSpec(
            name=export.OUTPUT_NAME, num_classes=len(b.entry.class_names()), kind="logits"
        ),
        labels=LABELS_NAME,
        files={
            "fp32": file_entry(b.model_dir, b.model_dir / FP32_NAME),
            **{
                key: file_entry(b.model_dir, b.model_dir / name) for key, name in INT8_NAMES.items()
            },
        },
        export=export_info,
        quantization=quantization,
        evaluation=evaluation,
        versions=library_versions(),
        stage_seconds=state.stage_seconds,
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def library_versions() -> dict[str, str]:
    names = (
        "torch",
        "torchvision",
        "onnx",
        "onnxruntime",
        "onnxruntime-openvino",
        "numpy",
        "pillow",
    )
    versions = {"python": platform.python_version()}
    for name in (*names, "efficientnet-lite-pytorch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


_STAGES = {
    "export": (run_export,),
    "quantize": (run_quantize,),
    "evaluate": (run_evaluate,),
    "all": (run_export, run_quantize, run_evaluate),
}


def run_build(options: BuildOptions) -> Path:
    entry, weights = choose_model(options.model, options.weights)
    b = Build(entry=entry, weights=weights, options=options)
    _ = b.split  # find the data first: a missing data set fails in a second, not after export
    for stage in _STAGES[options.stage]:
        stage(b)
    return b.model_dir
