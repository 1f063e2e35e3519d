"""The data plane, without HTTP: bytes -> decode (thread pool) -> micro-batcher -> ONNX Runtime
(one inference thread) -> top-k. Owns the model's lifecycle and the readiness it reports.

    loading -> warming_up -> ready -> draining -> stopped        (or "failed" from start)

Decoding happens per request, before the queue, so a bad image fails only its own request and
the batcher only ever sees valid pixels. Every call admitted (past the readiness check) is
counted until it is answered, which is what ``drain`` waits for: nothing admitted is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.batcher import Done, MicroBatcher
from service.errors import (
    DeadlineExceeded,
    Draining,
    ImgclsError,
    InferenceFailed,
    InvalidParameter,
    NotReady,
    Overloaded,
)
from service.manifest import (
    Manifest,
    ManifestError,
    load_labels,
    load_manifest,
    verified_model_path,
)
from service.metrics import Metrics
from service.postprocess import Logits, Prediction, top_k
from service.preprocess import Pixels, PreprocessSpec, check_media_type, preprocess
from service.runner import ProviderChoice, Runner, batch_sizes_for, load_runner, warmup_images
from service.settings import Settings

__all__ = [
    "Classification",
    "Classifier",
    "ModelMeta",
    "Prediction",
    "Readiness",
    "Timing",
    "find_model_dir",
]

log = logging.getLogger(__name__)

_FAILED = "failed"  # the state after start() raised


@dataclass(frozen=True, slots=True)
class Timing:
    decode_s: float  # call -> pixels ready (includes waiting for a free decode worker)
    queue_s: float  # enqueued -> its batch started
    inference_s: float  # run time of its batch
    batch_size: int


@dataclass(frozen=True, slots=True)
class Classification:
    predictions: tuple[Prediction, ...]  # best first, len == top_k
    timing: Timing


@dataclass(frozen=True, slots=True)
class ModelMeta:
    name: str
    version: str
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
    manifest: Manifest
    # Additions to the agreed interface, defaulted so that code building a ModelMeta by hand
    # (test doubles) keeps working.
    model_dir: Path | None = None
    provider_reason_code: str = ""  # configured | faster | cpu_faster | disagrees | unavailable


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    # None when ready; else loading | warming_up | draining | stopped | model failed to load |
    # failed: the batcher stopped. Fixed strings: an exception's text is for the log only.
    reason: str | None
    details: dict[str, object]  # JSON-able


@dataclass(frozen=True, slots=True)
class _Model:
    """What start() produces; present only once the model is warmed."""

    meta: ModelMeta
    labels: list[str]
    spec: PreprocessSpec
    batcher: MicroBatcher[Pixels, Logits]
    pool: ThreadPoolExecutor


class Classifier:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._state = "loading"
        self._model: _Model | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.ready.set(0)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Manifest, sha256, session, warm-up, batcher; only then ready. Raises ManifestError or
        RuntimeError (ONNX Runtime's), after which readiness says "model failed to load". The
        exception is not logged here: the caller logs it, once, with its traceback (the app's
        start task does); readiness and error bodies never carry its text."""
        try:
            self._model = await self._load()
        except Exception:
            self._state = _FAILED
            raise
        if self._state == "stopped":  # stop() ran while we loaded: it could not stop this model
            await self._close(self._model)
            return
        self._publish(self._model.meta)
        if self._state == "warming_up":  # not when a SIGTERM began draining meanwhile
            self._state = "ready"
            self._metrics.ready.set(1)
        log.info("loaded: %s; state %s", _describe(self._model.meta), self._state)

    async def _load(self) -> _Model:
        s = self._settings
        model_dir = s.model_dir or find_model_dir(s.artifacts_dir, s.precision)
        manifest = load_manifest(model_dir)
        # Hashing and session creation take a while: off the loop, so liveness keeps answering.
        model_path = await asyncio.to_thread(verified_model_path, model_dir, manifest, s.precision)
        labels = load_labels(model_dir, manifest)
        if self._state == "loading":
            self._state = "warming_up"
        runner, choice = await asyncio.to_thread(self._warm_runner, model_path, manifest)
        meta = self._meta(manifest, model_dir, runner, choice)
        batcher = self._batcher(runner)
        batcher.start()
        spec = PreprocessSpec(manifest.input.resize_size, manifest.input.crop_size)
        pool = ThreadPoolExecutor(meta.decode_workers, thread_name_prefix="imgcls-decode")
        return _Model(meta, labels, spec, batcher, pool)

    def _warm_runner(self, model_path: Path, manifest: Manifest) -> tuple[Runner, ProviderChoice]:
        size = manifest.input.crop_size
        return load_runner(
            model_path,
            self._settings.provider,
            self._settings.intra_op_threads,
            warmup_images(size, size),
            batch_sizes_for(self._settings.max_batch_size),
        )

    def _batcher(self, runner: Runner) -> MicroBatcher[Pixels, Logits]:
        s = self._settings
        largest = max(runner.warmup_latency_s)

        def run_batch(images: list[Pixels]) -> list[Logits]:
            return list(runner.run(np.stack(images)))

        return MicroBatcher(
            run_batch,
            max_batch_size=s.max_batch_size,
            max_wait_s=s.max_batch_wait_s,
            capacity=s.queue_capacity,
            metrics=self._metrics,
            # Until real batches are measured, assume warm-up speed at the largest batch.
            initial_rate_per_s=largest / runner.warmup_latency_s[largest],
            batch_sizes=sorted(runner.warmup_latency_s),
        )

    def _meta(
        self, manifest: Manifest, model_dir: Path, runner: Runner, choice: ProviderChoice
    ) -> ModelMeta:
        s = self._settings
        size = manifest.input.crop_size
        return ModelMeta(
            name=manifest.model.name,
            version=manifest.model.version,
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
            model_dir=model_dir,
            provider_reason_code=choice.code,
        )

    def _publish(self, meta: ModelMeta) -> None:
        m = self._metrics
        for size, seconds in meta.warmup_latency_s.items():
            m.warmup_latency.labels(batch_size=str(size)).set(seconds)
        m.provider_selected.labels(provider=meta.provider, reason=meta.provider_reason_code).set(1)
        m.model_info.info(
            {
                "name": meta.name,
                "version": meta.version,
                "untrained": str(meta.untrained).lower(),
                "precision": meta.precision,
                "provider": meta.provider,
                "intra_op_threads": str(meta.intra_op_threads),
                "decode_workers": str(meta.decode_workers),
                "max_batch_size": str(meta.max_batch_size),
            }
        )

    def begin_drain(self) -> None:
        """At once: readiness turns 503 "draining" and new calls are refused. Calls already
        admitted carry on (see drain)."""
        if self._state in ("ready", "loading", "warming_up"):
            self._state = "draining"
        self._metrics.ready.set(0)
        log.info("draining: %d requests in flight", self._inflight)

    async def drain(self, timeout_s: float) -> None:
        """Wait until every admitted call has been answered, or ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            log.warning("drain timed out after %.1f s with %d in flight", timeout_s, self._inflight)

    async def stop(self) -> None:
        """Stop the batcher (what is still queued fails with Draining), join the inference
        thread, shut the decode pool. Idempotent."""
        self.begin_drain()
        self._state = "stopped"
        if self._model is not None:
            await self._close(self._model)

    @staticmethod
    async def _close(model: _Model) -> None:
        await model.batcher.stop()
        await asyncio.to_thread(model.pool.shutdown, wait=True, cancel_futures=True)

    # -- state -------------------------------------------------------------------------------

    @property
    def meta(self) -> ModelMeta:
        if self._model is None:
            raise NotReady(f"the model is not loaded ({self._state})", retry_after_s=1)
        return self._model.meta

    def readiness(self) -> Readiness:
        model = self._model
        reason: str | None = None if self._state == "ready" else self._state
        if reason == _FAILED:
            reason = "model failed to load"
        if reason is None and model is not None and not model.batcher.alive:
            reason = "failed: the batcher stopped"  # never expected; readiness must not lie
        details: dict[str, object] = {"state": self._state, "in_flight": self._inflight}
        if model is not None:
            details |= {
                "model": model.meta.name,
                "version": model.meta.version,
                "untrained": model.meta.untrained,
                "precision": model.meta.precision,
                "provider": model.meta.provider,
                "queue_depth": model.batcher.depth,
            }
        return Readiness(ready=reason is None, reason=reason, details=details)

    # -- requests ----------------------------------------------------------------------------

    async def classify(
        self, data: bytes, *, top_k: int, content_type: str | None = None
    ) -> Classification:
        """One image's top-k. Raises only ImgclsError subclasses (see service.errors). If the
        calling task is cancelled (client gone), its image is dropped before it runs."""
        started = time.monotonic()
        model = self._admit()
        if not 1 <= top_k <= model.meta.num_classes:
            raise InvalidParameter(f"top_k must be in 1..{model.meta.num_classes}, got {top_k}")
        check_media_type(content_type)
        self._inflight += 1
        self._idle.clear()
        try:
            return await self._classify(model, data, top_k, started)
        except ImgclsError:
            raise
        except Exception as exc:  # the contract: callers only ever see ImgclsError
            log.exception("unexpected error while classifying")
            raise InferenceFailed("internal error while classifying") from exc
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    def _admit(self) -> _Model:
        if self._state == "draining" or self._state == "stopped":
            raise Draining("the server is shutting down", retry_after_s=1)
        if self._state != "ready" or self._model is None:
            raise NotReady(f"the model is not ready ({self._state})", retry_after_s=1)
        model = self._model
        # Refuse at the door, before decoding: queue_capacity bounds every image admitted
        # (decoding, queued or running), so an admitted image always finds room in the queue.
        limit = self._settings.queue_capacity
        if self._inflight >= limit:
            raise Overloaded(
                f"{self._inflight} images in flight, the limit is {limit}",
                retry_after_s=model.batcher.drain_rate.retry_after_s(self._inflight),
            )
        return model

    async def _classify(self, model: _Model, data: bytes, k: int, started: float) -> Classification:
        deadline = started + self._settings.request_timeout_s
        pixels = await self._decode(model, data, deadline)
        decoded = time.monotonic()
        done: Done[Logits] = await model.batcher.submit(pixels, deadline)
        predictions = top_k(done.output, k, model.labels)
        timing = Timing(decoded - started, done.queue_s, done.inference_s, done.batch_size)
        return Classification(predictions, timing)

    async def _decode(self, model: _Model, data: bytes, deadline: float) -> Pixels:
        loop = asyncio.get_running_loop()
        try:
            work = loop.run_in_executor(model.pool, self._preprocess, model.spec, data)
        except RuntimeError:  # the pool is shut: stop() ran after this call was admitted
            raise Draining("the server stopped before this image was decoded") from None
        try:
            # asyncio.timeout, not wait_for, which on 3.11 can swallow a client's cancellation
            async with asyncio.timeout(deadline - time.monotonic()):
                return await work
        except TimeoutError:
            raise DeadlineExceeded("the request timed out while its image was decoded") from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller went away: let the cancellation through
            # Not us: stop() cancelled the decode still waiting for a worker. Answer it.
            raise Draining("the server stopped before this image was decoded") from None

    def _preprocess(self, spec: PreprocessSpec, data: bytes) -> Pixels:
        """In a decode worker: the shared preprocessing, timed for the metric."""
        start = time.perf_counter()
        try:
            return preprocess(data, spec, self._settings.max_image_pixels)
        finally:
            self._metrics.decode_duration.observe(time.perf_counter() - start)


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


def _describe(meta: ModelMeta) -> str:
    latencies = ", ".join(f"{n}: {s * 1e3:.1f} ms" for n, s in meta.warmup_latency_s.items())
    return (
        f"{meta.name} {meta.version} {meta.precision}"
        f"{' (UNTRAINED: random weights)' if meta.untrained else ''} on {meta.provider}, "
        f"{meta.intra_op_threads} intra-op threads, {meta.decode_workers} decode workers, "
        f"warm-up latency by batch size {{{latencies}}}"
    )
