"""The Classifier end to end on the tiny nearest-colour model: real decode, real ORT session,
real batcher; every answer is known in advance (a uniform image of class c's colour is c)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from service.errors import (
    BadImage,
    DeadlineExceeded,
    Draining,
    ImageTooLarge,
    InvalidParameter,
    NotReady,
    Overloaded,
    UnsupportedMediaType,
)
from service.inference.classifier import Classifier
from service.model import int8_weights as isa
from service.model.loading import find_model_dir
from service.model.manifest import ManifestError, load_manifest
from service.model.providers import CPU
from service.observability.metrics import Metrics
from service.settings import Settings
from tests.unit.tiny import colour_png, write_tiny_artifacts

pytestmark = pytest.mark.anyio


def settings(artifacts: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "artifacts_dir": artifacts,
        "provider": "cpu",
        "intra_op_threads": 1,
        "decode_workers": 2,
        "max_batch_size": 4,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def classifier(tiny_artifacts: Path) -> AsyncIterator[Classifier]:
    instance = Classifier(settings(tiny_artifacts), Metrics())
    await instance.start()
    yield instance
    await instance.stop()


async def test_classify_gives_the_known_top_k_and_timing(classifier: Classifier) -> None:
    result = await classifier.classify(colour_png(427), top_k=3, content_type="image/png")
    assert next(p.class_index for p in result.predictions) == 427
    assert result.predictions[0].label == "colour-427"
    assert len(result.predictions) == 3
    assert result.predictions[0].score > 0.5
    scores = [p.score for p in result.predictions]
    assert scores == sorted(scores, reverse=True)
    assert result.timing.batch_size == 1
    assert result.timing.decode_s > 0
    assert result.timing.inference_s > 0
    assert result.timing.queue_s >= 0


async def test_64_concurrent_callers_each_get_their_own_answer(tiny_artifacts: Path) -> None:
    instance = Classifier(settings(tiny_artifacts, max_batch_size=8), Metrics())
    await instance.start()
    classes = [(i * 37) % 1000 for i in range(64)]
    results = await asyncio.gather(*(instance.classify(colour_png(c), top_k=1) for c in classes))
    assert [r.predictions[0].class_index for r in results] == classes
    assert max(r.timing.batch_size for r in results) > 1  # they were batched together
    await instance.stop()


async def test_a_bad_image_fails_only_its_own_request(classifier: Classifier) -> None:
    results = await asyncio.gather(
        classifier.classify(colour_png(5), top_k=1),
        classifier.classify(b"not an image at all", top_k=1),
        classifier.classify(colour_png(6), top_k=1),
        return_exceptions=True,
    )
    assert isinstance(results[1], BadImage)
    assert [r.predictions[0].class_index for r in (results[0], results[2])] == [5, 6]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "kwargs", "error"),
    [
        (b"", {"top_k": 1}, BadImage),
        (colour_png(1), {"top_k": 0}, InvalidParameter),
        (colour_png(1), {"top_k": 1001}, InvalidParameter),
        (colour_png(1), {"top_k": 1, "content_type": "text/plain"}, UnsupportedMediaType),
    ],
)
async def test_invalid_requests_raise_their_error(
    classifier: Classifier, data: bytes, kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await classifier.classify(data, **kwargs)  # type: ignore[arg-type]


async def test_too_many_pixels_is_413(tiny_artifacts: Path) -> None:
    instance = Classifier(settings(tiny_artifacts, max_image_pixels=10_000), Metrics())
    await instance.start()
    with pytest.raises(ImageTooLarge) as refused:
        await instance.classify(colour_png(1, size=(200, 200)), top_k=1)
    assert refused.value.status == 413
    await instance.stop()


async def test_not_ready_before_start_then_ready_with_meta(tiny_artifacts: Path) -> None:
    metrics = Metrics()
    instance = Classifier(settings(tiny_artifacts), metrics)
    assert instance.readiness().ready is False
    assert instance.readiness().reason == "loading"
    with pytest.raises(NotReady):
        await instance.classify(colour_png(1), top_k=1)
    with pytest.raises(NotReady):
        _ = instance.meta
    await instance.start()
    ready = instance.readiness()
    assert (ready.ready, ready.reason) == (True, None)
    assert ready.details["model"] == "tiny"
    assert ready.details["queue_depth"] == 0
    meta = instance.meta
    assert (meta.name, meta.provider, meta.precision) == ("tiny", CPU, "int8")
    assert meta.provider_reason == "provider=cpu was configured"
    assert sorted(meta.warmup_latency_s) == [1, 2, 4]  # the sizes the batcher runs
    assert (meta.num_classes, meta.input_shape) == (1000, (224, 224, 3))
    assert (meta.intra_op_threads, meta.decode_workers, meta.max_batch_size) == (1, 2, 4)
    sample = metrics.registry.get_sample_value
    assert sample("imgcls_ready") == 1
    assert sample("imgcls_warmup_latency_seconds", {"batch_size": "4"}) == meta.warmup_latency_s[4]
    assert sample("imgcls_provider_selected", {"provider": CPU, "reason": "configured"}) == 1
    assert sample("imgcls_model_info", {"name": "tiny", "version": "test-1", "untrained": "false",
                                        "num_classes": "1000", "architecture": "nearest colour",
                                        "labels_sha256": "",
                                        "precision": "int8", "file": isa.exact_int8_file(),
                                        "provider": CPU,
                                        "intra_op_threads": "1", "decode_workers": "2",
                                        "inference_streams": "1",
                                        "max_batch_size": "4"}) == 1  # fmt: skip
    # One intra-op thread: nothing to share, so one stream without measuring
    # (service/model/inference_streams.py).
    assert (meta.inference_streams, meta.inference_streams_reason) == (
        1,
        "auto: one inference thread, one batch at a time",
    )
    await instance.stop()


async def test_unset_streams_are_chosen_by_measuring_inference_against_decoding(
    tiny_artifacts: Path,
) -> None:
    """The tiny model's inference costs microseconds, decoding a 500x375 JPEG milliseconds:
    decode-bound, so one stream, and the log/model say what was measured."""
    instance = Classifier(settings(tiny_artifacts, intra_op_threads=2), Metrics())
    await instance.start()
    meta = instance.meta
    assert meta.inference_streams == 1
    assert meta.inference_streams_reason.startswith("auto: 1, decoding costs as much: inference ")
    assert "ms of CPU per image, decode" in meta.inference_streams_reason
    await instance.stop()


async def test_drain_refuses_new_work_and_answers_everything_admitted(tiny_artifacts: Path) -> None:
    metrics = Metrics()
    instance = Classifier(settings(tiny_artifacts, max_batch_size=2), metrics)
    await instance.start()
    admitted = [asyncio.create_task(instance.classify(colour_png(c), top_k=1)) for c in range(12)]
    await asyncio.sleep(0)  # each task runs to its first await: all 12 are admitted
    instance.begin_drain()
    assert instance.readiness().reason == "draining"
    assert metrics.registry.get_sample_value("imgcls_ready") == 0
    with pytest.raises(Draining):
        await instance.classify(colour_png(1), top_k=1)
    await instance.drain(timeout_s=30)
    assert all(task.done() for task in admitted)
    assert [t.result().predictions[0].class_index for t in admitted] == list(range(12))
    await instance.stop()
    assert instance.readiness().reason == "stopped"
    await instance.stop()  # idempotent


async def test_a_drain_begun_while_loading_is_not_undone_by_the_load(tiny_artifacts: Path) -> None:
    metrics = Metrics()
    instance = Classifier(settings(tiny_artifacts), metrics)
    starting = asyncio.create_task(instance.start())
    await asyncio.sleep(0)  # start() is now hashing the model in a thread
    instance.begin_drain()  # SIGTERM during start-up
    await starting
    assert instance.readiness().reason == "draining"
    assert metrics.registry.get_sample_value("imgcls_ready") == 0
    with pytest.raises(Draining):
        await instance.classify(colour_png(1), top_k=1)
    await instance.stop()


async def test_stop_answers_a_request_still_waiting_for_a_decode_worker(
    tiny_artifacts: Path,
) -> None:
    instance = Classifier(settings(tiny_artifacts, decode_workers=1), Metrics())
    await instance.start()
    gate = threading.Event()
    assert instance._serving is not None
    instance._serving.decoder.pool.submit(gate.wait, 30)  # the only decode worker is busy
    waiting = asyncio.create_task(instance.classify(colour_png(1), top_k=1))
    await asyncio.sleep(0)
    stopping = asyncio.create_task(instance.stop())
    with pytest.raises(Draining):
        await waiting  # answered with 503, not left hanging nor cancelled
    gate.set()
    await stopping


async def test_a_cancelled_request_leaves_nothing_in_flight(classifier: Classifier) -> None:
    task = asyncio.create_task(classifier.classify(colour_png(3), top_k=1))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await classifier.drain(timeout_s=5)
    assert classifier.readiness().details["in_flight"] == 0
    assert (await classifier.classify(colour_png(4), top_k=1)).predictions[0].class_index == 4


async def test_a_timeout_shorter_than_the_work_is_504(tiny_artifacts: Path) -> None:
    instance = Classifier(settings(tiny_artifacts, request_timeout_s=1e-6), Metrics())
    await instance.start()
    with pytest.raises(DeadlineExceeded) as late:
        await instance.classify(colour_png(3), top_k=1)
    assert late.value.status == 504
    await instance.stop()


async def test_callers_beyond_the_queue_capacity_are_refused_before_decoding(
    tiny_artifacts: Path,
) -> None:
    instance = Classifier(settings(tiny_artifacts, queue_capacity=2, max_batch_size=1), Metrics())
    await instance.start()
    tasks = [asyncio.create_task(instance.classify(colour_png(c), top_k=1)) for c in range(5)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert len(refused) == 3  # 2 admitted (decoding, queued or running), 3 refused
    assert all(r.retry_after_s is not None and r.retry_after_s >= 1 for r in refused)
    assert [r.predictions[0].class_index for r in results[:2]] == [0, 1]  # type: ignore[union-attr]
    await instance.stop()


async def test_a_model_file_that_does_not_match_its_manifest_is_refused(tmp_path: Path) -> None:
    model_dir = write_tiny_artifacts(tmp_path / "tiny")
    served = load_manifest(model_dir).files[isa.exact_int8_file()]  # the file this CPU serves
    with (model_dir / served.path).open("ab") as f:
        f.write(b"tampered")
    instance = Classifier(settings(tmp_path), Metrics())
    with pytest.raises(ManifestError, match="sha256"):
        await instance.start()
    readiness = instance.readiness()
    assert (readiness.ready, readiness.reason) == (False, "model failed to load")
    assert readiness.details["state"] == "failed"
    assert "sha256" not in str(readiness)  # the exception's text is for the log only


def test_find_model_dir_prefers_trained_then_resnet18(tmp_path: Path) -> None:
    write_tiny_artifacts(tmp_path / "b_resnet", name="resnet18", untrained=True)
    write_tiny_artifacts(tmp_path / "a_effnet", name="efficientnet_lite0", untrained=False)
    assert find_model_dir(tmp_path) == tmp_path / "a_effnet"  # trained beats untrained
    write_tiny_artifacts(tmp_path / "c_resnet", name="resnet18", untrained=False)
    assert find_model_dir(tmp_path) == tmp_path / "c_resnet"  # among trained, resnet18
    (tmp_path / "d_broken").mkdir()
    (tmp_path / "d_broken" / "manifest.json").write_text("{not json")
    assert find_model_dir(tmp_path) == tmp_path / "c_resnet"  # a broken one is skipped


def test_find_model_dir_with_nothing_built_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="make model"):
        find_model_dir(tmp_path)


# -- the real model (slow): real photos through the served int8 EfficientNet-Lite0 ------------

REPO = Path(__file__).resolve().parents[2]
EFFNET = REPO / "model_artifacts" / "efficientnet_lite0"


@pytest.fixture(scope="module")
def labeled_photos(
    photos: dict[str, Any], photo_bytes: Callable[[str], bytes]
) -> dict[str, tuple[bytes, list[int]]]:
    """name -> (bytes, acceptable top-1 indices), for the photos whose top-1 is asserted."""
    return {n: (photo_bytes(n), e["accept"]) for n, e in photos.items() if e["assert"]}


@pytest.fixture(scope="module")
def effnet_dir() -> Path:
    if not (EFFNET / "manifest.json").is_file():
        pytest.skip(f"{EFFNET} is not built: run `make test-models`")
    return EFFNET


@pytest.fixture
async def real_classifier(effnet_dir: Path) -> AsyncIterator[Classifier]:
    # provider auto: the photos are checked on whichever provider would serve them
    instance = Classifier(Settings(model_dir=effnet_dir, max_batch_size=8), Metrics())
    await instance.start()
    yield instance
    await instance.stop()


@pytest.mark.slow
async def test_real_photos_get_the_expected_top1(
    real_classifier: Classifier, labeled_photos: dict[str, tuple[bytes, list[int]]]
) -> None:
    photos = labeled_photos
    assert len(photos) >= 5
    wrong = {}
    for name, (data, accept) in photos.items():
        result = await real_classifier.classify(data, top_k=5)
        best = result.predictions[0]
        if best.class_index not in accept:
            wrong[name] = (best.class_index, best.label, accept)
    assert wrong == {}, f"on {real_classifier.meta.provider}"


@pytest.mark.slow
async def test_64_concurrent_callers_on_the_real_model_each_get_their_own_answer(
    real_classifier: Classifier, labeled_photos: dict[str, tuple[bytes, list[int]]]
) -> None:
    photos = [data for data, _ in labeled_photos.values()]
    alone = [(await real_classifier.classify(d, top_k=1)).predictions[0] for d in photos]
    indices = [i % len(photos) for i in range(64)]
    together = await asyncio.gather(
        *(real_classifier.classify(photos[i], top_k=1) for i in indices)
    )
    assert [r.predictions[0].class_index for r in together] == [
        alone[i].class_index for i in indices
    ]
    # Same image, same answer, whatever batch it rode in: batching must not change results
    # beyond float noise.
    for result, i in zip(together, indices, strict=True):
        assert result.predictions[0].score == pytest.approx(alone[i].score, abs=1e-3)
    assert max(r.timing.batch_size for r in together) > 1


@pytest.mark.slow
async def test_real_model_meta_says_which_provider_and_why(real_classifier: Classifier) -> None:
    meta = real_classifier.meta
    assert meta.name == "efficientnet_lite0"
    assert meta.untrained is False
    assert meta.provider_reason.startswith(("auto:", "provider="))
    assert sorted(meta.warmup_latency_s) == [1, 2, 4, 8]
    assert real_classifier.readiness().details["provider"] == meta.provider
