"""The response cache: one image's scores (logits, never the formatted answer, so any top_k is
answered from them), by a key that covers everything the scores depend on.

- A key is the SHA-256 of the model's identity (the served file's sha256, the execution
  provider, the preprocessing) and of the image bytes (or the decoded pixels and their shape):
  a rebuilt or swapped model never finds another model's entry. ``flush()`` (a model swap)
  frees the memory, and a computation begun before it stores nothing.
- Bounded in bytes (each entry at its measured size), least recently used evicted first, with
  an optional TTL. Errors are never stored; stored scores are read-only copies.
- Single flight: a key is computed once at a time. The others (followers) wait for it, each
  within its own deadline and cancellable alone. Only a success is shared: when the leader
  fails or is cancelled its followers wake, and one of them computes.
- Everything runs on the event loop, so nothing here needs a lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from cachetools import TTLCache

from service.errors import DeadlineExceeded
from service.inference.preprocess import Pixels, PreprocessSpec
from service.observability.metrics import Metrics
from service.observability.timing import COLLAPSED, HIT, MISS, Timing

__all__ = ["CacheKeys", "Compute", "ResponseCache", "Scored"]

Logits = npt.NDArray[np.float32]
Scored = tuple[Logits, Timing]  # one image's scores and where their computation's time went
Compute = Callable[[], Awaitable[Scored]]

# Python's bookkeeping per entry beside the scores themselves (the key, the array object, the
# cache's dicts and its LRU/TTL link): 461 bytes measured with tracemalloc, rounded up
# (tests/unit/test_response_cache.py checks the bound against real allocations).
ENTRY_OVERHEAD_BYTES = 512
# Hashing runs at ~1 GB/s: below this an image is hashed on the loop (<0.3 ms), above it in a
# thread (hashlib releases the GIL), so a 20 MB upload never stalls the loop.
_HASH_ON_LOOP_BYTES = 256 * 1024
_NOTHING_RAN = Timing(decode_s=0.0, queue_s=0.0, inference_s=0.0, batch_size=0, cache=HIT)


@dataclass(frozen=True, slots=True)
class CacheKeys:
    """The keys of one served model's scores."""

    model: bytes  # SHA-256 of the model's identity: every key starts from it

    @classmethod
    def of_model(cls, file_sha256: str, provider: str, spec: PreprocessSpec) -> CacheKeys:
        identity = f"{file_sha256}|{provider}|resize={spec.resize_size}|crop={spec.crop_size}"
        return cls(hashlib.sha256(identity.encode()).digest())

    async def of_image(self, data: bytes) -> bytes:
        """The key of an encoded image (its bytes, as sent)."""
        if len(data) <= _HASH_ON_LOOP_BYTES:
            return self._key(b"image", data)
        return await asyncio.to_thread(self._key, b"image", data)

    def of_pixels(self, pixels: Pixels) -> bytes:
        """The key of decoded pixels (a model-sized array: ~150 KB, hashed on the loop)."""
        shape = "x".join(map(str, pixels.shape)).encode()
        return self._key(b"pixels:" + shape, np.ascontiguousarray(pixels).data)

    def _key(self, kind: bytes, data: Any) -> bytes:
        digest = hashlib.sha256(self.model)
        digest.update(kind + b"\0")
        digest.update(data)
        return digest.digest()


class _Entries(TTLCache[bytes, Logits]):
    """cachetools' LRU cache with a TTL, sized in bytes, counting what it evicts."""

    def __init__(
        self, max_bytes: int, ttl_s: float, metrics: Metrics, clock: Callable[[], float]
    ) -> None:
        super().__init__(max_bytes, ttl_s, timer=clock, getsizeof=entry_bytes)
        self._evictions = metrics.cache_evictions

    def popitem(self) -> tuple[bytes, Logits]:
        item = super().popitem()  # (expires what is due first: counted by expire)
        self._evictions.labels(reason="size").inc()
        return item

    def expire(self, time: float | None = None) -> list[tuple[bytes, Logits]]:
        expired = super().expire(time)
        if expired:
            self._evictions.labels(reason="expired").inc(len(expired))
        return expired


