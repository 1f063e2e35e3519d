"""How many batches run side by side (inference streams): as configured, or chosen at start-up
from what this machine measures.

Two streams (two batches at once, each on its share of the threads) cost less CPU per image
where inference dominates a request, and more where decoding costs as much, since a second
inference thread then competes with the decode workers. So where an image's inference costs at
least ``INFERENCE_BOUND`` times its decoding, two streams; below that, one batch at a time on
every thread. Both costs are measured at start: the same model on the same threads, and the
service's own preprocessing of a typical upload. Measured effect per machine kind:
docs/decisions/inference-streams.md.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from service.inference.preprocess import PreprocessSpec, preprocess

# Between the two kinds measured (ratio ~1 with AMX, ~5 on AVX2 alone), nearer the side where
# two streams were measured to pay.
INFERENCE_BOUND = 2.0
# A typical upload: the size of the ImageNet sample photos the benchmarks send.
_SAMPLE_SIZE = (500, 375)
_DECODE_REPEATS = 9
_INFERENCE_REPEATS = 5


@dataclass(frozen=True, slots=True)
class StreamsChoice:
    streams: int
    reason: str  # a sentence for the logs and /v1/model


def choose_streams(
    configured: int | None,
    threads: int,
    inference_cpu_s: Callable[[], float],
    decode_cpu_s: Callable[[], float],
) -> StreamsChoice:
    """``configured`` wins; with one thread there is nothing to share; else measure both costs
    (per image, CPU seconds) and compare. The measurements run only when needed."""
    if configured is not None:
        return StreamsChoice(configured, f"{configured} configured (IMGCLS_INFERENCE_STREAMS)")
    if threads < 2:
        return StreamsChoice(1, "auto: one inference thread, one batch at a time")
    inference, decode = inference_cpu_s(), decode_cpu_s()
    measured = (
        f"inference {inference * 1e3:.2f} ms of CPU per image, decode {decode * 1e3:.2f} ms "
        f"(two streams when inference >= {INFERENCE_BOUND:g}x decode)"
    )
    if inference >= INFERENCE_BOUND * decode:
        return StreamsChoice(2, f"auto: 2, inference-bound: {measured}")
    return StreamsChoice(1, f"auto: 1, decoding costs as much: {measured}")


def sample_upload(pictures: npt.NDArray[np.uint8]) -> bytes:
    """A 500x375 JPEG (quality 90) made from the warm-up pictures: available on any machine."""
    image = Image.fromarray(pictures[0]).resize(_SAMPLE_SIZE, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def decode_cpu_s(upload: bytes, spec: PreprocessSpec) -> float:
    """Median CPU seconds of the service's preprocessing of ``upload`` on this thread."""
    preprocess(upload, spec)  # first call: Pillow's plugins and buffers
    times = []
    for _ in range(_DECODE_REPEATS):
        start = time.thread_time()
        preprocess(upload, spec)
        times.append(time.thread_time() - start)
    return statistics.median(times)


def inference_cpu_s(run: Callable[[], object], batch_size: int) -> float:
    """Median CPU seconds per image of ``run`` (one batch of ``batch_size``), counted over the
    whole process: the runtime's own threads do the work. Measured at start-up, when nothing
    else in the process is busy."""
    run()
    times = []
    for _ in range(_INFERENCE_REPEATS):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return statistics.median(times) / batch_size
