"""The response cache on its own: keys, the byte bound, LRU, TTL, flush, and single flight
(followers wait for the leader; a leader's failure or cancellation never reaches them). No
timing is asserted: computations are held on events, and the TTL runs on a fake clock."""

from __future__ import annotations

import asyncio
import hashlib
import time
import tracemalloc

import numpy as np
import pytest

from service.errors import BadImage, DeadlineExceeded, InferenceFailed
from service.inference.preprocess import PreprocessSpec
from service.inference.response_cache import (
    CacheKeys,
    Logits,
    ResponseCache,
    Scored,
    entry_bytes,
)
from service.observability.metrics import Metrics
from service.observability.timing import COLLAPSED, HIT, MISS, Timing

pytestmark = pytest.mark.anyio

TIMING = Timing(decode_s=0.001, queue_s=0.002, inference_s=0.003, batch_size=2)
ENTRY = entry_bytes(np.zeros(1000, np.float32))
FAR = 1e12  # a deadline that never passes


def logits(seed: int) -> Logits:
    return np.random.default_rng(seed).standard_normal(1000).astype(np.float32)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


class Computation:
    """A compute() whose calls are counted and, when ``held``, wait for ``release``."""

    def __init__(self, result: Logits, *, held: bool = False) -> None:
        self.result = result
        self.calls = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        if not held:
            self.release.set()
        self.errors: list[BaseException] = []  # raised by the next calls, in order

    async def __call__(self) -> Scored:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        if self.errors:
            raise self.errors.pop(0)
        return self.result, TIMING


def cache(metrics: Metrics, entries: int = 100, **kwargs: object) -> ResponseCache:
    return ResponseCache(entries * ENTRY, metrics=metrics, **kwargs)  # type: ignore[arg-type]


async def test_a_second_fetch_is_a_hit_with_the_same_scores_and_no_work() -> None:
    metrics = Metrics()
    responses, compute = cache(metrics, ttl_s=None), Computation(logits(1))

    first, first_timing = await responses.fetch(b"k", compute, FAR)
    second, second_timing = await responses.fetch(b"k", compute, FAR)

    assert compute.calls == 1
    np.testing.assert_array_equal(first, logits(1))
    np.testing.assert_array_equal(second, logits(1))
    assert first_timing.cache == MISS
    assert first_timing.batch_size == 2
    assert second_timing.cache == HIT
    assert second_timing.batch_size == 0
    assert value(metrics, "imgcls_cache_requests_total", outcome="miss") == 1
    assert value(metrics, "imgcls_cache_requests_total", outcome="hit") == 1
    assert value(metrics, "imgcls_cache_entries") == 1
    assert value(metrics, "imgcls_cache_bytes") == ENTRY


async def test_stored_scores_are_read_only_copies_that_own_their_memory() -> None:
    batch = np.stack([logits(1), logits(2)])  # the runner hands out rows of its batch output
    responses = cache(Metrics(), ttl_s=None)

    stored, _ = await responses.fetch(b"k", Computation(batch[0]), FAR)

    assert stored.base is None  # not a view keeping the whole batch alive
    assert not stored.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        stored[0] = 0.0
    batch[0, 0] = 99.0  # the runner's buffer changing later changes nothing stored
    hit, _ = await responses.fetch(b"k", Computation(logits(3)), FAR)
    assert hit[0] == logits(1)[0]


async def test_the_byte_bound_evicts_the_least_recently_used() -> None:
    metrics = Metrics()
    responses = cache(metrics, entries=2, ttl_s=None)
    for key in (b"a", b"b"):
        await responses.fetch(key, Computation(logits(1)), FAR)
    await responses.fetch(b"a", Computation(logits(9)), FAR)  # a hit: "a" is now the newest

    await responses.fetch(b"c", Computation(logits(3)), FAR)  # over the bound: "b" goes

    fresh = Computation(logits(4))
    await responses.fetch(b"a", fresh, FAR)
    await responses.fetch(b"c", fresh, FAR)
    assert fresh.calls == 0
    await responses.fetch(b"b", fresh, FAR)
    assert fresh.calls == 1
    assert value(metrics, "imgcls_cache_evictions_total", reason="size") == 2  # b, then a
    assert value(metrics, "imgcls_cache_bytes") == 2 * ENTRY


