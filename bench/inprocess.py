"""In-process measurements of the data plane, to set its defaults from numbers, not guesses.

    .venv/bin/python -m bench.inprocess                  # everything, ~10 min on 2 cores
    .venv/bin/python -m bench.inprocess --sections engine --model-dir model_artifacts/resnet18

Sections:
- decode: ms per image of service.preprocess on real JPEGs (~500x375 ImageNet photos when
  ../shared/data is there, else a synthesized 500x375 JPEG).
- engine: ONNX Runtime alone, per provider x intra-op threads x batch size: session load time,
  first run of each shape, median batch latency, images/s.
- e2e: the real Classifier (decode pool -> batcher -> one inference thread) under a closed
  loop of concurrent callers, per provider x decode_workers x intra_op_threads x max batch:
  images/s, p50/p99 latency, process CPU ms per image.

Absolute numbers drift on shared machines: compare ratios within one run, and check `uptime`.
Prints markdown tables; writes bench/results/inprocess.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import os
import statistics
import time
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from bench.images import load_samples
from service.classifier import Classifier, find_model_dir
from service.manifest import load_manifest, verified_model_path
from service.metrics import Metrics
from service.preprocess import PreprocessSpec, preprocess
from service.runner import CPU, OPENVINO, Runner, available_providers, create_session
from service.settings import Settings

RESULTS = Path("bench/results/inprocess.json")


def bench_decode(images: list[bytes], repeats: int) -> dict[str, float]:
    spec = PreprocessSpec()
    sizes = [Image.open(io.BytesIO(b)).size for b in images]
    times = []
    for data in itertools.islice(itertools.cycle(images), repeats):
        start = time.perf_counter()
        preprocess(data, spec)
        times.append(time.perf_counter() - start)
    result = {
        "images": len(images),
        "median_width": statistics.median(w for w, _ in sizes),
        "median_height": statistics.median(h for _, h in sizes),
        "median_ms": statistics.median(times) * 1e3,
        "p90_ms": float(np.percentile(times, 90)) * 1e3,
    }
    print(
        f"\n## decode\n\n{len(images)} JPEGs, median {result['median_width']:.0f}x"
        f"{result['median_height']:.0f}: median {result['median_ms']:.2f} ms, "
        f"p90 {result['p90_ms']:.2f} ms per image (one core)"
    )
    return result


def bench_engine(model_path: Path, batches: list[int], repeats: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(max(batches), 224, 224, 3), dtype=np.uint8)
    rows: list[dict[str, object]] = []
    print(
        "\n## engine\n\n| provider | threads | load ms | batch | first ms | median ms | img/s "
        "| CPU ms/img |\n|---|---|---|---|---|---|---|---|"
    )
    for provider in [p for p in (CPU, OPENVINO) if p in available_providers()]:
        for threads in (1, 2):
            start = time.perf_counter()
            runner = Runner(create_session(model_path, provider, threads), provider)
            load_ms = (time.perf_counter() - start) * 1e3
            for n in batches:
                batch = np.ascontiguousarray(images[:n])
                first = _timed(runner, batch)
                cpu_before = time.process_time()
                median = statistics.median(_timed(runner, batch) for _ in range(repeats))
                cpu_ms = (time.process_time() - cpu_before) / repeats * 1e3
                row: dict[str, object] = {
                    "provider": provider,
                    "threads": threads,
                    "load_ms": load_ms,
                    "batch": n,
                    "first_ms": first * 1e3,
                    "median_ms": median * 1e3,
                    "images_per_s": n / median,
                    "cpu_ms_per_image": cpu_ms / n,
                }
                rows.append(row)
                print(
                    f"| {provider[:-17]} | {threads} | {load_ms:.0f} | {n} | {first * 1e3:.1f} "
                    f"| {median * 1e3:.2f} | {n / median:.0f} | {cpu_ms / n:.2f} |"
                )
    return rows


def _timed(runner: Runner, batch: npt.NDArray[np.uint8]) -> float:
    start = time.perf_counter()
    runner.run(batch)
    return time.perf_counter() - start


async def _closed_loop(
    classifier: Classifier, images: list[bytes], callers: int, seconds: float
) -> dict[str, float]:
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
    return {
        "images_per_s": len(latencies) / wall_s,
        "p50_ms": float(np.percentile(latencies, 50)) * 1e3,
        "p99_ms": float(np.percentile(latencies, 99)) * 1e3,
        "cpu_ms_per_image": cpu_s / len(latencies) * 1e3,
        "mean_batch": float(np.mean(batch_sizes)),
    }


Combo = tuple[Literal["cpu", "openvino"], int, int, int]  # provider, workers, threads, batch
_E2E_KEYS = ("images_per_s", "p50_ms", "p99_ms", "cpu_ms_per_image", "mean_batch")


async def _e2e_rounds(
    model_dir: Path,
    combos: list[Combo],
    images: list[bytes],
    callers: list[int],
    seconds: float,
    rounds: int,
) -> dict[tuple[Combo, int], tuple[float, str, list[dict[str, float]]]]:
    """Start one classifier per combination, keep them all, then run short loads on each in
    turn, round after round: a neighbour's burst of CPU hurts every combination alike, and no
    combination pays start-up inside its measurement. Idle ones cost nothing (no spinning)."""
    started: dict[Combo, tuple[Classifier, float]] = {}
    for combo in combos:
        classifier = Classifier(_settings(model_dir, combo, max(callers)), Metrics())
        begin = time.perf_counter()
        await classifier.start()
        started[combo] = (classifier, time.perf_counter() - begin)
    runs: dict[tuple[Combo, int], list[dict[str, float]]] = {
        (c, n): [] for c in combos for n in callers
    }
    for round_index in range(rounds):
        for (combo, n), results in runs.items():
            classifier = started[combo][0]
            results.append(await _closed_loop(classifier, images, n, seconds))
        print(f"e2e round {round_index + 1}/{rounds}, load {os.getloadavg()}", flush=True)
    for classifier, _ in started.values():
        await classifier.stop()
    return {
        (c, n): (started[c][1], started[c][0].meta.provider, results)
        for (c, n), results in runs.items()
    }


def bench_e2e(
    model_dir: Path,
    images: list[bytes],
    callers: list[int],
    seconds: float,
    max_batches: list[int],
    rounds: int,
    providers: list[Literal["cpu", "openvino"]],
) -> list[dict[str, object]]:
    combos: list[Combo] = list(itertools.product(providers, (1, 2), (1, 2), max_batches))
    measured = asyncio.run(_e2e_rounds(model_dir, combos, images, callers, seconds, rounds))
    print(
        f"\n## e2e (closed loop, {seconds:g} s x {rounds} interleaved rounds, medians)\n\n"
        "| callers | provider | decode workers | intra-op threads | max batch | img/s | p50 ms "
        "| p99 ms | CPU ms/img | mean batch | ready s |\n" + "|---" * 11 + "|"
    )
    rows: list[dict[str, object]] = []
    for (combo, n), (ready_s, served_by, results) in sorted(
        measured.items(), key=lambda i: i[0][1]
    ):
        median = {k: statistics.median(r[k] for r in results) for k in _E2E_KEYS}
        provider, workers, threads, batch = combo
        row: dict[str, object] = {
            "callers": n,
            "provider": provider,
            "workers": workers,
            "threads": threads,
            "max_batch": batch,
            "served_by": served_by,
            "ready_s": ready_s,
        }
        rows.append(row | median)
        print(
            f"| {n} | {provider} | {workers} | {threads} | {batch} | {median['images_per_s']:.0f} "
            f"| {median['p50_ms']:.1f} | {median['p99_ms']:.1f} | {median['cpu_ms_per_image']:.1f} "
            f"| {median['mean_batch']:.1f} | {ready_s:.2f} |"
        )
    return rows


def _settings(model_dir: Path, combo: Combo, callers: int) -> Settings:
    provider, workers, threads, max_batch = combo
    return Settings(
        model_dir=model_dir,
        provider=provider,
        decode_workers=workers,
        intra_op_threads=threads,
        max_batch_size=max_batch,
        queue_capacity=max(64, callers),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--artifacts-dir", type=Path, default=Path("model_artifacts"))
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("IMGCLS_DATA_DIR", "../shared/data"))
    )
    parser.add_argument("--sections", default="decode,engine,e2e")
    parser.add_argument("--seconds", type=float, default=1.5, help="per combination and round")
    parser.add_argument("--callers", default="1,32", help="closed-loop concurrency levels")
    parser.add_argument("--max-batches", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--providers", default="", help="e2e: cpu,openvino (default: all here)")
    args = parser.parse_args()
    model_dir = args.model_dir or find_model_dir(args.artifacts_dir)
    manifest = load_manifest(model_dir)
    print(f"model {manifest.model.name} {manifest.model.version}; load average {os.getloadavg()}")
    images = [sample.jpeg for sample in load_samples(args.data_dir, 64)]
    sections = set(args.sections.split(","))
    results: dict[str, object] = {"model": manifest.model.name, "load": os.getloadavg()}
    if "decode" in sections:
        results["decode"] = bench_decode(images, repeats=300)
    if "engine" in sections:
        path = verified_model_path(model_dir, manifest, "int8")
        results["engine"] = bench_engine(path, [1, 2, 4, 8], repeats=15)
    if "e2e" in sections:
        batches = [int(n) for n in args.max_batches.split(",")]
        providers: list[Literal["cpu", "openvino"]] = ["cpu"]
        if OPENVINO in available_providers():
            providers.append("openvino")
        if args.providers:
            providers = [p for p in providers if p in args.providers.split(",")]
        results["e2e"] = bench_e2e(
            model_dir,
            images,
            [int(n) for n in args.callers.split(",")],
            args.seconds,
            batches,
            args.rounds,
            providers,
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