def entry_bytes(logits: Logits) -> int:
    return int(logits.nbytes) + ENTRY_OVERHEAD_BYTES


class ResponseCache:
    def __init__(
        self,
        max_bytes: int,
        ttl_s: float | None,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,  # the TTL's clock
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("the response cache needs max_bytes > 0 (0 means: no cache)")
        self._max_bytes = max_bytes
        self._ttl_s = math.inf if ttl_s is None else ttl_s
        self._metrics = metrics
        self._clock = clock
        self._entries = self._empty()
        self._flights: dict[bytes, asyncio.Future[Scored]] = {}
        self._generation = 0  # bumped by flush(): older computations store nothing
        metrics.cache_capacity_bytes.set(max_bytes)
        metrics.cache_bytes.set_function(lambda: self._entries.currsize)
        metrics.cache_entries.set_function(lambda: len(self._entries))

    def flush(self) -> None:
        """Drop every entry (the model changed). Computations in flight still answer their
        callers, but store nothing."""
        self._metrics.cache_evictions.labels(reason="flush").inc(len(self._entries))
        self._entries = self._empty()
        self._generation += 1

    def _empty(self) -> _Entries:
        return _Entries(self._max_bytes, self._ttl_s, self._metrics, self._clock)

    async def fetch(self, key: bytes, compute: Compute, deadline: float) -> Scored:
        """The scores for ``key``: stored, shared with the identical computation in flight, or
        computed by ``compute`` (and stored). Raises what ``compute`` raises, or
        DeadlineExceeded when ``deadline`` (time.monotonic()) passes while waiting."""
        while True:
            stored = self._entries.get(key)
            if stored is not None:
                self._count("hit")
                return stored, _NOTHING_RAN
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, compute)
            shared = await _follow(flight, deadline)
            if shared is not None:
                self._count("collapsed")
                return shared[0], replace(shared[1], cache=COLLAPSED)
            # The leader failed or was cancelled: look again (the cache, or a new leader).

    async def _lead(self, key: bytes, compute: Compute) -> Scored:
        flight: asyncio.Future[Scored] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        generation = self._generation
        self._count("miss")
        try:
            logits, timing = await compute()
        except BaseException:
            self._land(key, flight, None)  # followers wake and one of them computes
            raise
        scores = _frozen_copy(logits)
        if generation == self._generation and entry_bytes(scores) <= self._max_bytes:
            self._entries[key] = scores
        self._land(key, flight, (scores, timing))
        return scores, replace(timing, cache=MISS)

    def _land(self, key: bytes, flight: asyncio.Future[Scored], result: Scored | None) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if result is None:
            flight.cancel()  # no exception on the future: nothing to "retrieve", nothing shared
        else:
            flight.set_result(result)

    def _count(self, outcome: str) -> None:
        self._metrics.cache_requests.labels(outcome=outcome).inc()


async def _follow(flight: asyncio.Future[Scored], deadline: float) -> Scored | None:
    """Wait for the leader's result; None if it failed. asyncio.wait, not an await of the
    future: a follower that times out or is cancelled must not cancel the leader's flight."""
    done, _ = await asyncio.wait([flight], timeout=max(0.0, deadline - time.monotonic()))
    if not done:
        raise DeadlineExceeded("the request timed out waiting for an identical one in flight")
    return None if flight.cancelled() else flight.result()


def _frozen_copy(logits: Logits) -> Logits:
    """A read-only copy that owns its memory: the runner's output row is a view that would
    keep its whole batch alive, and a shared array must not be changed by any caller."""
    scores = np.array(logits, dtype=np.float32, copy=True)
    scores.flags.writeable = False
    return scores
