"""Where one request's time went, by phase, and its ``Server-Timing`` header value: the same
figures for every transport (REST body and header, gRPC trailing metadata)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timing:
    decode_s: float  # call -> pixels ready (includes waiting for a free decode worker)
    queue_s: float  # enqueued -> its batch started
    inference_s: float  # run time of its batch
    batch_size: int


def slowest(timings: Sequence[Timing]) -> Timing | None:
    """A request of several images: each phase's worst image, and the largest batch."""
    if not timings:
        return None
    return Timing(
        decode_s=max(t.decode_s for t in timings),
        queue_s=max(t.queue_s for t in timings),
        inference_s=max(t.inference_s for t in timings),
        batch_size=max(t.batch_size for t in timings),
    )


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
