"""The data plane in-process, to set the service's defaults from numbers, not guesses: the real
Classifier (decode pool -> batcher -> one inference thread), no HTTP, under a closed loop of
concurrent callers, per provider x decode workers x intra-op threads x max batch size. Every
combination is started first and kept; then short loads run on each in turn, round after
round, so a neighbour's burst of CPU hurts every combination alike and none pays start-up
inside its measurement. (Decode alone: see the HTTP section's in-process reference; the engine
alone by threads and batch size: the engines section.)

    python -m bench.inprocess [--quick] [--out DIR]
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from bench.cli import run_benchmark
from bench.config import BenchConfig
from bench.images import load_samples
from bench.progress import bar
from bench.report import Section, table
from bench.stats import fmt
from service.classifier import Classifier
from service.metrics import Metrics
from service.providers import OPENVINO
from service.runner import available_providers
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
    cpu_ms_per_image: float
    mean_batch: float


@dataclass(frozen=True)
class Combo:
    provider: str
    workers: int
    threads: int
    max_batch: int


@dataclass(frozen=True)
class ComboResult:
    combo: Combo
    callers: int
    served_by: str
    ready_s: float
    median: Load  # each figure's median over the rounds


async def _closed_loop(
    classifier: Classifier, images: list[bytes], callers: int, seconds: float
) -> Load:
    """``callers`` concurrent callers, each sending the next image as soon as it has an answer."""
    latencies: list[float] = []
    batch_sizes: list[int] = []
    stop_at = time.perf_counter() + seconds

    async def caller(offset: int) -> None:
        for data in itertools.islice(itertools.cycle(images), offset, None):
            if time.perf_counter() >= stop_at:
                return
            begin = time.perf_counter()
            result = await classifier.classify(data, top_k=5)
            latencies.append(time.perf_counter() - begin)
            batch_sizes.append(result.timing.batch_size)

    cpu_before, wall_before = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(i * 7) for i in range(callers)))
    cpu_s, wall_s = time.process_time() - cpu_before, time.perf_counter() - wall_before
    return Load(
        images_per_s=len(latencies) / wall_s,
        p50_ms=float(np.percentile(latencies, 50)) * 1e3,
        p99_ms=float(np.percentile(latencies, 99)) * 1e3,
        cpu_ms_per_image=cpu_s / len(latencies) * 1e3,
        mean_batch=float(np.mean(batch_sizes)),
    )


async def measure(cfg: BenchConfig, plan: Plan, images: list[bytes]) -> list[ComboResult]:
    providers = [p for p in plan.providers if p == "cpu" or OPENVINO in available_providers()]
    combos = [
        Combo(*c)
        for c in itertools.product(providers, plan.workers, plan.threads, plan.max_batches)
    ]
    progress = bar(len(combos) + plan.rounds, "inprocess")
    started: dict[Combo, tuple[Classifier, float]] = {}
    for combo in combos:
        settings = Settings(
            model_dir=cfg.model_dir(MODEL),
            provider=combo.provider,
            decode_workers=combo.workers,
            intra_op_threads=combo.threads,
            max_batch_size=combo.max_batch,
            queue_capacity=max(64, *plan.callers),
        )
        classifier = Classifier(settings, Metrics())
        begin = time.perf_counter()
        await classifier.start()
        started[combo] = (classifier, time.perf_counter() - begin)
        progress.update(1)
    runs: dict[tuple[Combo, int], list[Load]] = {(c, n): [] for c in combos for n in plan.callers}
    for _ in range(plan.rounds):
        for (combo, n), loads in runs.items():
            loads.append(await _closed_loop(started[combo][0], images, n, plan.seconds))
        progress.update(1)
    progress.close()
    for classifier, _ in started.values():
        await classifier.stop()
    return [
        ComboResult(
            combo,
            n,
            started[combo][0].meta.provider,
            started[combo][1],
            Load(**{k: statistics.median(getattr(x, k) for x in loads) for k in asdict(loads[0])}),
        )
        for (combo, n), loads in sorted(runs.items(), key=lambda item: item[0][1])
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
            *(r.callers, r.served_by, r.combo.workers, r.combo.threads, r.combo.max_batch),
            *(fmt(r.median.images_per_s, 0), fmt(r.median.p50_ms), fmt(r.median.p99_ms)),
            *(fmt(r.median.cpu_ms_per_image), fmt(r.median.mean_batch), fmt(r.ready_s, 2)),
        ]
        for r in results
    ]
    section.add(table(headers, rows))


def run(cfg: BenchConfig) -> Section:
    plan = QUICK if cfg.quick else FULL
    section = Section("inprocess", "The Classifier in-process, by settings (no HTTP)")
    if not cfg.has_model(MODEL):
        section.add(f"**Skipped: no {MODEL} artifacts in {cfg.artifacts_dir}.**")
        return section
    images = [sample.jpeg for sample in load_samples(cfg.data_dir, 64)]
    results = asyncio.run(measure(cfg, plan, images))
    section.data = {"plan": asdict(plan), "model": MODEL, "results": [asdict(r) for r in results]}
    render(plan, results, section)
    return section


def main(argv: list[str] | None = None) -> None:
    run_benchmark("The Classifier in-process, by settings", run, argv)


if __name__ == "__main__":
    main()
