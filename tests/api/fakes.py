"""A stand-in for service.classifier.Classifier, for the tests where a fake is the point:
forcing a 500/503/504, holding requests in flight (drain, disconnect) or holding start-up.
Everything else in tests/api runs the real Classifier on the real model."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.classifier import Classification, ModelMeta, Prediction, Readiness, Timing
from service.errors import Draining, NotReady
from service.manifest import Manifest
from service.metrics import Metrics
from service.settings import Settings

FAKE_TIMING = Timing(decode_s=0.001, queue_s=0.002, inference_s=0.003, batch_size=4)


class FakeClassifier:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        error: BaseException | None = None,
        hold: bool = False,
        hold_start: bool = False,
        untrained: bool = False,
    ) -> None:
        self.error = error
        self.release = asyncio.Event()  # set it to let held requests (or start-up) finish
        if not hold and not hold_start:
            self.release.set()
        self.hold_start = hold_start
        self.untrained = untrained
        self.state = "loading"
        self.in_flight = 0
        self.admitted = 0
        self.cancelled = 0
        self.admitted_changed = asyncio.Condition()
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        if self.hold_start:
            await self.release.wait()
        self.state = "ready"

    async def wait_admitted(self, count: int) -> None:
        async with self.admitted_changed:
            await self.admitted_changed.wait_for(lambda: self.admitted >= count)

    async def classify(
        self, data: bytes, *, top_k: int, content_type: str | None = None
    ) -> Classification:
        if self.state in ("draining", "stopped"):
            raise Draining("the server is shutting down", retry_after_s=1)
        if self.state != "ready":
            raise NotReady(f"the model is not ready ({self.state})", retry_after_s=1)
        self.in_flight += 1
        self._idle.clear()
        async with self.admitted_changed:
            self.admitted += 1
            self.admitted_changed.notify_all()
        try:
            return await self._answer(top_k)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def _answer(self, top_k: int) -> Classification:
        await self.release.wait()
        if self.error is not None:
            raise self.error
        predictions = tuple(Prediction(f"class {i}", i, 1.0 / top_k) for i in range(top_k))
        return Classification(predictions, FAKE_TIMING)

    def begin_drain(self) -> None:
        self.state = "draining"

    async def drain(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def stop(self) -> None:
        self.state = "stopped"

    def readiness(self) -> Readiness:
        ready = self.state == "ready"
        return Readiness(ready, None if ready else self.state, {"in_flight": self.in_flight})

    @property
    def meta(self) -> ModelMeta:
        if self.state == "loading":
            raise NotReady("the model is not loaded (loading)")
        return ModelMeta(
            name="fake",
            version="0",
            untrained=self.untrained,
            precision="int8",
            provider="CPUExecutionProvider",
            provider_reason="fake",
            intra_op_threads=1,
            decode_workers=1,
            max_batch_size=4,
            num_classes=1000,
            input_shape=(224, 224, 3),
            warmup_latency_s={1: 0.001},
            manifest=Manifest.model_construct(evaluation=None),
            model_dir=Path("fake"),
            provider_reason_code="configured",
        )
