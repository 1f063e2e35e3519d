"""Loading a built model: find its directory, read its manifest, check the model file's sha256,
choose the execution provider, open and warm the ONNX Runtime session. What comes back is
everything the data plane needs (LoadedModel) and what the API says about it (ModelMeta), so
nothing downstream reads the raw manifest."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from service.inference.preprocess import PreprocessSpec
from service.model import int8_weights as isa
from service.model.inference_streams import (
    StreamsChoice,
    choose_streams,
    decode_cpu_s,
    inference_cpu_s,
    sample_upload,
)
from service.model.manifest import (
    FileKey,
    Manifest,
    ManifestError,
    load_labels,
    load_manifest,
    verified_model_path,
)
from service.model.providers import SHORT_NAMES
from service.model.runner import (
    Batch,
    ProviderChoice,
    Runner,
    StreamsPolicy,
    batch_sizes_for,
    load_runner,
    tile,
    warmup_images,
)
from service.model.versions import Version
from service.observability.metrics import Metrics
from service.process import lower_thread_priority
from service.settings import Settings

__all__ = [
    "LoadedModel",
    "ModelMeta",
    "describe",
    "find_model_dir",
    "load_model",
    "model_root",
    "publish",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelMeta:
    name: str
    version: str  # the version's name (service/model/versions.py): every answer carries it
    untrained: bool
    precision: str
    provider: str  # "CPUExecutionProvider" | "OpenVINOExecutionProvider"
    provider_reason: str  # a sentence: why this provider
    intra_op_threads: int
    decode_workers: int
    max_batch_size: int
    num_classes: int
    input_shape: tuple[int, int, int]  # (224, 224, 3)
    warmup_latency_s: dict[int, float]  # batch size -> median seconds
    # For the protocol layers that must describe the model's tensors (service.oip); /v1 reads
    # only the fields above and served_top1.
    manifest: Manifest
    model_dir: Path
    provider_reason_code: str  # configured | faster | cpu_faster | disagrees | unavailable
    served_top1: float | None  # build-time top-1 of what serves; None: not evaluated
    model_file: str  # the manifest's file key: int8, int8_w7 (model/int8_weights.py) or fp32
    inference_streams: int  # batches side by side (model/inference_streams.py)
    inference_streams_reason: str


@dataclass(frozen=True, slots=True)
class LoadedModel:
    meta: ModelMeta
    labels: list[str]
    spec: PreprocessSpec
    runner: Runner  # warmed: runner.warmup_latency_s holds every batch size it may run


def model_root(settings: Settings) -> Path:
    """The folder whose versions serve (service/model/versions.py): IMGCLS_MODEL_DIR, else the
    best built model under IMGCLS_ARTIFACTS_DIR."""
    return settings.model_dir or find_model_dir(settings.artifacts_dir, settings.precision)


async def load_model(
    settings: Settings, version: Version, *, warming_up: Callable[[], None] = lambda: None
) -> LoadedModel:
    """Manifest, sha256, session, provider choice, warm-up of one version. ``warming_up`` is
    called once the file is verified, as the session starts to build (readiness reports the
    phase). Raises ManifestError, or ONNX Runtime's RuntimeError."""
    s = settings
    model_dir = version.path
    manifest = load_manifest(model_dir)
    file = model_file(s.precision, manifest)
    # Hashing and session creation take a while: off the loop, so liveness keeps answering.
    model_path = await asyncio.to_thread(verified_model_path, model_dir, manifest, file)
    labels = load_labels(model_dir, manifest)
    warming_up()
    # In a thread of the workers' priority: ONNX Runtime's intra-op threads, created with the
    # session, inherit it (service/process.py).
    with ThreadPoolExecutor(
        1, "imgcls-load", partial(lower_thread_priority, s.worker_nice)
    ) as pool:
        loop = asyncio.get_running_loop()
        runner, choice = await loop.run_in_executor(pool, _warm_runner, s, model_path, manifest)
    spec = preprocess_spec(s, manifest)
    meta = _meta(s, manifest, version, runner, choice, file)
    return LoadedModel(meta, labels, spec, runner)


def preprocess_spec(settings: Settings, manifest: Manifest) -> PreprocessSpec:
    """The manifest's resize and crop, and the JPEG draft the settings ask for (0: none)."""
    margin = settings.jpeg_draft_margin or None
    return PreprocessSpec(manifest.input.resize_size, manifest.input.crop_size, margin)


def model_file(precision: str, manifest: Manifest) -> FileKey:
    """The manifest's file for ``precision`` on this CPU: for int8, the weights it computes
    exactly (service/model/int8_weights.py). A model built before the 7-bit file existed serves its
    one int8
    file, with a warning where this CPU saturates it."""
    if precision == "fp32":
        return "fp32"
    exact = isa.exact_int8_file()
    if exact in manifest.files:
        log.info("int8 file %s: %s", exact, isa.describe(exact))
        return exact
    log.warning(
        "this CPU computes only %s exactly (%s), but the manifest lists no such file: serving "
        "int8, whose accuracy may be lower here; rebuild the model",
        exact,
        isa.describe(exact),
    )
    return "int8"


def _warm_runner(
    settings: Settings, model_path: Path, manifest: Manifest
) -> tuple[Runner, ProviderChoice]:
    size = manifest.input.crop_size
    images = warmup_images(size, size)
    spec = preprocess_spec(settings, manifest)
    return load_runner(
        model_path,
        settings.provider,
        settings.intra_op_threads,
        images,
        batch_sizes_for(settings.max_batch_size),
        _streams_policy(settings, spec, images),
    )


