"""model_artifacts/<model>/manifest.json: the contract between build/ (writer) and the service
(reader). Everything a server or an auditor needs to know about a model lives here, and the
service refuses a model file whose sha256 does not match it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
# File keys: "int8" has full-range weights, "int8_w7" 7-bit ones for x86 CPUs without VNNI,
# whose u8s8 kernels would saturate (service/model/int8_weights.py); "int8" serving picks one per
# machine.
FileKey = Literal["fp32", "int8", "int8_w7"]


class ManifestError(Exception):
    """The manifest is missing, malformed, or does not match the files beside it."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class ModelInfo(_Frozen):
    name: str  # the config's name (build/models/*.toml or the user's model.toml)
    version: str  # config version + weights digest prefix, e.g. "1.0-f37072fd"
    architecture: str  # "torchvision.models.resnet18", "onnx:model.onnx (opset 17 ...)"
    # "torchvision:ResNet18_Weights.IMAGENET1K_V1", "file:/path", "pypi:...", "random", "onnx"
    weights_source: str
    weights_sha256: str | None  # of the state dict, or of the ONNX file
    untrained: bool
    description: str = ""
    config_sha256: str | None = None  # of the model.toml it was built from


class InputSpec(_Frozen):
    """What the graph takes. Normalisation is folded into the graph, so the service feeds the
    resized, cropped RGB pixels as uint8 and never does float maths per request."""

    name: str
    shape: tuple[int | str, int, int, int]  # ("batch", H, W, 3)
    dtype: Literal["uint8"]
    layout: Literal["NHWC"]
    resize_size: int  # shorter side is resized to this ...
    crop_size: int  # ... then the centre crop_size x crop_size is taken
    interpolation: Literal["bilinear"]
    mean: tuple[float, float, float]  # on the 0..1 scale, applied inside the graph
    std: tuple[float, float, float]


class OutputSpec(_Frozen):
    name: str
    num_classes: int
    kind: Literal["logits"]


class FileEntry(_Frozen):
    path: str  # relative to the model directory
    sha256: str
    bytes: int


class ExportInfo(_Frozen):
    exporter: str  # torch's exporter, or "onnx: wrapped with the uint8 NHWC front"
    opset: int
    dynamic_batch: bool
    max_abs_logit_diff: float  # torch (or the user's ONNX) vs the built fp32 graph, real images
    diff_images: int


class SearchStep(_Frozen):
    """One recipe the search measured (int8 on the CPU provider, the served file) or skipped."""

    stage: Literal["configured", "calibration", "float layers", "bf16"]
    label: str  # "percentile(99.999)", "+ 3 in float: /layer/Conv", "bf16 (OpenVINO)"
    top1: float | None = None  # percent, evaluation split
    top1_drop: float | None = None  # points below fp32
    top1_agreement: float | None = None  # percent
    latency_ms_batch1: float | None = None  # median, CPU provider
    meets_gate: bool = False
    skipped: str | None = None  # why it was not measured


class RecipeSearch(_Frozen):
    """build/recipe_search.py: tried when the configured recipe misses the gate or the target
    agreement; what it tried, what each step cost, and what it chose."""

    ran: bool
    reason: str
    target_top1_agreement: float
    fp32_latency_ms_batch1: float | None = None
    steps: tuple[SearchStep, ...] = ()
    chosen: str  # a step's label
    nodes_ranked: tuple[tuple[str, float], ...] = ()  # most sensitive first: logit-MSE gain


class QuantizationInfo(_Frozen):
    format: Literal["QDQ"]
    per_channel: bool
    activation_type: str  # QUInt8
    weight_type: str  # QInt8
    calibration_method: str
    calibration_images: int
    calibration_sha256: str  # over the sorted sha256s of the calibration files
    calibration_source: str
    nodes_excluded: tuple[str, ...] = ()
    search: RecipeSearch | None = None


class Accuracy(_Frozen):
    top1: float  # percent
    top5: float


class ClassAccuracy(_Frozen):
    images: int  # in the evaluation split
    fp32_top1: float  # percent
    int8_top1: float  # the served int8 file on the CPU provider


class ClassData(_Frozen):
    files: int
    calibration: int
    evaluation: int
    unreadable: int


class DataInfo(_Frozen):
    """The user's images: where, how split, and a digest that changes with any image or name."""

    root: str
    seed: int
    sha256: str  # over every file's class-relative path and sha256
    classes: dict[str, ClassData]
    unreadable: tuple[str, ...] = ()  # skipped, with the reason


class ProviderEvaluation(_Frozen):
    """The int8 model as one execution provider runs it: providers compile QDQ differently."""

    int8: Accuracy
    top1_agreement: float  # percent, against fp32 on the CPU provider
    passed: bool


class PhoneSizeProvider(_Frozen):
    """The served int8 file on one provider, on the evaluation images at one phone size."""

    int8: Accuracy  # through the service's preprocessing, JPEG draft included
    int8_full_decode: Accuracy  # the same images with every pixel decoded
    draft_agreement: float  # percent of top-1 answers the same with and without the draft
    top1_drop_points: float  # the fp32 full decode's top-1 minus int8's served top-1
    passed: bool


