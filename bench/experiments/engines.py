"""Engines, in-process: the same model and images through PyTorch eager, TorchScript, ONNX
Runtime fp32, ORT int8 dynamic (the write-up's recipe), ORT int8 static U8S8 (ours) and ours on
the OpenVINO provider; 1 and 2 threads; batch-1 latency over interleaved rounds; throughput at
batch 1 to 32; load time, first inference, file size and peak RSS from a fresh process each.

    python -m bench.experiments.engines [--quick] [--out DIR]
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import IO, Any

from tqdm import tqdm

from bench.config import BenchConfig, image_paths, model_file, run_benchmark
from bench.experiments.engine_worker import ENGINES
from bench.launch import NotReady, log_tail, stop
from bench.report import Section, Summary, bar, bar_plot, fmt, line_plot, summarize, table


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
    throughput: dict[int, float] = field(default_factory=dict)  # batch size -> images/s


PerThreads = dict[int, dict[str, EngineResult]]  # thread count -> engine -> result


class Worker(contextlib.AbstractContextManager["Worker"]):
    """A bench.engine_worker process: one JSON line answered per JSON line sent."""

    def __init__(self, cfg: BenchConfig, name: str) -> None:
        self.log = cfg.log(name)
        self._log_file: IO[str] = self.log.open("w")
        cmd, pipe = [cfg.python, "-m", "bench.experiments.engine_worker"], subprocess.PIPE
        self.proc = subprocess.Popen(cmd, stdin=pipe, stdout=pipe, stderr=self._log_file, text=True)

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None  # set by Popen(stdin=PIPE), and stdout too
        assert self.proc.stdout is not None
        with contextlib.suppress(OSError):  # if it died, readline says so, with its log
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        if line := self.proc.stdout.readline():
            return json.loads(line)  # type: ignore[no-any-return]
        raise NotReady(f"{self.log.stem} exited with {self.proc.wait()}\n{log_tail(self.log)}")

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):  # told to quit: no signal
            self.proc.wait(timeout=15)
        stop(self.proc, graceful_s=None)
        self._log_file.close()


def _model(cfg: BenchConfig, model: str) -> dict[str, Any]:
    files = {p: str(model_file(cfg.model_dir(model), p)) for p in ("fp32", "int8")}
    return {"model": model, "files": files}


def _measure(
    cfg: BenchConfig, plan: Plan, model: str, threads: int, progress: tqdm
) -> dict[str, EngineResult]:
    """One process per engine, started one after another so their load times do not overlap;
    batch-1 timing in interleaved rounds; throughput by batch size at the top thread count."""
    images = [str(path) for path in image_paths(cfg.data_dir, 32)]
    load = {"op": "load", "threads": threads, "images": images, **_model(cfg, model)}
    with ExitStack() as stack:
        workers, results = {}, {}
        for engine in ENGINES:  # each started and loaded before the next one starts
            workers[engine] = stack.enter_context(Worker(cfg, f"{model}-{engine}-{threads}t"))
            results[engine] = EngineResult(**workers[engine].ask({**load, "engine": engine}))
        times: dict[str, list[float]] = {engine: [] for engine in ENGINES}
        engines = list(ENGINES)
        for round_no in range(plan.rounds):
            # Rotate the order every round: no engine always runs right after the heaviest one.
            shift = round_no % len(engines)
            for engine in engines[shift:] + engines[:shift]:
                command = {"op": "time", "batch": 1, "runs": plan.runs // plan.rounds}
                times[engine] += workers[engine].ask(command)["ms"]
            progress.update(1)
        for engine, result in results.items():
            result.batch1_ms = summarize(times[engine])
            result.peak_rss_batch1_mb = workers[engine].ask({"op": "rss"})["peak_rss_mb"]
        for batch in plan.batches if threads == max(plan.threads) else ():
            for engine in engines:
                command = {"op": "throughput", "batch": batch, "seconds": plan.throughput_s}
                results[engine].throughput[batch] = workers[engine].ask(command)["images_per_s"]
            progress.update(1)
        return results


def measure(cfg: BenchConfig, plan: Plan, models: list[str]) -> dict[str, PerThreads]:
    steps = len(models) * (len(plan.threads) * plan.rounds + len(plan.batches))
    measured = {}
    with bar(steps, "engines") as progress:
        for model in models:
            # Derived files (TorchScript, dynamic int8) are built in throwaway processes, so
            # that no measured process carries the memory of building them.
            for engine in ("torchscript", "ort_int8_dynamic"):
                with Worker(cfg, f"prepare-{model}-{engine}") as worker:
                    worker.ask({"op": "prepare", "engine": engine, **_model(cfg, model)})
            measured[model] = {t: _measure(cfg, plan, model, t, progress) for t in plan.threads}
    return measured


def _model_tables(model: str, per_threads: PerThreads) -> list[str]:
    threads = sorted(per_threads)
    top = per_threads[threads[-1]]
    headers = ["engine", "file MB", "load s", "first inference ms", "peak RSS MB"]
    headers += [f"{t} thr {p} ms" for t in threads for p in ("p50", "p99")]
    headers.append(f"speed-up vs eager ({threads[-1]} thr)")
    rows = []
    for engine, label in ENGINES.items():
        first = top[engine]
        row: list[object] = [label, fmt(first.file_mb), fmt(first.load_s, 2)]
        row += [fmt(first.first_s * 1000), fmt(first.peak_rss_batch1_mb, 0)]
        for t in threads:
            ms = per_threads[t][engine].batch1_ms
            row += [fmt(ms.p50, 2), fmt(ms.p99, 2)]
        rows.append([*row, fmt(top["torch_eager"].batch1_ms.p50 / first.batch1_ms.p50) + "x"])
    parts = [f"### {model}: batch 1", table(headers, rows)]
    if all(r.throughput for r in top.values()):
        batches = list(top["torch_eager"].throughput)
        rows = [[ENGINES[e], *(fmt(r.throughput[b], 0) for b in batches)] for e, r in top.items()]
        parts.append(f"### {model}: throughput, images/s, {threads[-1]} threads, by batch size")
        parts.append(table(["engine", *map(str, batches)], rows))
    return parts


def _plots(cfg: BenchConfig, model: str, per_threads: PerThreads) -> list[str]:
    threads = max(per_threads)
    top = {ENGINES[e].split(" (")[0]: r for e, r in per_threads[threads].items()}
    latency = {name: r.batch1_ms.p50 for name, r in top.items()}
    title = f"{model}: batch-1 median latency, {threads} threads"
    plots = [bar_plot(cfg.out_dir / f"engines_{model}_latency.png", latency, title, "ms")]
    if all(r.throughput for r in top.values()):
        series = {n: ([*r.throughput], [*r.throughput.values()]) for n, r in top.items()}
        title = f"{model}: throughput by batch size, {threads} threads"
        path = cfg.out_dir / f"engines_{model}_throughput.png"
        plots.append(line_plot(path, series, (title, "batch size", "images/s"), logx=True))
    return plots


def writeup_cells(per_threads: PerThreads) -> dict[str, tuple[str, str]]:
    """The summary's write-up rows for ResNet-18 (bench.run_all); p50 cells show every thread
    count measured, e.g. '39.6 / 21.9' for 1 / 2 threads."""
    top = per_threads[max(per_threads)]

    def p50(e: str) -> str:
        return " / ".join(fmt(per_threads[t][e].batch1_ms.p50) for t in sorted(per_threads))

    def mb(e: str) -> str:
        return fmt(top[e].file_mb)

    def rss(e: str) -> str:
        return fmt(top[e].peak_rss_batch1_mb, 0)

    dynamic, static = "ort_int8_dynamic", "ort_int8_static"
    ours = f"ours: static U8S8 {p50(static)}; on OpenVINO {p50('openvino_int8')}"
    return {
        "eager": (p50("torch_eager"), ""),
        "torchscript": (p50("torchscript"), ""),
        "ort_fp32": (p50("ort_fp32"), ""),
        "int8": (p50(dynamic), ours),
        "size": (f"{mb('ort_fp32')} -> {mb(dynamic)}", f"ours (static): {mb(static)}"),
        "rss": (f"{rss('torch_eager')} -> {rss(dynamic)}", f"ours, engine alone: {rss(static)}"),
    }


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
    measured = measure(cfg, plan, cfg.built(plan.models, section))
    section.data = {"plan": plan, "models": measured}
    for model, per_threads in measured.items():
        section.body += _model_tables(model, per_threads)
        section.plots += _plots(cfg, model, per_threads)
    if "resnet18" in measured:
        section.writeup = writeup_cells(measured["resnet18"])
    return section


if __name__ == "__main__":
    run_benchmark(run, __doc__)
