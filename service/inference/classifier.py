"""The data plane, without HTTP: bytes -> decode (thread pool) -> micro-batcher -> ONNX Runtime
(one inference thread) -> top-k. The Classifier composes the parts, each with one home:

    service.limits.lifecycle  states, readiness, admission and in-flight count, drain
    service.model.loading    manifest, sha256, provider choice, warm-up; ModelMeta; model metrics
    service.inference.batcher    the queue and the inference thread
    service.inference.response_cache  scores by image and model (IMGCLS_CACHE_BYTES > 0)
    service.observability.predictions  what every answer predicted, against the baseline
    _DecodePool        (below) decoding, within the deadline, answered even when stop() cuts in

Decoding happens per request, before the queue, so a bad image fails only its own request and
the batcher only ever sees valid pixels. Every call admitted is counted until it is answered,
which is what ``drain`` waits for: nothing admitted is lost. A cache hit is admitted like any
call (its place was held by its ticket once its body arrived) and held for
microseconds: it counts in flight and in the drain, never in the batch queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np

from service.errors import (
    DeadlineExceeded,
    Draining,
    ImgclsError,
    InferenceFailed,
    InvalidParameter,
    NotReady,
)
from service.inference.batcher import Done, MicroBatcher
from service.inference.postprocess import Logits, Prediction, top_k
from service.inference.preprocess import Pixels, PreprocessSpec, check_media_type, preprocess
from service.inference.response_cache import CacheKeys, Compute, ResponseCache, Scored
from service.limits.admission import Ticket
from service.limits.lifecycle import Lifecycle, Readiness, State
from service.limits.pixel_budget import PixelBudget
from service.limits.saturation import export_saturation, timed_admission
from service.model.loading import (
    LoadedModel,
    ModelMeta,
    describe,
    load_model,
    publish,
)
from service.model.runner import Runner
from service.observability.metrics import Metrics
from service.observability.predictions import PredictionMonitor
from service.observability.timing import Timing
from service.process import freeze_startup_objects, lower_thread_priority
from service.settings import Settings

__all__ = ["Classification", "Classifier", "Scores"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Classification:
    predictions: tuple[Prediction, ...]  # best first, len == top_k
    timing: Timing


@dataclass(frozen=True, slots=True)
class Scores:
    """One image's logits, for callers that want more than the top-k (the v2 protocol)."""

    logits: Logits  # float32 [num_classes]; read-only when shared through the response cache
    timing: Timing


