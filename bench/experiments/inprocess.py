"""The data plane in-process, to set the service's defaults from numbers, not guesses: the real
Classifier (decode pool -> batcher -> one inference thread), no HTTP, under a closed loop of
concurrent callers, per provider x decode workers x intra-op threads x max batch size. Every
combination is started first and kept; then short loads run on each in turn, round after
round, so a neighbour's burst of CPU hurts every combination alike and none pays start-up
inside its measurement. (Decode alone: see the HTTP section's in-process reference; the engine
alone by threads and batch size: the engines section.)

    python -m bench.experiments.inprocess [--quick] [--out DIR]
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import asdict, dataclass

from bench.config import BenchConfig, load_jpegs, run_benchmark
from bench.loadgen.loops import closed_loop
from bench.loadgen.outcomes import Outcome, measure_step
from bench.report import Section, bar, fmt, median_of, table
from build.sessions import available_providers
from service.inference.classifier import Classifier
from service.observability.metrics import Metrics
from service.settings import Settings

MODEL = "resnet18"


@dataclass(frozen=True)
class Plan:
    providers: tuple[str, ...]
    workers: tuple[int, ...]
    threads: tuple[int, ...]
    max_batches: tuple[int, ...]
    callers: tuple[int, ...]
    seconds: float  # per combination and round
    rounds: int


FULL = Plan(("cpu", "openvino"), (1, 2), (1, 2), (1, 4, 8), (1, 32), 1.5, 8)
QUICK = Plan(("cpu",), (2,), (2,), (4,), (1, 8), 0.3, 1)


@dataclass(frozen=True)
class Load:
    images_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_image: float  # the whole process's CPU: the Classifier's and the callers'
    mean_batch: float


@dataclass(frozen=True)
class Combo:
    """The settings that vary, named as in service.settings.Settings."""

    provider: str
    decode_workers: int
    intra_op_threads: int
    max_batch_size: int


@dataclass(frozen=True)
class ComboResult:
    combo: Combo
    callers: int
    served_by: str
    ready_s: float
    median: Load  # each figure's median over the rounds


async def _load(classifier: Classifier, images: list[bytes], callers: int, seconds: float) -> Load:
    """``callers`` concurrent callers, each sending the next image as soon as it has an answer:
    the load generator's closed loop, the Classifier called in-process instead of over HTTP."""

    async def post(body: bytes, since: float) -> Outcome:
        batch = (await classifier.classify(body, top_k=5)).timing.batch_size
        return Outcome((time.perf_counter() - since) * 1000, 200, {"batch": float(batch)})

    step = await measure_step(closed_loop(post, images, callers, seconds), "closed")
    latency, cpu_ms = step.latency_ms, step.client_cpu_ms_per_request
    return Load(
        step.throughput_rps, latency["p50"], latency["p99"], cpu_ms, step.phases_ms["batch"]
    )


async def _start(cfg: BenchConfig, combo: Combo, queue: int) -> tuple[Classifier, float]:
    """A started Classifier with the combination's settings, and its start time in seconds."""
    settings = Settings(model_dir=cfg.model_dir(MODEL), queue_capacity=queue, **asdict(combo))
    classifier = Classifier(settings, Metrics())
    begin = time.perf_counter()
    await classifier.start()
    return classifier, time.perf_counter() - begin


async def measure(cfg: BenchConfig, plan: Plan, images: list[bytes]) -> list[ComboResult]:
    providers = [p for p in plan.providers if p in available_providers()]
    product = itertools.product(providers, plan.workers, plan.threads, plan.max_batches)
    combos = [Combo(*c) for c in product]
    started: dict[Combo, tuple[Classifier, float]] = {}
    runs: dict[tuple[Combo, int], list[Load]] = {(c, n): [] for c in combos for n in plan.callers}
    with bar(len(combos) + plan.rounds, "inprocess") as progress:
        for combo in combos:
            started[combo] = await _start(cfg, combo, max(64, *plan.callers))
            progress.update(1)
        for _ in range(plan.rounds):
            for (combo, n), loads in runs.items():
                loads.append(await _load(started[combo][0], images, n, plan.seconds))
            progress.update(1)
    providers_of = {combo: classifier.meta.provider for combo, (classifier, _) in started.items()}
    for classifier, _ in started.values():
        await classifier.stop()  # a stopped Classifier has no model: its provider is read before
    return [
        ComboResult(c, n, providers_of[c], started[c][1], median_of(loads))
        for (c, n), loads in sorted(runs.items(), key=lambda item: item[0][1])
    ]


def render(plan: Plan, results: list[ComboResult], section: Section) -> None:
    section.add(
        f"Closed loop of concurrent callers on the real Classifier, {plan.seconds:g} s x "
        f"{plan.rounds} interleaved round(s) per combination; medians over the rounds. "
        "CPU: the whole process's, per image."
    )
    headers = ["callers", "provider", "decode workers", "intra-op threads", "max batch"]
    headers += ["img/s", "p50 ms", "p99 ms", "CPU ms/img", "mean batch", "ready s"]
    rows = [
        [
            *(r.callers, r.served_by, r.combo.decode_workers, r.combo.intra_op_threads),
            r.combo.max_batch_size,
            *(fmt(r.median.images_per_s, 0), fmt(r.median.p50_ms), fmt(r.median.p99_ms)),
            *(fmt(r.median.cpu_ms_per_image), fmt(r.median.mean_batch), fmt(r.ready_s, 2)),
        ]
        for r in results
    ]
    section.add(table(headers, rows))


def run(cfg: BenchConfig) -> Section:
    plan = QUICK if cfg.quick else FULL
    section = Section("inprocess", "The Classifier in-process, by settings (no HTTP)")
    if not cfg.built([MODEL], section):
        return section
    images = load_jpegs(cfg.data_dir, 64)
    results = asyncio.run(measure(cfg, plan, images))
    section.data = {"plan": plan, "model": MODEL, "results": results}
    render(plan, results, section)
    return section


if __name__ == "__main__":
    run_benchmark(run, __doc__)
