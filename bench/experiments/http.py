"""The service over HTTP against its own pieces in-process (issue 3), on the harness of
bench.servers: throughput and latency against concurrency (closed loop) and against offered
rate (open loop), batching on and off, CPU and OpenVINO providers, with the service's CPU use
and peak RSS; then the issue-3 targets against decode + inference measured in-process with the
same settings (bench/targets.toml [http]).

    python -m bench.experiments.http [--quick] [--out DIR]
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

from bench import servers
from bench.config import BenchConfig, load_jpegs, model_file, run_benchmark
from bench.loadgen.http1 import SENDERS
from bench.report import TARGETS, Section, Summary, bar, fmt, summarize, table, verdict
from bench.servers import Load, ServerResult, breakdown
from build import sessions
from build.sessions import Provider
from service.inference.preprocess import PreprocessSpec, preprocess
from service.process import available_cpus
from service.settings import Settings

MODEL = "resnet18"  # the targets are stated for ResNet-18
HTTP = TARGETS["http"]
# "Batching on" is the service's own default, so the table measures what ships.
BATCH: int = Settings.model_fields["max_batch_size"].default
PROVIDERS: tuple[Provider, ...] = ("cpu", "openvino")


@dataclass(frozen=True)
class Plan:
    configs: tuple[tuple[Provider, int], ...]  # (provider, max batch size); 1 = batching off
    load: Load
    runs: int  # decode + inference in-process (the reference): latency runs, ...
    seconds: float  # ... and seconds of throughput


CONFIGS = tuple(itertools.product(PROVIDERS, (BATCH, 1)))
FULL = Plan(CONFIGS, Load((1, 4, 16, 64), 4.0, 1.5, (0.5, 0.8, 0.95)), 100, 3.0)
QUICK = Plan((("cpu", BATCH),), Load((1, 4), 1.0, 0.5, (0.5,)), 10, 0.5)


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

    def row(self) -> list[object]:
        ms = (fmt(self.decode_ms.p50, 2), fmt(self.decode_inference_ms.p50, 2))
        return [self.provider, *ms, fmt(self.throughput_ips), fmt(self.cpu_ms_per_image)]


Refs = dict[str, Reference]  # by provider


def decode_inference(
    model_path: Path, provider: Provider, jpegs: Sequence[bytes], runs: int, seconds: float
) -> Reference:
    """The in-process yardstick for the HTTP targets: decode + inference with no HTTP, no
    queue, the service's own preprocessing and session settings (through build.sessions).
    - latency: one image at a time, decode then run, as a caller at concurrency 1 would see it;
    - throughput: the pipeline at its best, decode in a pool (one thread per usable CPU) feeding
      batches of 8 to the session in the main thread (PIL and ORT release the GIL), for a
      fixed time."""
    threads, batch_size, spec = available_cpus(), 8, PreprocessSpec()
    sess = sessions.session(model_path, provider, threads)
    for size in (1, batch_size):  # warm both shapes (OpenVINO compiles per shape)
        sessions.run(sess, np.zeros((size, 224, 224, 3), np.uint8))
    decode_ms, total_ms = [], []
    for body in itertools.islice(itertools.cycle(jpegs), runs):
        start = time.perf_counter()
        pixels = preprocess(body, spec)
        decoded = time.perf_counter()
        sessions.run(sess, pixels[None])
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
            sessions.run(sess, batch)
            done += batch_size
        elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu0
    throughput = (done / elapsed, cpu_s * 1000 / done)
    return Reference(provider, threads, summarize(decode_ms), summarize(total_ms), *throughput, 8)


TARGET_HEADERS = [
    "server",
    f"c=1 p50 vs in-process (<= {HTTP['c1_p50_vs_inprocess_max']}x)",
    f"saturation vs in-process (>= {HTTP['saturation_vs_inprocess_min']:.0%})",
    f"peak RSS (<= {HTTP['peak_rss_mb_max']:.0f} MB)",
    f"start to ready (<= {HTTP['ready_s_max']:g} s)",
]


def target_row(result: ServerResult, ref: Reference) -> list[object]:
    """Issue 3's targets (bench/targets.toml [http]) for one configuration."""
    p50, ref_p50 = result.c1_p50() or float("nan"), ref.decode_inference_ms.p50
    saturation = result.saturation_rps / ref.throughput_ips
    rss, ready_s = max(s.server_peak_rss_mb for s in result.steps), result.ready_s
    c1 = f"{fmt(p50)} vs {fmt(ref_p50)} = {fmt(p50 / ref_p50, 2)}x "
    sat = f"{fmt(result.saturation_rps)} vs {fmt(ref.throughput_ips)} = {saturation:.0%} "
    return [
        result.name,
        c1 + verdict(p50 <= HTTP["c1_p50_vs_inprocess_max"] * ref_p50),
        sat + verdict(saturation >= HTTP["saturation_vs_inprocess_min"]),
        f"{fmt(rss, 0)} MB " + verdict(rss <= HTTP["peak_rss_mb_max"]),
        f"{fmt(ready_s, 2)} s " + verdict(ready_s <= HTTP["ready_s_max"]),
    ]