def _streams_policy(settings: Settings, spec: PreprocessSpec, images: Batch) -> StreamsPolicy:
    """The streams as set, or measured on the chosen runner at the largest batch against
    the decoding of a typical upload (service/model/inference_streams.py)."""
    largest = settings.max_batch_size

    def policy(runner: Runner) -> StreamsChoice:
        batch = tile(images, largest)
        return choose_streams(
            settings.inference_streams,
            settings.intra_op_threads,
            lambda: inference_cpu_s(lambda: runner.run(batch), largest),
            lambda: decode_cpu_s(sample_upload(images), spec),
        )

    return policy


def _meta(
    s: Settings,
    manifest: Manifest,
    version: Version,
    runner: Runner,
    choice: ProviderChoice,
    file: FileKey,
) -> ModelMeta:
    size = manifest.input.crop_size
    return ModelMeta(
        name=manifest.model.name,
        version=version.name,
        untrained=manifest.model.untrained,
        precision=s.precision,
        provider=choice.provider,
        provider_reason=choice.reason,
        intra_op_threads=s.intra_op_threads,
        decode_workers=s.decode_workers,
        max_batch_size=s.max_batch_size,
        num_classes=manifest.output.num_classes,
        input_shape=(size, size, 3),
        warmup_latency_s=dict(runner.warmup_latency_s),
        manifest=manifest,
        model_dir=version.path,
        provider_reason_code=choice.code,
        served_top1=_served_top1(manifest, file, choice.provider),
        model_file=file,
        inference_streams=runner.streams.streams,
        inference_streams_reason=runner.streams.reason,
    )


def _served_top1(manifest: Manifest, file: FileKey, provider: str) -> float | None:
    """Build-time top-1 of the file and provider that actually serve: providers compile QDQ
    graphs differently, so the CPU provider's figure may not be the one a caller gets; an int8
    file the build machine could not run exactly has its reference figure."""
    evaluation = manifest.evaluation
    if evaluation is None:
        return None
    if file == "fp32":
        return evaluation.fp32.top1
    if file != evaluation.int8_file and file in evaluation.int8_reference:
        return evaluation.int8_reference[file].int8.top1
    served = evaluation.int8_providers.get(SHORT_NAMES.get(provider, ""))
    return served.int8.top1 if served is not None else evaluation.int8.top1


def publish(metrics: Metrics, meta: ModelMeta) -> None:
    """What was loaded, as metrics: warm-up latency by batch size, the provider and why, and an
    info series carrying the model's identity."""
    metrics.warmup_latency.clear()  # a swapped-in version may warm other sizes
    for size, seconds in meta.warmup_latency_s.items():
        metrics.warmup_latency.labels(batch_size=str(size)).set(seconds)
    metrics.provider_selected.clear()  # one series: the provider serving now
    metrics.provider_selected.labels(provider=meta.provider, reason=meta.provider_reason_code).set(
        1
    )
    metrics.model_info.info(
        {
            "name": meta.name,
            "version": meta.version,
            "build": meta.manifest.model.version,
            "num_classes": str(meta.num_classes),
            "architecture": meta.manifest.model.architecture,
            "labels_sha256": meta.manifest.labels_sha256 or "",
            "untrained": str(meta.untrained).lower(),
            "precision": meta.precision,
            "file": meta.model_file,
            "provider": meta.provider,
            "intra_op_threads": str(meta.intra_op_threads),
            "decode_workers": str(meta.decode_workers),
            "inference_streams": str(meta.inference_streams),
            "max_batch_size": str(meta.max_batch_size),
        }
    )


def describe(meta: ModelMeta) -> str:
    """One log line's worth: what serves, where, and how fast it warmed."""
    latencies = ", ".join(f"{n}: {s * 1e3:.1f} ms" for n, s in meta.warmup_latency_s.items())
    return (
        f"{meta.name} {meta.version} {meta.precision} ({meta.model_file})"
        f"{' (UNTRAINED: random weights)' if meta.untrained else ''} on {meta.provider}, "
        f"{meta.intra_op_threads} intra-op threads, {meta.decode_workers} decode workers, "
        f"{meta.inference_streams} inference streams ({meta.inference_streams_reason}), "
        f"warm-up latency by batch size {{{latencies}}}"
    )


def find_model_dir(artifacts_dir: Path, precision: str = "int8") -> Path:
    """The best built model under ``artifacts_dir``: trained before untrained, then resnet18
    before efficientnet_lite0, then by name. Directories whose manifest does not load, or that
    lack the precision asked for, are skipped with a log line."""
    candidates: list[tuple[tuple[bool, bool, str], Path]] = []
    for manifest_path in sorted(artifacts_dir.glob("*/manifest.json")):
        model_dir = manifest_path.parent
        try:
            manifest = load_manifest(model_dir)
        except ManifestError as exc:
            log.warning("skipping %s: %s", model_dir, exc)
            continue
        if precision not in manifest.files:
            log.warning("skipping %s: no %s model", model_dir, precision)
            continue
        name = manifest.model.name
        candidates.append(((manifest.model.untrained, name != "resnet18", name), model_dir))
    if not candidates:
        raise ManifestError(f"no built model under {artifacts_dir}: run `make model` first")
    return min(candidates)[1]