class Classifier:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._lifecycle = Lifecycle(metrics, capacity=settings.queue_capacity)
        self._serving: _Serving | None = None  # set once the model is loaded and warmed
        # Lives across models: a swap calls flush(); its keys carry the model's identity.
        self._cache = _response_cache(settings, metrics)
        export_saturation(metrics, self._lifecycle, settings.queue_capacity)

    async def start(self) -> None:
        """Load (service.model.loading), start the batcher and decode pool; only then ready. Raises
        ManifestError or RuntimeError (ONNX Runtime's), after which readiness says "model failed
        to load". Not logged here: the caller logs it once, with its traceback (the app's start
        task does); readiness and error bodies never carry its text."""
        try:
            loaded = await load_model(self._settings, warming_up=self._lifecycle.warming_up)
            self._serving = serving = self._serve(loaded)
        except Exception:
            self._lifecycle.failed()
            raise
        if self._lifecycle.state is State.STOPPED:  # stop() ran while we loaded: close it here
            await serving.close()
            return
        publish(self._metrics, loaded.meta)
        freeze_startup_objects()  # before readiness: no full collection walks them under load
        self._lifecycle.ready(serving.batcher.drain_rate.retry_after_s)  # unless now draining
        log.info("loaded: %s; state %s", describe(loaded.meta), self._lifecycle.state.value)

    def _serve(self, loaded: LoadedModel) -> _Serving:
        batcher = self._batcher(loaded.runner)
        batcher.start()
        decoder = _DecodePool(loaded.spec, self._settings, self._metrics)
        keys = CacheKeys.of_model(_served_sha256(loaded.meta), loaded.meta.provider, loaded.spec)
        monitor = _monitor(loaded, self._settings, self._metrics)
        return _Serving(loaded, batcher, decoder, keys, monitor)

    def _batcher(self, runner: Runner) -> MicroBatcher[Pixels, Logits]:
        s = self._settings
        largest = max(runner.warmup_latency_s)

        def run_batch(images: list[Pixels], alone: bool) -> list[Logits]:
            return list(runner.run(np.stack(images), alone))

        return MicroBatcher(
            run_batch,
            max_batch_size=s.max_batch_size,
            max_wait_s=s.max_batch_wait_s,
            capacity=s.queue_capacity,
            metrics=self._metrics,
            # Until real batches are measured, assume warm-up speed at the largest batch.
            initial_rate_per_s=largest / runner.warmup_latency_s[largest],
            batch_sizes=sorted(runner.warmup_latency_s),
            thread_initializer=partial(lower_thread_priority, s.worker_nice),
            streams=runner.streams.streams,
        )

    def begin_drain(self) -> None:
        self._lifecycle.begin_drain()

    async def drain(self, timeout_s: float) -> None:
        await self._lifecycle.drain(timeout_s)

    async def stop(self) -> None:
        """Stop the batcher (what is still queued fails with Draining), join the inference
        thread, shut the decode pool. Idempotent."""
        self._lifecycle.stop()
        if self._serving is not None:
            await self._serving.close()

    @property
    def meta(self) -> ModelMeta:
        return self._loaded().meta

    @property
    def labels(self) -> Sequence[str]:
        return self._loaded().labels

    def _loaded(self) -> LoadedModel:
        if self._serving is None:
            state = self._lifecycle.state.value
            raise NotReady(f"the model is not loaded ({state})", retry_after_s=1)
        return self._serving.loaded

    def check_admission(self) -> None:
        """Refuse now (Draining, NotReady, Overloaded) if a call would be refused: for callers
        that can avoid work before calling, such as reading an upload."""
        self._lifecycle.check_admission()

    def ticket(self) -> Ticket:
        """A claim to a place for a request the HTTP protocol lets in (Lifecycle.ticket)."""
        return self._lifecycle.ticket()

    def readiness(self) -> Readiness:
        life, serving = self._lifecycle, self._serving
        details: dict[str, object] = {"state": life.state.value, "in_flight": life.in_flight}
        if serving is None:
            return life.readiness(details)
        meta = serving.loaded.meta
        details |= {
            "model": meta.name,
            "version": meta.version,
            "untrained": meta.untrained,
            "precision": meta.precision,
            "provider": meta.provider,
            "queue_depth": serving.batcher.depth,
        }
        return life.readiness(details, fault=self._fault(serving))

    def liveness(self) -> str | None:
        """Why this process should be restarted, or None. Only a fault a restart cures: a
        loading, busy or draining process is alive (restarting it would only lose work)."""
        return None if self._serving is None else self._fault(self._serving)

    def _fault(self, serving: _Serving) -> str | None:
        return serving.batcher.fault(self._settings.inference_stall_s)

    async def classify(
        self, data: bytes, *, top_k: int, content_type: str | None = None
    ) -> Classification:
        """One image's top-k. Raises only ImgclsError subclasses (see service.errors). If the
        calling task is cancelled (client gone), its image is dropped before it runs."""
        started = time.monotonic()
        with self._admit():
            serving = self._admitted()
            num_classes = serving.loaded.meta.num_classes
            if not 1 <= top_k <= num_classes:
                raise InvalidParameter(f"top_k must be in 1..{num_classes}, got {top_k}")
            check_media_type(content_type)
            return await _answered(self._classify(serving, data, top_k, started))

    async def logits(self, data: bytes, *, timeout_s: float | None = None) -> Scores:
        """One encoded image's logits: classify() without the top-k, the same admission,
        decoding, batching and cancellation; ``timeout_s`` may shorten the request timeout."""
        started = time.monotonic()
        with self._admit():
            deadline = self._deadline(started, timeout_s)
            return await _answered(self._scores(self._admitted(), data, deadline, started))

    async def logits_of_pixels(self, pixels: Pixels, *, timeout_s: float | None = None) -> Scores:
        """Pixels the caller decoded (uint8 [H, W, 3] of the model's input size): no decoding,
        straight to the batcher, with the same admission, deadline and cancellation."""
        started = time.monotonic()
        with self._admit():
            serving = self._admitted()
            shape = serving.loaded.meta.input_shape
            if pixels.shape != shape or pixels.dtype != np.uint8:
                raise InvalidParameter(
                    f"pixels must be uint8 {shape}, got {pixels.dtype} {pixels.shape}"
                )
            deadline = self._deadline(started, timeout_s)
            key = None if self._cache is None else serving.keys.of_pixels(pixels)
            compute = partial(_submit, serving, pixels, deadline, 0.0)
            return await _answered(self._through_cache(serving, key, compute, deadline))

    def _admit(self) -> contextlib.AbstractContextManager[None]:
        return timed_admission(self._lifecycle, self._metrics)

    def _admitted(self) -> _Serving:
        serving = self._serving
        assert serving is not None  # the lifecycle turns READY only after start() set it
        return serving

    def _deadline(self, started: float, timeout_s: float | None) -> float:
        timeout = self._settings.request_timeout_s
        return started + (timeout if timeout_s is None else min(timeout, timeout_s))

    async def _classify(
        self, serving: _Serving, data: bytes, k: int, started: float
    ) -> Classification:
        scores = await self._scores(serving, data, self._deadline(started, None), started)
        return Classification(top_k(scores.logits, k, serving.loaded.labels), scores.timing)

    async def _scores(
        self, serving: _Serving, data: bytes, deadline: float, started: float
    ) -> Scores:
        async def compute() -> Scored:
            pixels = await serving.decoder.decode(data, deadline)
            return await _submit(serving, pixels, deadline, time.monotonic() - started)

        key = None if self._cache is None else await serving.keys.of_image(data)
        return await self._through_cache(serving, key, compute, deadline)

    async def _through_cache(
        self, serving: _Serving, key: bytes | None, compute: Compute, deadline: float
    ) -> Scores:
        """The scores from the cache when it is on, else computed; observed either way."""
        if self._cache is None or key is None:
            logits, timing = await compute()
        else:
            logits, timing = await self._cache.fetch(key, compute, deadline)
        serving.monitor.observe(logits)
        return Scores(logits, timing)