class PhoneSizeEvaluation(_Frozen):
    """The evaluation images made phone-size (build/phone_photos.py: upscaled, seeded grain,
    JPEG quality 90) and classified as the service does (build/photo_size.py). The reference
    is fp32 with every pixel decoded; the gate, int8's served top-1 against it."""

    example_size: str  # e.g. "4032x3024" for a 4:3 image
    pixels: int
    images: int
    draft_margin: float | None  # the served JPEG draft policy (None: no draft)
    fp32_full_decode: Accuracy
    fp32: Accuracy  # served path
    fp32_draft_agreement: float
    int8_providers: dict[str, PhoneSizeProvider]
    passed: bool


class PredictionBaseline(_Frozen):
    """What the served int8 file predicts on the evaluation images (CPU provider): the
    reference the service's prediction monitoring compares live answers against
    (build/baseline.py writes it; service/observability/predictions.py exports it)."""

    images: int
    model_file: str  # the int8 file measured: "int8" or "int8_w7"
    mean_confidence: float  # mean top-1 softmax probability, 0..1
    # Predicted top-1 class index -> images; a class never predicted is absent (0).
    class_counts: dict[int, int]


class EvaluationInfo(_Frozen):
    dataset: str
    images: int
    small: bool  # True when the labeled set was unavailable and shipped photos were used
    fp32: Accuracy
    int8: Accuracy
    top1_agreement: float  # percent of images where fp32 and int8 agree on top-1
    max_top1_drop_points: float  # the gate
    passed: bool
    # False for untrained weights: accuracy is chance either way, only agreement means anything.
    gate_applicable: bool = True
    int8_providers: dict[str, ProviderEvaluation] = Field(default_factory=dict)  # "cpu", ...
    images_sha256: str | None = None  # over the sorted sha256s of the evaluation files
    latency_ms_batch1: dict[str, float] = Field(default_factory=dict)  # "cpu/int8": median ms
    # The int8 file int8_providers were measured on: the one the build machine's CPU computes
    # exactly (service/model/int8_weights.py).
    int8_file: str = "int8"
    # Every other int8 file, computed exactly by ONNX Runtime's unfused reference execution
    # (QDQ nodes + float kernels, no saturating int8 kernel): what a CPU of the other kind runs.
    int8_reference: dict[str, ProviderEvaluation] = Field(default_factory=dict)
    per_class: dict[str, ClassAccuracy] = Field(default_factory=dict)  # class folders only
    min_top1_agreement: float | None = None  # the optional second gate
    # None in a manifest built before it existed: the service then exports no baseline.
    prediction_baseline: PredictionBaseline | None = None
    # The served path on phone-size photos ("12mp", "3mp"); empty when not evaluated.
    phone_sizes: dict[str, PhoneSizeEvaluation] = Field(default_factory=dict)


class Manifest(_Frozen):
    schema_version: int = SCHEMA_VERSION
    model: ModelInfo
    input: InputSpec
    output: OutputSpec
    labels: str = "labels.txt"
    labels_sha256: str | None = None
    files: dict[FileKey, FileEntry]
    export: ExportInfo
    quantization: QuantizationInfo
    evaluation: EvaluationInfo | None
    data: DataInfo | None = None  # class-folder data; None for the named datasets
    versions: dict[str, str]
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    built_at: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(model_dir: Path, path: Path) -> FileEntry:
    return FileEntry(
        path=str(path.relative_to(model_dir)), sha256=sha256_file(path), bytes=path.stat().st_size
    )


def write_manifest(model_dir: Path, manifest: Manifest) -> Path:
    target = model_dir / MANIFEST_NAME
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    tmp.replace(target)  # atomic: a reader never sees half a manifest
    return target


def load_manifest(model_dir: Path) -> Manifest:
    path = model_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError(f"no {MANIFEST_NAME} in {model_dir}: build the model first") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(
            f"{path}: schema_version {raw.get('schema_version')!r}, expected {SCHEMA_VERSION}"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"{path} does not match the manifest schema: {exc}") from exc


def verified_model_path(model_dir: Path, manifest: Manifest, precision: FileKey) -> Path:
    """The model file for ``precision``, after checking its size and sha256 against the manifest."""
    entry = manifest.files.get(precision)
    if entry is None:
        raise ManifestError(f"manifest lists no {precision} model")
    path = model_dir / entry.path
    if not path.is_file():
        raise ManifestError(f"{path} is missing")
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise ManifestError(
            f"{path}: sha256 {actual[:12]}... does not match the manifest's {entry.sha256[:12]}..."
        )
    return path


def load_labels(model_dir: Path, manifest: Manifest) -> list[str]:
    labels = (model_dir / manifest.labels).read_text().splitlines()
    if len(labels) != manifest.output.num_classes:
        raise ManifestError(
            f"{manifest.labels} has {len(labels)} labels, the model outputs "
            f"{manifest.output.num_classes} classes"
        )
    return labels
