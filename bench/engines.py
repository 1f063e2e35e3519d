"""Engines, in-process: the same model and images through PyTorch eager, TorchScript, ONNX
Runtime fp32, ORT int8 dynamic (the write-up's recipe), ORT int8 static U8S8 (ours) and ours on
the OpenVINO provider; 1 and 2 threads; batch-1 latency over interleaved rounds; throughput at
batch 1 to 32; load time, first inference, file size and peak RSS from a fresh process each.

    python -m bench.engines [--quick] [--out DIR]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tqdm import tqdm

from bench.cli import run_benchmark
from bench.config import BenchConfig, model_file
from bench.engine_worker import ENGINES
from bench.plots import bar_plot, line_plot
from bench.procs import ChildFailed, JsonLineChild
from bench.progress import bar
from bench.report import Section, table
from bench.stats import Summary, fmt, summarize


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


@dataclass
class EngineResult:
    """One engine at one thread count, from its own process."""

    load_s: float
    first_s: float
    file_mb: float
    peak_rss_mb: float  # at ready
    rss_mb: float
    batch1_ms: Summary = field(default_factory=lambda: summarize([]))
    peak_rss_batch1_mb: float = float("nan")
    throughput: dict[str, float] = field(default_factory=dict)  # batch size -> images/s


PerThreads = dict[str, dict[str, EngineResult]]  # thread count -> engine -> result


def _measure_threads(
    cfg: BenchConfig, plan: Plan, model: str, threads: int, progress: tqdm
) -> dict[str, EngineResult]:
    """One process per engine, started one after another so their load times do not overlap;
    batch-1 timing in interleaved rounds; throughput by batch size at the top thread count."""
    logs = cfg.out_dir / "logs"
    children: dict[str, JsonLineChild] = {}
    try:
        results: dict[str, EngineResult] = {}
        for engine in ENGINES:
            log = logs / f"{model}-{engine}-{threads}t.log"
            children[engine] = JsonLineChild(_worker_cmd(cfg, model, engine, threads), log)
            ready = children[engine].read()
            ready.pop("event")
            results[engine] = EngineResult(**ready)
        times: dict[str, list[float]] = {engine: [] for engine in ENGINES}
        engines = list(ENGINES)
        for round_no in range(plan.rounds):
            # Rotate the order every round: no engine always runs right after the heaviest one.
            shift = round_no % len(engines)
            for engine in engines[shift:] + engines[:shift]:
                command = {"op": "time", "batch": 1, "runs": plan.runs // plan.rounds}
                times[engine] += children[engine].ask(command)["ms"]
            progress.update(1)
        for engine, result in results.items():
            result.batch1_ms = summarize(times[engine])
            result.peak_rss_batch1_mb = children[engine].ask({"op": "rss"})["peak_rss_mb"]
        if threads == max(plan.threads):
            for batch in plan.batches:
                for engine in engines:
                    command = {"op": "throughput", "batch": batch, "seconds": plan.throughput_s}
                    reply = children[engine].ask(command)
                    results[engine].throughput[str(batch)] = reply["images_per_s"]
                progress.update(1)
        return results
    finally:
        for child in children.values():
            child.close()


def _model_tables(model: str, per_threads: PerThreads) -> list[str]:
    threads = sorted(per_threads, key=int)
    top = per_threads[threads[-1]]
    headers = ["engine", "file MB", "load s", "first inference ms", "peak RSS MB"]
    for t in threads:
        headers += [f"{t} thr p50 ms", f"{t} thr p99 ms"]
    headers.append(f"speed-up vs eager ({threads[-1]} thr)")
    eager = top["torch_eager"].batch1_ms.p50
    rows = []
    for engine, label in ENGINES.items():
        first = top[engine]
        row: list[object] = [label, fmt(first.file_mb), fmt(first.load_s, 2)]
        row += [fmt(first.first_s * 1000), fmt(first.peak_rss_batch1_mb, 0)]
        for t in threads:
            summary = per_threads[t][engine].batch1_ms
            row += [fmt(summary.p50, 2), fmt(summary.p99, 2)]
        rows.append([*row, fmt(eager / first.batch1_ms.p50) + "x"])
    parts = [f"### {model}: batch 1", table(headers, rows)]
    if all(r.throughput for r in top.values()):
        batches = list(top["torch_eager"].throughput)
        rows = [[ENGINES[e], *(fmt(r.throughput[b], 0) for b in batches)] for e, r in top.items()]
        parts += [
            f"### {model}: throughput, images/s, {threads[-1]} threads, by batch size",
            table(["engine", *batches], rows),
        ]
    return parts


def _plots(cfg: BenchConfig, model: str, per_threads: PerThreads, section: Section) -> None:
    threads = max(per_threads, key=int)
    top = {ENGINES[e].split(" (")[0]: r for e, r in per_threads[threads].items()}
    section.plots.append(
        bar_plot(
            cfg.out_dir / f"engines_{model}_latency.png",
            {name: r.batch1_ms.p50 for name, r in top.items()},
            f"{model}: batch-1 median latency, {threads} threads",
            "ms",
        )
    )
    if all(r.throughput for r in top.values()):
        series = {
            name: ([int(b) for b in r.throughput], list(r.throughput.values()))
            for name, r in top.items()
        }
        section.plots.append(
            line_plot(
                cfg.out_dir / f"engines_{model}_throughput.png",
                series,
                f"{model}: throughput by batch size, {threads} threads",
                "batch size",
                "images/s",
                logx=True,
                logy=True,
            )
        )


def measure(cfg: BenchConfig, plan: Plan, models: list[str]) -> dict[str, PerThreads]:
    steps = len(models) * (len(plan.threads) * plan.rounds + len(plan.batches))
    progress = bar(steps, "engines")
    measured = {}
    for model in models:
        _prepare(cfg, model)
        measured[model] = {
            str(t): _measure_threads(cfg, plan, model, t, progress) for t in plan.threads
        }
    progress.close()
    return measured


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
    measured = measure(cfg, plan, models)
    section.data = {
        "plan": asdict(plan),
        "skipped": missing,
        "models": {
            m: {t: {e: asdict(r) for e, r in rs.items()} for t, rs in per.items()}
            for m, per in measured.items()
        },
    }
    for model, per_threads in measured.items():
        section.body += _model_tables(model, per_threads)
        _plots(cfg, model, per_threads, section)
    return section


def main(argv: list[str] | None = None) -> None:
    run_benchmark("Engines benchmark (in-process)", run, argv)


if __name__ == "__main__":
    main()
