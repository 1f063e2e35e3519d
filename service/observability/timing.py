"""Where one request's time went, by phase, and its ``Server-Timing`` header value: the same
figures for every transport (REST body and header, gRPC trailing metadata). With the response
cache on (service/inference/cache.py), also where its answer came from: the ``Cache-Status``
header value (RFC 9211)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CACHE_NAME = "imgcls"  # the cache's name in Cache-Status


@dataclass(frozen=True, slots=True)
class CacheOutcome:
    """How many of a request's images the response cache answered (``hits``), shared with an
    identical request already computing (``collapsed``), or had computed (``misses``)."""

    hits: int = 0
    collapsed: int = 0
    misses: int = 0

    def __add__(self, other: CacheOutcome) -> CacheOutcome:
        return CacheOutcome(
            self.hits + other.hits, self.collapsed + other.collapsed, self.misses + other.misses
        )


HIT, COLLAPSED, MISS = CacheOutcome(hits=1), CacheOutcome(collapsed=1), CacheOutcome(misses=1)


@dataclass(frozen=True, slots=True)
class Timing:
    decode_s: float  # call -> pixels ready (includes waiting for a free decode worker)
    queue_s: float  # enqueued -> its batch started
    inference_s: float  # run time of its batch (0 with batch_size 0: a cache hit, nothing ran)
    batch_size: int
    cache: CacheOutcome | None = None  # None: the response cache is off


def slowest(timings: Sequence[Timing]) -> Timing | None:
    """A request of several images: each phase's worst image, and the largest batch."""
    if not timings:
        return None
    return Timing(
        decode_s=max(t.decode_s for t in timings),
        queue_s=max(t.queue_s for t in timings),
        inference_s=max(t.inference_s for t in timings),
        batch_size=max(t.batch_size for t in timings),
        cache=_total(t.cache for t in timings),
    )


def _total(outcomes: Iterable[CacheOutcome | None]) -> CacheOutcome | None:
    known = [o for o in outcomes if o is not None]
    return sum(known[1:], known[0]) if known else None


def cache_status(timing: Timing | None) -> str | None:
    """The ``Cache-Status`` header value (RFC 9211), or None when the cache was not asked.
    ``hit`` only when the cache answered every image; otherwise ``fwd=miss``, with
    ``collapsed`` when every image it did not answer came from an identical request in
    flight, and for several images a ``detail`` with the counts."""
    outcome = timing.cache if timing is not None else None
    if outcome is None:
        return None
    if outcome.collapsed == outcome.misses == 0:
        return f"{CACHE_NAME}; hit"
    status = f"{CACHE_NAME}; fwd=miss"
    if outcome.misses == 0:
        status += "; collapsed"
    if outcome.hits + outcome.collapsed + outcome.misses > 1:
        counts = f"hit={outcome.hits} collapsed={outcome.collapsed} miss={outcome.misses}"
        status += f'; detail="{counts}"'
    return status


def server_timing(timing: Timing | None, total_s: float) -> str:
    """The ``Server-Timing`` header value: the phases (when the request reached them) and the
    total time to the response."""
    parts = []
    if timing is not None:
        parts += [
            f"decode;dur={timing.decode_s * 1e3:.2f}",
            f"queue;dur={timing.queue_s * 1e3:.2f}",
            f"inference;dur={timing.inference_s * 1e3:.2f}",
            f'batch_size;desc="{timing.batch_size}"',
        ]
    parts.append(f"total;dur={total_s * 1e3:.2f}")
    return ", ".join(parts)
