"""The data plane, without HTTP: bytes -> decode (thread pool) -> micro-batcher -> ONNX Runtime
(one inference thread) -> top-k. The Classifier composes the parts, each with one home:

    service.limits.lifecycle  states, readiness, admission and in-flight count, drain
    service.model.loading    manifest, sha256, provider choice, warm-up; ModelMeta; model metrics
    service.inference.batcher    the queue and the inference thread
    _DecodePool        (below) decoding, within the deadline, answered even when stop() cuts in

Decoding happens per request, before the queue, so a bad image fails only its own request and
the batcher only ever sees valid pixels. Every call admitted is counted until it is answered,
which is what ``drain`` waits for: nothing admitted is lost.
"""

from __future__ import annotations

import asyncio
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
from service.limits.admission import Ticket
from service.limits.lifecycle import Lifecycle, Readiness, State
from service.limits.pixel_budget import PixelBudget
from service.model.loading import (
    LoadedModel,
    ModelMeta,
    describe,
    load_model,
    publish,
)
from service.model.runner import Runner
from service.observability.metrics import Metrics
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

    logits: Logits  # float32 [num_classes]
    timing: Timing


class Classifier:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._lifecycle = Lifecycle(metrics, capacity=settings.queue_capacity)
        self._serving: _Serving | None = None  # set once the model is loaded and warmed

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
        return _Serving(loaded, batcher, decoder)

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
        with self._lifecycle.admit():
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
        with self._lifecycle.admit():
            deadline = self._deadline(started, timeout_s)
            return await _answered(self._scores(self._admitted(), data, deadline, started))

    async def logits_of_pixels(self, pixels: Pixels, *, timeout_s: float | None = None) -> Scores:
        """Pixels the caller decoded (uint8 [H, W, 3] of the model's input size): no decoding,
        straight to the batcher, with the same admission, deadline and cancellation."""
        started = time.monotonic()
        with self._lifecycle.admit():
            serving = self._admitted()
            shape = serving.loaded.meta.input_shape
            if pixels.shape != shape or pixels.dtype != np.uint8:
                raise InvalidParameter(
                    f"pixels must be uint8 {shape}, got {pixels.dtype} {pixels.shape}"
                )
            deadline = self._deadline(started, timeout_s)
            return await _answered(_submit(serving, pixels, deadline, decode_s=0.0))

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

    @staticmethod
    async def _scores(serving: _Serving, data: bytes, deadline: float, started: float) -> Scores:
        pixels = await serving.decoder.decode(data, deadline)
        return await _submit(serving, pixels, deadline, decode_s=time.monotonic() - started)


async def _submit(serving: _Serving, pixels: Pixels, deadline: float, decode_s: float) -> Scores:
    done: Done[Logits] = await serving.batcher.submit(pixels, deadline)
    return Scores(done.output, Timing(decode_s, done.queue_s, done.inference_s, done.batch_size))


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

    async def close(self) -> None:
        await self.batcher.stop()
        await self.decoder.close()
