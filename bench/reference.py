"""The in-process yardstick for the HTTP targets: decode + inference with no HTTP, no queue,
the service's own preprocessing and session settings (service.runner.create_session).

- latency: one image at a time, decode then run, as a caller at concurrency 1 would see it;
- throughput: the pipeline at its best, decode in a 2-thread pool feeding batches to the
  session in the main thread (PIL and ORT release the GIL), for a fixed time.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.stats import Summary, summarize
from service.cpus import available_cpus
from service.preprocess import PreprocessSpec, preprocess
from service.providers import PROVIDER_NAMES as PROVIDERS
from service.runner import create_session


@dataclass(frozen=True)
class Reference:
    provider: str
    threads: int
    decode_ms: Summary
    decode_inference_ms: Summary
    throughput_ips: float
    # process CPU over the run (a few decodes run ahead of the count: a slight overestimate)
    cpu_ms_per_image: float
    batch_size: int


def decode_inference(
    model_path: Path,
    provider: str,
    jpegs: Sequence[bytes],
    runs: int,
    seconds: float,
    batch_size: int = 8,
) -> Reference:
    threads = available_cpus()
    session = create_session(model_path, PROVIDERS[provider], threads)
    name = session.get_inputs()[0].name
    spec = PreprocessSpec()
    for size in (1, batch_size):  # warm both shapes (OpenVINO compiles per shape)
        session.run(None, {name: np.zeros((size, 224, 224, 3), np.uint8)})
    decode_ms, total_ms = [], []
    for body in itertools.islice(itertools.cycle(jpegs), runs):
        start = time.perf_counter()
        pixels = preprocess(body, spec)
        decoded = time.perf_counter()
        session.run(None, {name: pixels[None]})
        decode_ms.append((decoded - start) * 1000)
        total_ms.append((time.perf_counter() - start) * 1000)
    done, start, cpu0 = 0, time.perf_counter(), time.process_time()
    bodies = itertools.cycle(jpegs)
    with ThreadPoolExecutor(threads) as pool:
        # Two batches of decodes in flight: the pool works while the session runs.
        ahead = deque(pool.submit(preprocess, next(bodies), spec) for _ in range(2 * batch_size))
        while time.perf_counter() - start < seconds:
            batch = np.stack([ahead.popleft().result() for _ in range(batch_size)])
            ahead.extend(pool.submit(preprocess, next(bodies), spec) for _ in range(batch_size))
            session.run(None, {name: batch})
            done += batch_size
        elapsed = time.perf_counter() - start
        cpu_s = time.process_time() - cpu0
    return Reference(
        provider,
        threads,
        summarize(decode_ms),
        summarize(total_ms),
        done / elapsed,
        cpu_s * 1000 / done,
        batch_size,
    )
