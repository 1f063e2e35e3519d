"""A stand-in for service.inference.classifier.Classifier, for the tests where a fake is the point:
forcing a 500/503/504, holding requests in flight (drain, disconnect) or holding start-up.
Everything else in tests/api runs the real Classifier on the real model.

Only the answer is fake. States, readiness reasons, admission (Draining, NotReady, Overloaded),
the in-flight count and drain are the real service.limits.lifecycle.Lifecycle, so the API's drain
and
503 tests exercise the code that serves."""

from __future__ import annotations

import asyncio

from service.errors import NotReady
from service.inference.classifier import Classification
from service.inference.postprocess import Prediction
from service.limits.admission import Ticket
from service.limits.lifecycle import Lifecycle, Readiness, State
from service.model.loading import ModelMeta
from service.observability.metrics import Metrics
from service.observability.timing import Timing
from service.settings import Settings
from tests.factories import model_meta

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
        self.lifecycle = Lifecycle(metrics, capacity=settings.queue_capacity)
        self.admitted = 0
        self.cancelled = 0
        self.admitted_changed = asyncio.Condition()

    @property
    def in_flight(self) -> int:
        return self.lifecycle.in_flight

    async def start(self) -> None:
        if self.hold_start:
            await self.release.wait()
        self.lifecycle.ready(retry_after_s=lambda in_flight: 1)

    async def wait_admitted(self, count: int) -> None:
        async with self.admitted_changed:
            await self.admitted_changed.wait_for(lambda: self.admitted >= count)

    async def classify(
        self, data: bytes, *, top_k: int, content_type: str | None = None
    ) -> Classification:
        with self.lifecycle.admit():
            async with self.admitted_changed:
                self.admitted += 1
                self.admitted_changed.notify_all()
            try:
                return await self._answer(top_k)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise

    async def _answer(self, top_k: int) -> Classification:
        await self.release.wait()
        if self.error is not None:
            raise self.error
        predictions = tuple(Prediction(f"class {i}", i, 1.0 / top_k) for i in range(top_k))
        return Classification(predictions, FAKE_TIMING)

    def begin_drain(self) -> None:
        self.lifecycle.begin_drain()

    async def drain(self, timeout_s: float) -> None:
        await self.lifecycle.drain(timeout_s)

    async def stop(self) -> None:
        self.lifecycle.stop()

    def readiness(self) -> Readiness:
        return self.lifecycle.readiness({"in_flight": self.in_flight})

    def liveness(self) -> str | None:
        return None

    def check_admission(self) -> None:
        self.lifecycle.check_admission()

    def ticket(self) -> Ticket:
        return self.lifecycle.ticket()

    @property
    def meta(self) -> ModelMeta:
        if self.lifecycle.state is State.LOADING:
            raise NotReady("the model is not loaded (loading)")
        return model_meta(untrained=self.untrained)
