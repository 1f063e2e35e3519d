"""Versions through the real Classifier on tiny models (service/inference/repository.py):
the newest valid version serves, a pinned one instead; a swap happens beside the serving
version and requests already admitted finish on theirs; a refused version changes nothing but
its state; the response cache and the metrics follow the swap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.errors import Draining, ModelLoadFailed, ModelNotFound, NotReady
from service.inference.classifier import Classifier
from service.inference.repository import Trigger
from service.observability.metrics import Metrics
from service.settings import Settings
from tests.unit.tiny import NUM_CLASSES, colour_png
from tests.versions_repo import tamper, tiny_version

pytestmark = pytest.mark.anyio

PNG = colour_png(123)


def settings(root: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_dir": root,
        "provider": "cpu",
        "intra_op_threads": 1,
        "decode_workers": 1,
        "max_batch_size": 2,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Version 1, the plain tiny model; version 2, its classes permuted."""
    tiny_version(tmp_path, "1")
    tiny_version(tmp_path, "2", permute=True)
    return tmp_path


@pytest.fixture
async def started(root: Path) -> AsyncIterator[Classifier]:
    instance = Classifier(settings(root, cache_bytes=1 << 20), Metrics())
    await instance.start()
    yield instance
    await instance.stop()


async def top1(classifier: Classifier) -> tuple[str, int]:
    result = await classifier.classify(PNG, top_k=1)
    return result.version, result.predictions[0].class_index


async def test_the_newest_version_serves_and_its_answers_say_so(started: Classifier) -> None:
    version, best = await top1(started)
    assert version == "2"
    assert best != 123
    assert started.meta.version == "2"
    states = [(v.version, v.state, v.reason) for v in started.versions()]
    assert states == [("2", "READY", ""), ("1", "UNAVAILABLE", "not loaded")]


async def test_a_pinned_version_serves_and_a_reload_keeps_it(root: Path) -> None:
    instance = Classifier(settings(root, model_version="1"), Metrics())
    await instance.start()
    try:
        assert await top1(instance) == ("1", 123)
        assert (await instance.load(None, Trigger.SIGNAL)).version == "1"
    finally:
        await instance.stop()


async def test_a_missing_pinned_version_fails_the_start(root: Path) -> None:
    instance = Classifier(settings(root, model_version="7"), Metrics())
    with pytest.raises(ModelNotFound, match="no version '7'"):
        await instance.start()
    assert instance.readiness().reason == "model failed to load"


async def test_a_load_swaps_versions_and_a_rollback_is_loading_a_named_one(
    started: Classifier,
) -> None:
    metrics = started._metrics
    assert (await started.load("1")).version == "1"
    assert await top1(started) == ("1", 123)
    assert (await started.load("2")).version == "2"  # the rollback
    assert (await top1(started))[0] == "2"
    sample = metrics.registry.get_sample_value
    assert sample("imgcls_model_loads_total", {"trigger": "api", "outcome": "loaded"}) == 2
    assert _info(started)["version"] == "2"  # the info series follows the swap
    assert _info(started)["build"] == "test-1"
    assert started.readiness().ready


async def test_a_request_admitted_before_a_swap_finishes_on_its_version(
    started: Classifier,
) -> None:
    with started.hold() as serving:  # a request in flight on version 2
        await started.load("1")
        held = await started.classify(PNG, top_k=1, on=serving)
        assert held.version == "2"
        assert held.predictions[0].class_index != 123
        assert (await top1(started)) == ("1", 123)  # a new request gets version 1
        await started.swaps_settled()
        assert serving.batcher.alive  # version 2 is not released while a request holds it
    await started.swaps_settled()
    assert not serving.batcher.alive  # released after its last request


async def test_a_tampered_version_is_refused_and_the_serving_one_serves_on(
    started: Classifier, root: Path
) -> None:
    tamper(root / "1")
    with pytest.raises(ModelLoadFailed, match=r"version 1 refused: .*sha256"):
        await started.load("1")
    assert (await top1(started))[0] == "2"
    assert started.readiness().ready
    state = {v.version: (v.state, v.reason) for v in started.versions()}
    assert state["1"][0] == "UNAVAILABLE"
    assert "sha256" in state["1"][1]
    sample = started._metrics.registry.get_sample_value
    assert sample("imgcls_model_loads_total", {"trigger": "api", "outcome": "refused"}) == 1
    with pytest.raises(ModelNotFound):
        await started.load("5")


async def test_at_start_a_refused_newest_version_falls_back_to_the_next(root: Path) -> None:
    tamper(root / "2")
    instance = Classifier(settings(root), Metrics())
    await instance.start()
    try:
        assert await top1(instance) == ("1", 123)
        state = {v.version: v.state for v in instance.versions()}
        assert state == {"2": "UNAVAILABLE", "1": "READY"}
        # A reload tries the newest again, refuses it, and stops at the one serving.
        assert (await instance.load(None, Trigger.SIGNAL)).version == "1"
        sample = instance._metrics.registry.get_sample_value
        assert sample("imgcls_model_loads_total", {"trigger": "startup", "outcome": "refused"}) == 1
        assert sample("imgcls_model_loads_total", {"trigger": "signal", "outcome": "refused"}) == 1
    finally:
        await instance.stop()


async def test_a_new_folder_on_disk_is_loaded_by_a_reload(started: Classifier, root: Path) -> None:
    tiny_version(root, "3")
    assert (await started.load(None, Trigger.SIGNAL)).version == "3"
    assert await top1(started) == ("3", 123)


async def test_the_response_cache_is_flushed_on_a_swap(started: Classifier) -> None:
    sample = started._metrics.registry.get_sample_value
    await top1(started)
    await top1(started)
    assert sample("imgcls_cache_requests_total", {"outcome": "hit"}) == 1
    await started.load("1")
    assert sample("imgcls_cache_evictions_total", {"reason": "flush"}) == 1
    assert await top1(started) == ("1", 123)  # not version 2's cached answer
    assert sample("imgcls_cache_requests_total", {"outcome": "hit"}) == 1


async def test_an_unloaded_model_is_not_ready_until_the_next_load(started: Classifier) -> None:
    assert await started.unload() == "2"
    assert started.readiness().reason == "unloaded"
    with pytest.raises(NotReady):
        await top1(started)
    assert (await started.load(None)).version == "2"
    assert started.readiness().ready
    assert (await top1(started))[0] == "2"


async def test_the_prediction_monitor_follows_the_swap(started: Classifier) -> None:
    sample = started._metrics.registry.get_sample_value
    await started.load("1")
    await top1(started)
    counted = sample("imgcls_predictions_total", {"class_index": "123", "label": "colour-123"})
    assert counted == 1  # version 1's answer, in version 1's own series
    assert started.labels[123] == "colour-123"
    assert len(started.labels) == NUM_CLASSES


def _info(classifier: Classifier) -> dict[str, str]:
    families = classifier._metrics.registry.collect()
    info = next(f for f in families if f.name == "imgcls_model")
    return dict(info.samples[0].labels)


async def test_no_version_is_loaded_once_the_service_stops(root: Path) -> None:
    instance = Classifier(settings(root), Metrics())
    await instance.start()
    instance.begin_drain()
    with pytest.raises(Draining):
        await instance.load("1")
    await instance.stop()
    assert instance.readiness().reason == "stopped"
