"""ONNX Runtime: sessions, execution providers, warm-up. The ONLY module that imports onnxruntime.

A ``Runner`` wraps one session and is called from ONE thread (the batcher's inference thread):
``run`` takes a uint8 NHWC batch and returns float32 logits, same length, same order.

Provider choice (``provider`` setting):
- ``cpu``: ORT's own CPU provider, available everywhere.
- ``openvino``: the OpenVINO provider of onnxruntime-openvino; an error where it is missing.
- ``auto``: where OpenVINO is available, build both, check that OpenVINO's top-1 agrees with the
  CPU provider's on the warm-up images (providers compile QDQ graphs differently), time both
  and keep the faster. The reason is kept for the logs, the model metadata and a metric.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.inference.postprocess import top1_agreement
from service.model.inference_streams import StreamsChoice
from service.model.providers import CPU, OPENVINO
from service.settings import Provider

log = logging.getLogger(__name__)

# Bounded values for the provider_selected{reason} metric label; the sentence is in .reason.
ReasonCode = Literal["configured", "faster", "cpu_faster", "disagrees", "unavailable"]
Batch = npt.NDArray[np.uint8]
Logits = npt.NDArray[np.float32]

# Timed runs per batch size at warm-up (after one untimed run). The median of 5 ignores one
# preempted run on a shared 2-core machine and keeps warm-up well under a second.
WARMUP_REPEATS = 5
# auto compares providers at these batch sizes only (the extremes the batcher runs), so the
# loser costs a few runs, not a full warm-up.
COMPARE_REPEATS = 3

# How many batches run side by side, decided once the provider is chosen
# (service/model/inference_streams.py).
StreamsPolicy = Callable[["Runner"], StreamsChoice]


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    provider: str  # CPUExecutionProvider | OpenVINOExecutionProvider
    code: ReasonCode
    reason: str  # a sentence for humans: why this provider


class Runner:
    """The model's sessions, its input/output names, and the latency measured at warm-up.

    With several streams there are two sessions of the same file: ``side_by_side`` (one
    stream's share of the threads, run by several inference threads at once) for batches that
    overlap under load, and the main one (every thread) for a batch that has the machine to
    itself, so a lone request is not slowed to one stream's threads."""

    def __init__(self, session: ort.InferenceSession, provider: str) -> None:
        self._session = session
        # Set by load_runner when batches may overlap (streams > 1); else the same session.
        self.side_by_side = session
        self.streams = StreamsChoice(1, "one batch at a time")
        self.provider = provider
        self.input_name: str = session.get_inputs()[0].name
        self.output_name: str = session.get_outputs()[0].name
        self.num_classes = int(session.get_outputs()[0].shape[-1])
        self.warmup_latency_s: dict[int, float] = {}

    def run(self, batch: Batch, alone: bool = True) -> Logits:
        """uint8 [N, H, W, 3] -> float32 [N, num_classes]. Raises whatever ORT raises.
        ``alone``: no other batch runs or waits, so this one may take every thread."""
        outputs = self._session_for(alone).run([self.output_name], {self.input_name: batch})
        logits = np.asarray(outputs[0], dtype=np.float32)
        if logits.shape != (batch.shape[0], self.num_classes):
            raise RuntimeError(f"the model returned shape {logits.shape} for {batch.shape[0]}")
        return logits

    def _session_for(self, alone: bool) -> ort.InferenceSession:
        return self._session if alone else self.side_by_side

    def time_batch(self, images: Batch, batch_size: int, repeats: int) -> float:
        """Median seconds of ``repeats`` runs at ``batch_size``, after one untimed run (the first
        run of a shape allocates buffers and, on OpenVINO, may compile)."""
        batch = tile(images, batch_size)
        self.run(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.run(batch)
            times.append(time.perf_counter() - start)
        self.warmup_latency_s[batch_size] = statistics.median(times)
        return self.warmup_latency_s[batch_size]

    def warm_up(self, images: Batch, batch_sizes: Sequence[int]) -> dict[int, float]:
        """Run every batch size the batcher may run; keep and return the median latencies.
        Sizes already timed (by the provider comparison) are not run again: start-up time."""
        for n in batch_sizes:
            if n not in self.warmup_latency_s:
                self.time_batch(images, n, WARMUP_REPEATS)
            if self.side_by_side is not self._session:  # its first run of a shape compiles
                self.run(tile(images, n), alone=False)
        self.warmup_latency_s = {n: self.warmup_latency_s[n] for n in sorted(batch_sizes)}
        return dict(self.warmup_latency_s)


def batch_sizes_for(max_batch_size: int) -> list[int]:
    """The batch sizes to warm and run: powers of two below the maximum, and the maximum.
    OpenVINO compiles once per new input shape (measured: 40-140 ms each), so warming every size
    up to 8 would double start-up for little gain: per-image cost barely changes between
    neighbouring sizes, and what does not fit one batch runs in the next."""
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size]
    return [*sizes, max_batch_size]


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """Threads as set, and no spinning: ORT's idle workers otherwise spin on the 2 cores that the
    decode pool needs (measured: 3x the CPU per request at light load)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = (
        3  # errors only: ORT's warnings about unused initializers are noise
    )
    return options


def create_session(
    model_path: Path, provider: str, intra_op_threads: int, streams: int = 1
) -> ort.InferenceSession:
    """A session on ``provider`` that ``streams`` threads may run at once, each batch on its
    share of the ``intra_op_threads`` budget. OpenVINO runs its own pool (ORT's intra-op
    setting does not reach it): it gets the whole budget and as many streams, i.e. infer
    requests, each on its own cores. The CPU provider's concurrent runs each use the calling
    thread plus the shared intra-op pool, so the pool is sized to one stream's share."""
    per_stream = max(1, intra_op_threads // streams)
    if provider == OPENVINO:
        options = {
            "device_type": "CPU",
            "num_of_threads": str(intra_op_threads),
            "num_streams": str(streams),
        }
        providers: list[str | tuple[str, dict[str, str]]] = [(OPENVINO, options), CPU]
    else:
        providers = [CPU]
    session = ort.InferenceSession(
        str(model_path), sess_options=session_options(per_stream), providers=providers
    )
    # ORT logs a provider it cannot create and goes on without it: a session meant for
    # OpenVINO would run on the CPU provider while every report named OpenVINO.
    if session.get_providers()[0] != provider:
        raise RuntimeError(
            f"{provider} could not be created: the session runs on {session.get_providers()}"
        )
    return session


def load_runner(
    model_path: Path,
    setting: Provider,
    intra_op_threads: int,
    images: Batch,
    batch_sizes: Sequence[int],
    streams: int | StreamsPolicy = 1,
) -> tuple[Runner, ProviderChoice]:
    """Create the session for ``setting``, choose the provider, decide the streams (a number,
    or a policy that may measure the chosen runner), warm up every batch size. The providers
    are compared on their every-thread sessions; only the chosen one gets its side-by-side
    session (start-up time: each OpenVINO session compiles every shape)."""
    runner, choice = _choose(model_path, setting, intra_op_threads, images, batch_sizes)
    runner.streams = (
        StreamsChoice(streams, f"{streams} given") if isinstance(streams, int) else streams(runner)
    )
    if runner.streams.streams > 1:
        runner.side_by_side = create_session(
            model_path, choice.provider, intra_op_threads, runner.streams.streams
        )
    runner.warm_up(images, batch_sizes)
    log.info(
        "execution provider %s (%s): %s",
        choice.provider,
        choice.code,
        choice.reason,
        extra={"provider": choice.provider, "provider_reason": choice.code},
    )
    return runner, choice


def _choose(
    model_path: Path,
    setting: Provider,
    threads: int,
    images: Batch,
    batch_sizes: Sequence[int],
) -> tuple[Runner, ProviderChoice]:
    have_openvino = OPENVINO in available_providers()
    if setting == "cpu":
        return _runner(model_path, CPU, threads), ProviderChoice(
            CPU, "configured", "provider=cpu was configured"
        )
    if setting == "openvino":
        if not have_openvino:
            raise RuntimeError(
                f"provider=openvino, but this onnxruntime offers only {available_providers()}: "
                "install onnxruntime-openvino or set IMGCLS_PROVIDER=cpu"
            )
        return _runner(model_path, OPENVINO, threads), ProviderChoice(
            OPENVINO, "configured", "provider=openvino was configured"
        )
    cpu = _runner(model_path, CPU, threads)
    if not have_openvino:
        return cpu, ProviderChoice(
            CPU, "unavailable", "auto: the OpenVINO provider is not installed, CPU is the only one"
        )
    openvino = _runner(model_path, OPENVINO, threads)
    return compare_providers(cpu, openvino, images, batch_sizes)


def _runner(model_path: Path, provider: str, threads: int) -> Runner:
    return Runner(create_session(model_path, provider, threads), provider)


def compare_providers(
    cpu: Runner, openvino: Runner, images: Batch, batch_sizes: Sequence[int]
) -> tuple[Runner, ProviderChoice]:
    """auto: OpenVINO must first give the CPU provider's answers, then be faster, to be chosen."""
    agreed, total = top1_agreement(_one_by_one(cpu, images), _one_by_one(openvino, images))
    if agreed < total:
        return cpu, ProviderChoice(
            CPU,
            "disagrees",
            f"auto: OpenVINO agreed with the CPU provider's top-1 on only {agreed}/{total} "
            "warm-up images, so the CPU provider serves",
        )
    sizes = sorted({min(batch_sizes), max(batch_sizes)})
    cpu_s = sum(cpu.time_batch(images, n, COMPARE_REPEATS) for n in sizes)
    openvino_s = sum(openvino.time_batch(images, n, COMPARE_REPEATS) for n in sizes)
    measured = (
        f"median batch latency summed over batch sizes {sizes}: OpenVINO "
        f"{openvino_s * 1e3:.1f} ms, CPU {cpu_s * 1e3:.1f} ms; top-1 agreed on {agreed}/{total}"
    )
    if openvino_s < cpu_s:
        return openvino, ProviderChoice(
            OPENVINO, "faster", f"auto: OpenVINO {cpu_s / openvino_s:.1f}x faster ({measured})"
        )
    return cpu, ProviderChoice(CPU, "cpu_faster", f"auto: CPU provider not slower ({measured})")


def _one_by_one(runner: Runner, images: Batch) -> Logits:
    """Logits image by image: batch 1 is always warmed anyway, whereas a batch of len(images)
    would make OpenVINO compile a shape the batcher may never run."""
    return np.concatenate([runner.run(images[i : i + 1]) for i in range(images.shape[0])])


def tile(images: Batch, batch_size: int) -> Batch:
    """``batch_size`` images cycled from ``images`` (contiguous, as the batcher builds them)."""
    index = np.arange(batch_size) % images.shape[0]
    return np.ascontiguousarray(images[index])


def warmup_images(height: int = 224, width: int = 224, count: int = 8) -> Batch:
    """Structured synthetic pictures (gradients, stripes, discs, checkerboards with texture):
    real-looking enough to exercise every kernel like a photo does, and available on any
    machine, unlike the labeled data. Deterministic, so the provider check is reproducible."""
    rng = np.random.default_rng(20240229)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pictures = []
    for i in range(count):
        phase = i * 0.7
        r = 127 + 100 * np.sin(x / (9 + 3 * i) + phase)
        g = 127 + 100 * np.cos(y / (7 + 2 * i) - phase)
        disc = ((x - width * (0.3 + 0.05 * i)) ** 2 + (y - height * 0.5) ** 2) < (40 + 5 * i) ** 2
        checker = ((x // (8 + 4 * i)) + (y // (8 + 4 * i))) % 2
        b = np.where(disc, 230.0, 60.0 + 120.0 * checker)
        noise = rng.normal(0.0, 12.0, size=(height, width, 3))
        picture = np.stack([r, g, b], axis=-1) + noise
        pictures.append(np.clip(picture, 0, 255).astype(np.uint8))
    return np.stack(pictures)
