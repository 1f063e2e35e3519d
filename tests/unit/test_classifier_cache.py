"""The Classifier with the response cache and the prediction monitor, on the tiny model (real
decode, real ORT session, real batcher): what is answered from the cache, what still goes
through admission, and what every answer adds to the monitoring series."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service.errors import Draining, Overloaded
from service.inference.classifier import Classifier
from service.model.manifest import PredictionBaseline, load_manifest, write_manifest
from service.observability.metrics import Metrics
from service.observability.timing import COLLAPSED, HIT, MISS
from tests.unit.test_classifier import settings
from tests.unit.tiny import colour_batch, colour_png, write_tiny_artifacts

pytestmark = pytest.mark.anyio

CACHE_BYTES = 1 << 20
BASELINE = PredictionBaseline(
    images=4, model_file="int8", mean_confidence=0.9, class_counts={7: 3, 427: 1}
)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, its manifest carrying a prediction baseline as the build writes it."""
    root = tmp_path_factory.mktemp("artifacts")
    model_dir = write_tiny_artifacts(root / "tiny")
    manifest = load_manifest(model_dir)
    assert manifest.evaluation is not None
    evaluation = manifest.evaluation.model_copy(update={"prediction_baseline": BASELINE})
    write_manifest(model_dir, manifest.model_copy(update={"evaluation": evaluation}))
    return root


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def started(artifacts: Path, metrics: Metrics, **overrides: object) -> Classifier:
    instance = Classifier(settings(artifacts, **overrides), metrics)
    await instance.start()
    return instance


async def test_the_cache_is_off_by_default(artifacts: Path) -> None:
    metrics = Metrics()
    instance = await started(artifacts, metrics)
    for _ in range(2):
        result = await instance.classify(colour_png(5), top_k=1)
        assert result.timing.cache is None
    assert sample(metrics, "imgcls_batch_size_sum") == 2  # both ran
    assert sample(metrics, "imgcls_cache_requests_total", outcome="miss") == 0
    await instance.stop()


async def test_a_repeated_image_is_answered_from_the_cache_for_any_top_k(artifacts: Path) -> None:
    metrics = Metrics()
    instance = await started(artifacts, metrics, cache_bytes=CACHE_BYTES)
    image = colour_png(427)

    computed = await instance.classify(image, top_k=1)
    cached = await instance.classify(image, top_k=5)

    assert computed.timing.cache == MISS
    assert cached.timing.cache == HIT
    assert cached.timing.batch_size == 0
    assert sample(metrics, "imgcls_batch_size_sum") == 1  # one inference for two answers
    assert cached.predictions[:1] == computed.predictions
    assert next(p.class_index for p in cached.predictions) == 427
    assert len(cached.predictions) == 5
    await instance.stop()


async def test_identical_requests_in_flight_run_once(artifacts: Path) -> None:
    metrics = Metrics()
    instance = await started(artifacts, metrics, cache_bytes=CACHE_BYTES)
    image = colour_png(33)

    results = await asyncio.gather(*(instance.classify(image, top_k=1) for _ in range(8)))

    assert sample(metrics, "imgcls_batch_size_sum") == 1
    assert sorted(r.timing.cache == COLLAPSED for r in results).count(True) == 7
    assert {r.predictions[0].class_index for r in results} == {33}
    await instance.stop()


async def test_pixels_and_encoded_images_are_cached_under_their_own_keys(artifacts: Path) -> None:
    metrics = Metrics()
    instance = await started(artifacts, metrics, cache_bytes=CACHE_BYTES)
    (pixels,) = colour_batch([12])

    first = await instance.logits_of_pixels(pixels)
    second = await instance.logits_of_pixels(pixels.copy())
    encoded = await instance.logits(colour_png(12))

    assert (first.timing.cache, second.timing.cache, encoded.timing.cache) == (MISS, HIT, MISS)
    np.testing.assert_array_equal(first.logits, second.logits)
    assert int(np.argmax(encoded.logits)) == 12
    await instance.stop()


async def test_a_cache_hit_still_goes_through_admission(artifacts: Path) -> None:
    """A hit is admitted like any call: refused when the capacity is taken (here by a place
    held by a ticket) and when draining, and counted in flight while it is answered."""
    metrics = Metrics()
    instance = await started(artifacts, metrics, cache_bytes=CACHE_BYTES, queue_capacity=1)
    image = colour_png(9)
    await instance.classify(image, top_k=1)

    ticket = instance.ticket()  # the only place, held by a complete request not admitted yet
    assert ticket.take()
    with pytest.raises(Overloaded):
        await instance.classify(image, top_k=1)
    ticket.release()
    assert (await instance.classify(image, top_k=1)).timing.cache == HIT
    assert sample(metrics, "imgcls_in_flight_image_seconds_total") > 0

    instance.begin_drain()
    with pytest.raises(Draining):
        await instance.classify(image, top_k=1)
    await instance.stop()


async def test_every_answer_is_observed_hits_included(artifacts: Path) -> None:
    metrics = Metrics()
    instance = await started(artifacts, metrics, cache_bytes=CACHE_BYTES, low_confidence=0.9)
    for index in (427, 427, 7):  # the second is a hit
        await instance.classify(colour_png(index), top_k=1)
    (pixels,) = colour_batch([7])
    await instance.logits_of_pixels(pixels)  # the v2 paths are observed too

    counted = {
        index: sample(metrics, "imgcls_predictions_total", class_index=str(index), label=label)
        for index, label in ((427, "colour-427"), (7, "colour-007"), (8, "colour-008"))
    }
    assert counted == {427: 2, 7: 2, 8: 0}  # every class's series exists, from zero
    assert sample(metrics, "imgcls_prediction_confidence_count") == 4
    # The tiny model's top-1 probability: 0.897 for class 427, 0.927 for class 7.
    assert sample(metrics, "imgcls_prediction_confidence_bucket", le="0.9") == 2
    assert sample(metrics, "imgcls_prediction_low_confidence_total") == 2
    await instance.stop()


async def test_the_manifests_baseline_is_exported(artifacts: Path) -> None:
    metrics = Metrics()
    instance = await started(artifacts, metrics)
    assert sample(metrics, "imgcls_prediction_baseline_confidence") == 0.9
    assert sample(metrics, "imgcls_prediction_baseline_images") == 4
    share = "imgcls_prediction_baseline_class_share"
    assert sample(metrics, share, class_index="7", label="colour-007") == 0.75
    assert sample(metrics, share, class_index="427", label="colour-427") == 0.25
    never = {"class_index": "8", "label": "colour-008"}
    assert metrics.registry.get_sample_value(share, never) is None
    await instance.stop()


async def test_a_model_without_a_baseline_exports_none(tiny_artifacts: Path) -> None:
    metrics = Metrics()
    instance = await started(tiny_artifacts, metrics)
    assert sample(metrics, "imgcls_prediction_baseline_images") == 0
    samples = [s for f in metrics.registry.collect() for s in f.samples]
    assert not [s for s in samples if s.name == "imgcls_prediction_baseline_class_share"]
    await instance.stop()