async def test_entries_expire_after_the_ttl() -> None:
    now = [1000.0]
    metrics = Metrics()
    responses = cache(metrics, ttl_s=60.0, clock=lambda: now[0])
    compute = Computation(logits(1))
    await responses.fetch(b"k", compute, FAR)

    now[0] += 59.0
    await responses.fetch(b"k", compute, FAR)
    assert compute.calls == 1
    now[0] += 2.0  # 61 s after it was stored
    await responses.fetch(b"k", compute, FAR)
    assert compute.calls == 2
    assert value(metrics, "imgcls_cache_evictions_total", reason="expired") == 1


async def test_errors_are_never_stored() -> None:
    responses = cache(Metrics(), ttl_s=None)
    compute = Computation(logits(1))
    compute.errors = [BadImage("not an image")]

    with pytest.raises(BadImage):
        await responses.fetch(b"k", compute, FAR)
    scores, timing = await responses.fetch(b"k", compute, FAR)

    assert compute.calls == 2
    assert timing.cache == MISS
    np.testing.assert_array_equal(scores, logits(1))


async def test_identical_requests_in_flight_are_computed_once() -> None:
    metrics = Metrics()
    responses, compute = cache(metrics, ttl_s=None), Computation(logits(1), held=True)
    calls = [asyncio.create_task(responses.fetch(b"k", compute, FAR)) for _ in range(8)]
    await compute.started.wait()
    await asyncio.sleep(0)  # let every follower find the flight
    assert not any(call.done() for call in calls)

    compute.release.set()
    results = await asyncio.gather(*calls)

    assert compute.calls == 1
    assert [timing.cache for _, timing in results] == [MISS] + [COLLAPSED] * 7
    assert all(timing.batch_size == TIMING.batch_size for _, timing in results)
    for scores, _ in results:
        np.testing.assert_array_equal(scores, logits(1))
    assert value(metrics, "imgcls_cache_requests_total", outcome="collapsed") == 7


async def test_a_failed_leader_neither_poisons_nor_strands_its_followers() -> None:
    responses, compute = cache(Metrics(), ttl_s=None), Computation(logits(1), held=True)
    compute.errors = [InferenceFailed("this batch failed")]
    leader = asyncio.create_task(responses.fetch(b"k", compute, FAR))
    await compute.started.wait()
    followers = [asyncio.create_task(responses.fetch(b"k", compute, FAR)) for _ in range(3)]
    await asyncio.sleep(0)

    compute.release.set()

    with pytest.raises(InferenceFailed):
        await leader
    results = await asyncio.gather(*followers)
    assert compute.calls == 2  # one follower computed again; the others followed it
    assert sorted(timing.cache == MISS for _, timing in results) == [False, False, True]


async def test_a_cancelled_leader_hands_over_to_a_follower() -> None:
    responses, compute = cache(Metrics(), ttl_s=None), Computation(logits(1), held=True)
    leader = asyncio.create_task(responses.fetch(b"k", compute, FAR))
    await compute.started.wait()
    follower = asyncio.create_task(responses.fetch(b"k", compute, FAR))
    await asyncio.sleep(0)

    leader.cancel()  # its caller went away
    with pytest.raises(asyncio.CancelledError):
        await leader
    await asyncio.sleep(0)
    assert compute.calls == 2  # the follower leads now, and is not stranded
    compute.release.set()

    scores, timing = await follower
    np.testing.assert_array_equal(scores, logits(1))
    assert timing.cache == MISS


