"""Engines, in-process: the same model and images through PyTorch eager, TorchScript, ONNX
Runtime fp32, ORT int8 dynamic (the write-up's recipe), ORT int8 static U8S8 (ours) and ours on
the OpenVINO provider; 1 and 2 threads; batch-1 latency over interleaved rounds; throughput at
batch 1 to 32; load time, first inference, file size and peak RSS from a fresh process each.

    python -m bench.engines [--quick] [--out DIR]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.cli import run_benchmark
from bench.config import BenchConfig, model_file
from bench.engine_worker import ENGINES
from bench.plots import bar_plot, line_plot
from bench.procs import ChildFailed, JsonLineChild
from bench.progress import bar
from bench.report import Section, table
from bench.stats import fmt, summarize


@dataclass(frozen=True)
class Plan:
    models: tuple[str, ...]
    threads: tuple[int, ...]
    runs: int  # batch-1 runs per engine and thread count
    rounds: int  # ... split into this many interleaved rounds
    batches: tuple[int, ...]
    throughput_s: float  # measuring time per engine and batch size


FULL = Plan(("resnet18", "efficientnet_lite0"), (1, 2), 200, 10, (1, 2, 4, 8, 16, 32), 0.5)
QUICK = Plan(("resnet18",), (2,), 10, 2, (1, 8), 0.1)


def _worker_cmd(cfg: BenchConfig, model: str, engine: str, threads: int) -> list[str]:
    return [
        cfg.python,
        "-m",
        "bench.engine_worker",
        f"--model={model}",
        f"--engine={engine}",
        f"--threads={threads}",
        f"--fp32-file={model_file(cfg.model_dir(model), 'fp32')}",
        f"--int8-file={model_file(cfg.model_dir(model), 'int8')}",
        f"--data-dir={cfg.data_dir}",
    ]


def _prepare(cfg: BenchConfig, model: str) -> None:
    """Derived files (TorchScript, dynamic int8) are built in throwaway processes, so that no
    measured process carries the memory of building them."""
    logs = cfg.out_dir / "logs"
    logs.mkdir(exist_ok=True)
    for engine in ("torchscript", "ort_int8_dynamic"):
        child = JsonLineChild(
            [*_worker_cmd(cfg, model, engine, 1), "--prepare-only"],
            logs / f"prepare-{model}-{engine}.log",
        )
        if child.proc.wait() != 0:
            child.close()
            raise ChildFailed(f"preparing {engine} for {model} failed: see {child.log}")
        child.close()


def _spawn(
    cfg: BenchConfig, model: str, threads: int
) -> dict[str, tuple[JsonLineChild, dict[str, Any]]]:
    """One process per engine, started one after another so their load times do not overlap."""
    logs = cfg.out_dir / "logs"
    workers: dict[str, tuple[JsonLineChild, dict[str, Any]]] = {}
    for engine in ENGINES:
        child = JsonLineChild(
            _worker_cmd(cfg, model, engine, threads), logs / f"{model}-{engine}-{threads}t.log"
        )
        workers[engine] = (child, child.read())
    return workers


def _measure_threads(
    cfg: BenchConfig, plan: Plan, model: str, threads: int, progress: Any
) -> dict[str, Any]:
    workers = _spawn(cfg, model, threads)
    try:
        times: dict[str, list[float]] = {engine: [] for engine in ENGINES}
        engines = list(ENGINES)
        for round_no in range(plan.rounds):
            # Rotate the order every round: no engine always runs right after the heaviest one.
            shift = round_no % len(engines)
            for engine in engines[shift:] + engines[:shift]:
                reply = workers[engine][0].ask(
                    {"op": "time", "batch": 1, "runs": plan.runs // plan.rounds}
                )
                times[engine] += reply["ms"]
            progress.update(1)
        result: dict[str, Any] = {}
        for engine, (child, ready) in workers.items():
            result[engine] = {
                **ready,
                "batch1_ms": summarize(times[engine]).as_dict(),
                "peak_rss_batch1_mb": child.ask({"op": "rss"})["peak_rss_mb"],
            }
        if threads == max(plan.threads):
            for engine in engines:
                result[engine]["throughput"] = {}
            for batch in plan.batches:
                for engine in engines:
                    reply = workers[engine][0].ask(
                        {"op": "throughput", "batch": batch, "seconds": plan.throughput_s}
                    )
                    result[engine]["throughput"][str(batch)] = reply["images_per_s"]
                progress.update(1)
        return result
    finally:
        for child, _ in workers.values():
            child.close()


def _model_tables(model: str, per_threads: dict[str, dict[str, Any]]) -> list[str]:
    threads = sorted(per_threads, key=int)
    top = threads[-1]
    headers = ["engine", "file MB", "load s", "first inference ms", "peak RSS MB"]
    for t in threads:
        headers += [f"{t} thr p50 ms", f"{t} thr p99 ms"]
    headers.append(f"speed-up vs eager ({top} thr)")
    eager = per_threads[top]["torch_eager"]["batch1_ms"]["p50"]
    rows = []
    for engine, label in ENGINES.items():
        first = per_threads[top][engine]
        row: list[object] = [
            label,
            fmt(first["file_mb"]),
            fmt(first["load_s"], 2),
            fmt(first["first_s"] * 1000),
            fmt(first["peak_rss_batch1_mb"], 0),
        ]
        for t in threads:
            summary = per_threads[t][engine]["batch1_ms"]
            row += [fmt(summary["p50"], 2), fmt(summary["p99"], 2)]
        row.append(fmt(eager / per_threads[top][engine]["batch1_ms"]["p50"]) + "x")
        rows.append(row)
    parts = [f"### {model}: batch 1", table(headers, rows)]
    throughput = {e: per_threads[top][e].get("throughput") for e in ENGINES}
    if all(throughput.values()):
        batches = list(next(iter(throughput.values())))
        rows = [[ENGINES[e], *(fmt(throughput[e][b], 0) for b in batches)] for e in ENGINES]
        parts += [
            f"### {model}: throughput, images/s, {top} threads, by batch size",
            table(["engine", *batches], rows),
        ]
    return parts


def _plots(cfg: BenchConfig, model: str, per_threads: dict[str, Any], section: Section) -> None:
    top = max(per_threads, key=int)
    latency = {ENGINES[e].split(" (")[0]: per_threads[top][e]["batch1_ms"]["p50"] for e in ENGINES}
    section.plots.append(
        bar_plot(
            cfg.out_dir / f"engines_{model}_latency.png",
            latency,
            f"{model}: batch-1 median latency, {top} threads",
            "ms",
        )
    )
    if all("throughput" in per_threads[top][e] for e in ENGINES):
        series = {
            ENGINES[e].split(" (")[0]: (
                [int(b) for b in per_threads[top][e]["throughput"]],
                list(per_threads[top][e]["throughput"].values()),
            )
            for e in ENGINES
        }
        section.plots.append(
            line_plot(
                cfg.out_dir / f"engines_{model}_throughput.png",
                series,
                f"{model}: throughput by batch size, {top} threads",
                "batch size",
                "images/s",
                logx=True,
                logy=True,
            )
        )


def run(cfg: BenchConfig) -> Section:
    plan = QUICK if cfg.quick else FULL
    section = Section("engines", "Engines, in-process (batch-1 latency, throughput, load, memory)")
    section.add(
        f"Same images (preprocessed once), same uint8 NHWC input for every engine; one fresh "
        f"process per engine and thread count; batch-1 latency over {plan.runs} runs in "
        f"{plan.rounds} interleaved rounds (engine order rotated each round); throughput over "
        f">= {plan.throughput_s} s per batch size after one untimed run. ORT sessions: "
        "intra-op spinning off (an idle engine must not steal CPU from the one being timed). "
        "Peak RSS is the process's ru_maxrss after the batch-1 runs (imports included: torch "
        "engines carry torch). File: what the engine loads (state dict, TorchScript or ONNX). "
        "ResNet-18 has random weights here (speed only)."
    )
    models = [m for m in plan.models if cfg.has_model(m)]
    missing = sorted(set(plan.models) - set(models))
    if missing:
        section.add(f"**Skipped, no artifacts in {cfg.artifacts_dir}:** {', '.join(missing)}.")
    steps = len(models) * (len(plan.threads) * plan.rounds + len(plan.batches))
    progress = bar(steps, "engines")
    section.data = {"plan": plan.__dict__, "models": {}, "skipped": missing}
    for model in models:
        started = time.monotonic()
        _prepare(cfg, model)
        per_threads = {
            str(t): _measure_threads(cfg, plan, model, t, progress) for t in plan.threads
        }
        section.data["models"][model] = per_threads
        section.body += _model_tables(model, per_threads)
        _plots(cfg, model, per_threads, section)
        section.data["models"][model]["seconds"] = time.monotonic() - started
    progress.close()
    return section


def main(argv: list[str] | None = None) -> None:
    run_benchmark("Engines benchmark (in-process)", run, argv)


if __name__ == "__main__":
    main()
