"""The inference path breaking for good, forced on the real classifier (tiny ONNX model): the
batcher's loop killed, or the inference thread hung inside ONNX Runtime's run. Readiness and
liveness fail (so Kubernetes stops routing here and restarts the pod), and every caller gets
an answer (never a hang): queued ones at once, new ones a 503, hung ones their 504."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from service.inference.batcher import MicroBatcher
from service.inference.classifier import Classifier
from service.inference.postprocess import Logits
from service.inference.preprocess import Pixels
from service.model.runner import Batch, Runner
from service.observability.metrics import Metrics
from service.settings import Settings
from tests.api.conftest import Served, serve
from tests.unit.tiny import colour_png, write_tiny_artifacts

pytestmark = pytest.mark.anyio


def tiny_settings(tmp_path: Path, **overrides: object) -> Settings:
    fields: dict[str, object] = {
        "model_dir": write_tiny_artifacts(tmp_path / "tiny"),
        "provider": "cpu",
        "intra_op_threads": 1,
        "decode_workers": 1,
        "max_batch_size": 4,
    }
    return Settings.model_validate(fields | overrides)


async def post(served: Served) -> tuple[int, dict[str, object]]:
    response = await served.client.post(
        "/v1/classify", content=colour_png(3), headers={"Content-Type": "image/png"}
    )
    return response.status_code, response.json()


async def probes(served: Served) -> tuple[tuple[int, object], tuple[int, object]]:
    live = await served.client.get("/livez")
    ready = await served.client.get("/readyz")
    ready_reason = ready.json()["reason"]
    return (live.status_code, live.json().get("reason")), (ready.status_code, ready_reason)


async def until(check: Callable[[], bool]) -> None:
    """The real classifier has no hook to await these states: poll, bounded."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail("condition not reached in 10 s")


async def test_a_killed_batcher_fails_probes_and_answers_every_caller(tmp_path: Path) -> None:
    # A long batch window holds the first requests in the queue when the loop is killed.
    settings = tiny_settings(tmp_path, max_batch_wait_s=30.0, request_timeout_s=60.0)
    async with serve(settings) as served:
        assert await probes(served) == ((200, None), (200, None))
        queued = [asyncio.create_task(post(served)) for _ in range(2)]
        batcher = served.classifier._slot.current.batcher
        await until(lambda: batcher.depth == 2)
        batcher._task.cancel()  # the loop dies, not through stop()
        answers = await asyncio.wait_for(asyncio.gather(*queued), 5)  # at once, not at 60 s
        after = await post(served)
        assert await probes(served) == (
            (503, "failed: the batcher stopped"),
            (503, "failed: the batcher stopped"),
        )
        v2_live = await served.client.get("/v2/health/live")
    for status, body in answers:
        assert status == 500
        assert body["error"]["code"] == "inference_failed"  # type: ignore[index]
    assert after == (
        503,
        {"error": {"code": "not_ready", "message": "the inference loop has stopped"}},
    )
    assert v2_live.status_code == 503


class HangingInference(Classifier):
    """The real classifier whose ONNX Runtime run blocks until released: a hung runtime."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        super().__init__(settings, metrics)
        self.release = threading.Event()

    def _batcher(self, runner: Runner) -> MicroBatcher[Pixels, Logits]:
        real_run = runner.run

        def run(batch: Batch, alone: bool = True) -> Logits:
            self.release.wait(30)
            return real_run(batch, alone)

        runner.run = run  # type: ignore[method-assign]
        return super()._batcher(runner)


async def test_a_hung_inference_thread_fails_probes_and_times_callers_out(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, inference_stall_s=0.3, request_timeout_s=1.0)
    async with serve(settings, HangingInference) as served:
        classifier: HangingInference = served.classifier
        try:
            status, body = await asyncio.wait_for(post(served), 10)
            stalled = await probes(served)
        finally:
            classifier.release.set()
        batcher = classifier._slot.current.batcher
        await until(lambda: batcher.fault(settings.inference_stall_s) is None)
        recovered = await probes(served)
    assert (status, body["error"]["code"]) == (504, "deadline_exceeded")  # type: ignore[index]
    assert stalled == ((503, "failed: inference stalled"), (503, "failed: inference stalled"))
    # The batch came back: the runtime was slow, not dead, and the probes say so again.
    assert recovered == ((200, None), (200, None))