def measure(cfg: BenchConfig, plan: Plan, jpegs: list[bytes]) -> tuple[Refs, list[ServerResult]]:
    providers = sorted({p for p, _ in plan.configs})
    steps = len(plan.configs) * (len(plan.load.concurrencies) + len(plan.load.rate_fractions))
    path = model_file(cfg.model_dir(MODEL), "int8")
    refs: Refs = {}
    with bar(steps + len(providers), "http") as progress:
        for provider in providers:
            refs[provider] = decode_inference(path, provider, jpegs, plan.runs, plan.seconds)
            progress.update(1)
        specs = [servers.service_spec(cfg, MODEL, p, b) for p, b in plan.configs]
        return refs, [servers.measure_server(cfg, s, plan.load, progress) for s in specs]


def render(
    cfg: BenchConfig, plan: Plan, refs: Refs, results: list[ServerResult], section: Section
) -> None:
    fractions = ", ".join(f"{f:.0%}" for f in plan.load.rate_fractions)
    section.add(
        f"Model {MODEL} int8 (U8S8). One load-generator process per step "
        f"({SENDERS[cfg.client].about}, {section.data['images']} real JPEGs cycled, read once); "
        "the client runs on the same 2 cores and its CPU per request is shown. Closed loop: "
        f"{plan.load.duration_s} s per concurrency; open loop: Poisson arrivals at {fractions} "
        "of the configuration's best closed-loop throughput, latency from the scheduled send "
        "time. Server CPU and RSS: psutil on the server process, sampled every 50 ms. Phases: "
        "means of the service's Server-Timing header; HTTP+client = end-to-end mean minus the "
        "server's total."
    )
    section.body += [
        f"- **{r.name}**: {r.description}; ready in {fmt(r.ready_s, 2)} s" for r in results
    ]
    section.add(servers.steps_table(results))
    section.add("### In-process reference: decode + inference, same settings, no HTTP")
    headers = ["provider", "decode p50 ms", "decode + inference p50 ms", "pipeline images/s"]
    section.add(table([*headers, "pipeline CPU ms/image"], [r.row() for r in refs.values()]))
    targets = table(TARGET_HEADERS, section.data["targets"])
    section.body += ["### Issue 3 targets", targets]
    section.summary += ["### Issue 3 targets (service vs in-process decode + inference)", targets]
    section.add("### Where the time goes (measured: Server-Timing phases, CPU per request)")
    lines = [breakdown(r.name, s) for r in results for s in (r.at_concurrency(1), r.best()) if s]
    section.add("\n".join(f"- {line}" for line in lines))
    section.add(
        "Saturation is CPU-bound on 2 cores: compare the server's CPU ms/req with the "
        "in-process pipeline's CPU ms/image (the floor for decode + inference); whatever the "
        "server's CPU (cores) falls short of 2.0 went to the load generator and to other "
        "processes on the machine (see the load average at the top)."
    )
    for pct in ("p50", "p99"):
        path = cfg.out_dir / f"http_latency_vs_throughput_{pct}.png"
        title = f"Service over HTTP, {MODEL}: {pct} latency vs throughput\n"
        title += "(closed loop; points = concurrency 1, 4, 16, 64)"
        section.plots.append(servers.latency_plot(path, results, pct, title))


def run(cfg: BenchConfig) -> Section:
    plan = QUICK if cfg.quick else FULL
    section = Section("http", "The service over HTTP")
    if not cfg.built([MODEL], section):
        return section
    jpegs = load_jpegs(cfg.data_dir, 64)
    refs, results = measure(cfg, plan, jpegs)
    targets = [target_row(r, refs[r.name.split()[1]]) for r in results]  # "service cpu batch"
    section.data = {"plan": plan, "model": MODEL, "images": len(jpegs), "reference": refs}
    section.data |= {"servers": results, "targets": targets}
    render(cfg, plan, refs, results, section)
    return section


if __name__ == "__main__":
    run_benchmark(run, __doc__)