async def test_a_follower_leaving_does_not_cancel_the_leader() -> None:
    responses, compute = cache(Metrics(), ttl_s=None), Computation(logits(1), held=True)
    leader = asyncio.create_task(responses.fetch(b"k", compute, FAR))
    await compute.started.wait()
    gone = asyncio.create_task(responses.fetch(b"k", compute, FAR))
    late = asyncio.create_task(responses.fetch(b"k", compute, time.monotonic() + 0.01))
    staying = asyncio.create_task(responses.fetch(b"k", compute, FAR))
    await asyncio.sleep(0)

    gone.cancel()
    with pytest.raises(DeadlineExceeded):
        await late  # its own deadline, not the leader's
    assert not leader.done()
    compute.release.set()

    assert (await leader)[1].cache == MISS
    assert (await staying)[1].cache == COLLAPSED
    assert gone.cancelled()
    assert compute.calls == 1


async def test_flush_drops_every_entry_and_what_was_in_flight_is_not_stored() -> None:
    metrics = Metrics()
    responses = cache(metrics, ttl_s=None)
    await responses.fetch(b"old", Computation(logits(1)), FAR)
    held = Computation(logits(2), held=True)
    in_flight = asyncio.create_task(responses.fetch(b"new", held, FAR))
    await held.started.wait()

    responses.flush()  # the model is swapped while "new" is computed by the old one
    held.release.set()
    await in_flight  # still answers its caller

    again = Computation(logits(3))
    await responses.fetch(b"old", again, FAR)
    await responses.fetch(b"new", again, FAR)
    assert again.calls == 2
    assert value(metrics, "imgcls_cache_evictions_total", reason="flush") == 1


async def test_keys_cover_the_image_and_the_models_file_provider_and_preprocessing() -> None:
    spec = PreprocessSpec(256, 224)
    base = CacheKeys.of_model("a" * 64, "CPUExecutionProvider", spec)
    others = [
        CacheKeys.of_model("b" * 64, "CPUExecutionProvider", spec),  # rebuilt or swapped file
        CacheKeys.of_model("a" * 64, "OpenVINOExecutionProvider", spec),
        CacheKeys.of_model("a" * 64, "CPUExecutionProvider", PreprocessSpec(232, 224)),
    ]
    image = b"\xff\xd8 the same bytes"

    key = await base.of_image(image)

    assert key == await CacheKeys.of_model("a" * 64, "CPUExecutionProvider", spec).of_image(image)
    assert key != await base.of_image(image + b"!")
    for other in others:
        assert key != await other.of_image(image)
    pixels = np.zeros((224, 224, 3), np.uint8)
    assert base.of_pixels(pixels) != base.of_pixels(pixels.reshape(112, 448, 3))
    assert base.of_pixels(pixels) != await base.of_image(pixels.tobytes())


async def test_a_large_image_is_hashed_off_the_loop_to_the_same_key() -> None:
    keys = CacheKeys.of_model("a" * 64, "CPUExecutionProvider", PreprocessSpec())
    large = bytes(range(256)) * 8192  # 2 MiB
    expected = hashlib.sha256(keys.model)
    expected.update(b"image\0" + large)

    assert await keys.of_image(large) == expected.digest()


async def test_the_byte_bound_counts_at_least_the_memory_entries_really_take() -> None:
    """Entries are accounted at entry_bytes(); tracemalloc sees what they really allocate."""
    metrics, count = Metrics(), 2000
    responses = cache(metrics, entries=count, ttl_s=3600.0)
    keys = [i.to_bytes(32, "big") for i in range(count)]
    computations = [Computation(logits(i)) for i in range(7)]  # results made before tracing
    for computation in computations:
        await computation()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, key in enumerate(keys):
            await responses.fetch(key, computations[i % 7], FAR)
        real = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    accounted = value(metrics, "imgcls_cache_bytes")
    assert accounted == count * ENTRY
    assert 0.9 * accounted <= real <= accounted, (real, accounted)


@pytest.mark.parametrize("bad", [0, -1])
def test_a_cache_of_no_bytes_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        ResponseCache(bad, None, Metrics())