async def _submit(serving: _Serving, pixels: Pixels, deadline: float, decode_s: float) -> Scored:
    done: Done[Logits] = await serving.batcher.submit(pixels, deadline)
    return done.output, Timing(decode_s, done.queue_s, done.inference_s, done.batch_size)


def _response_cache(settings: Settings, metrics: Metrics) -> ResponseCache | None:
    if settings.cache_bytes == 0:
        return None
    return ResponseCache(settings.cache_bytes, settings.cache_ttl_s, metrics)


def _served_sha256(meta: ModelMeta) -> str:
    """The sha256 of the file that serves (checked against the manifest at load)."""
    return next(e.sha256 for key, e in meta.manifest.files.items() if key == meta.model_file)


def _monitor(loaded: LoadedModel, settings: Settings, metrics: Metrics) -> PredictionMonitor:
    monitor = PredictionMonitor(metrics, loaded.labels, settings.low_confidence)
    evaluation = loaded.meta.manifest.evaluation
    baseline = evaluation.prediction_baseline if evaluation is not None else None
    if baseline is None:
        log.warning("the manifest has no prediction baseline: the drift alerts cannot fire")
        monitor.no_baseline()
    else:
        monitor.publish_baseline(baseline.mean_confidence, baseline.class_counts, baseline.images)
    return monitor


async def _answered(work: Awaitable[T]) -> T:
    """The contract: callers only ever see ImgclsError."""
    try:
        return await work
    except ImgclsError:
        raise
    except Exception as exc:
        log.exception("unexpected error while classifying")
        raise InferenceFailed("internal error while classifying") from exc


class _DecodePool:
    """Bytes -> pixels in a small thread pool, with the shared preprocessing, timed for the
    decode metric and bounded by the request's deadline."""

    def __init__(self, spec: PreprocessSpec, settings: Settings, metrics: Metrics) -> None:
        self.pool = ThreadPoolExecutor(
            settings.decode_workers,
            thread_name_prefix="imgcls-decode",
            initializer=partial(lower_thread_priority, settings.worker_nice),
        )
        self._spec = spec
        self._max_pixels = settings.max_image_pixels
        self._budget = PixelBudget(settings.decode_budget_pixels)
        self._metrics = metrics

    async def decode(self, data: bytes, deadline: float) -> Pixels:
        loop = asyncio.get_running_loop()
        try:
            work = loop.run_in_executor(self.pool, self._preprocess, data)
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

    def _preprocess(self, data: bytes) -> Pixels:
        """In a decode worker."""
        start = time.perf_counter()
        try:
            return preprocess(data, self._spec, self._max_pixels, self._budget)
        finally:
            self._metrics.decode_duration.observe(time.perf_counter() - start)

    async def close(self) -> None:
        await asyncio.to_thread(self.pool.shutdown, wait=True, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class _Serving:
    """What start() produces: the loaded model and what runs it."""

    loaded: LoadedModel
    batcher: MicroBatcher[Pixels, Logits]
    decoder: _DecodePool
    keys: CacheKeys  # the response cache's keys for this model
    monitor: PredictionMonitor

    async def close(self) -> None:
        await self.batcher.stop()
        await self.decoder.close()
