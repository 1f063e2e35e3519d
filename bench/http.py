"""The service over HTTP, two benchmarks (sections) on one harness (bench.servers):

- http, ``python -m bench.http [--quick] [--out DIR]``: throughput and latency against
  concurrency (closed loop) and against offered rate (open loop), batching on and off, CPU and
  OpenVINO providers, with the service's CPU use and peak RSS; then the issue-3 targets against
  decode + inference measured in-process with the same settings.
- peers, ``python -m bench.peers [--quick] [--out DIR]``: on the same harness, images and run,
  the service with its defaults, FastAPI + OpenVINO native, BentoML + ONNX Runtime with adaptive
  batching, the plain FastAPI + ONNX Runtime peer and the write-up's Flask + TorchScript
  architecture (bench/peers/), closed loop at concurrency 1 to 64, server CPU per request; then
  the issue-4 targets (ResNet-18 saturation and c=1 p50 against the plain peer and the
  write-up's) and issue 10's (against the OpenVINO-native peer, and CPU per request),
  bench/targets.toml; a missed target is reported with how much, and where the time goes.
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
from bench.loadgen import SENDERS, StepResult
from bench.report import TARGETS, Section, Summary, bar, bar_plot, fmt, summarize, table, verdict
from bench.servers import Load, ServerResult
from build import sessions
from build.sessions import Provider
from service.inference.preprocess import PreprocessSpec, preprocess
from service.model import int8_weights as isa
from service.process import available_cpus
from service.settings import Settings

MODEL = "resnet18"  # the targets are stated for ResNet-18
HTTP, PEERS, LEAN = TARGETS["http"], TARGETS["peers"], TARGETS["peers_lean"]
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


def breakdown(name: str, step: StepResult) -> str:
    """Where one step's time went, measured: the Server-Timing phases, the rest of the server's
    own total, the HTTP + client share, and CPU per request on both sides."""
    phases, mean = step.phases_ms, step.latency_ms["mean"]
    text = f"{name} at {step.load}: {step.throughput_rps:.1f} req/s, mean {mean:.1f} ms"
    if "total" in phases:
        named = sum(phases.get(k, 0.0) for k in ("decode", "queue", "inference"))
        text += (
            f" = decode {fmt(phases.get('decode'))} + queue {fmt(phases.get('queue'))} + "
            f"inference {fmt(phases.get('inference'))} + other in-server "
            f"{fmt(phases['total'] - named)} + HTTP/transport/client {fmt(mean - phases['total'])}"
        )
    return (
        text + f"; server CPU {step.server_cpu_cores:.2f} cores = "
        f"{step.server_cpu_ms_per_request:.1f} ms/req, client CPU "
        f"{step.client_cpu_ms_per_request:.2f} ms/req"
    )


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


PEERS_FULL = Load((1, 4, 16, 64), 4.0, 1.5)
PEERS_QUICK = Load((1,), 1.0, 0.3)
# The servers of the peers benchmark, by the name servers.peer_spec gives them; the write-up's
# Flask comes last (the "x write-up" column divides by it).
SERVICE, OPENVINO, BENTOML = "service (defaults)", "fastapi + openvino", "bentoml + ort"
PLAIN, WRITEUP = "fastapi + ort", "flask + torchscript"
PEER_ORDER = ("fastapi_openvino", "bentoml_ort", "fastapi_ort", "flask_torchscript")


def _saturation_row(
    what: str, service: ServerResult, peer: ServerResult, wanted: float | None
) -> list[object]:
    """A saturation ratio against a peer: judged against ``wanted``, or None for information."""
    ratio = service.saturation_rps / peer.saturation_rps
    cell = f"{fmt(service.saturation_rps)} vs {fmt(peer.saturation_rps)} = {ratio:.2f}x"
    if wanted is None:
        return [what, "-", cell, "(information)"]
    return [what, f">= {wanted:g}x", cell, _judged(ratio >= wanted, f"{wanted / ratio:.2f}x")]


def peer_target_rows(results: list[ServerResult]) -> tuple[list[list[object]], bool]:
    """Issue 4's targets (bench/targets.toml [peers])."""
    by_name = {r.name: r for r in results}
    service, plain, writeup = by_name[SERVICE], by_name[PLAIN], by_name[WRITEUP]
    c1_service, c1_plain = service.c1_p50(), plain.c1_p50()
    wanted = PEERS["c1_p50_vs_plain_max"]
    c1_ok = c1_service is not None and c1_plain is not None and c1_service <= wanted * c1_plain
    miss = "" if c1_ok or not c1_plain or not c1_service else f" by {c1_service - c1_plain:.1f} ms"
    c1 = f"{fmt(c1_service)} vs {fmt(c1_plain)} ms"
    rows: list[list[object]] = [
        _saturation_row(
            "saturation vs write-up architecture",
            *(service, writeup, PEERS["saturation_vs_writeup_min"]),
        ),
        _saturation_row(
            "saturation vs plain FastAPI + ORT", service, plain, PEERS["saturation_vs_plain_min"]
        ),
        ["c=1 p50 vs plain FastAPI + ORT", f"<= {wanted:.1f}x", c1, verdict(c1_ok) + miss],
    ]
    return rows, all(str(row[3]).startswith("PASS") for row in rows)


def _c1_ratio(service: ServerResult, peer: ServerResult) -> tuple[str, float]:
    """'a vs b ms = r x' for the c=1 p50s, and r (NaN when a step is missing)."""
    mine, theirs = service.c1_p50() or float("nan"), peer.c1_p50() or float("nan")
    ratio = mine / theirs if theirs else float("nan")
    return f"{fmt(mine)} vs {fmt(theirs)} ms = {fmt(ratio, 2)}x", ratio


def _judged(ok: bool, miss: str) -> str:
    return verdict(ok) + ("" if ok else f" by {miss}")


def lean_target_rows(results: list[ServerResult], amx: bool) -> list[list[object]]:
    """Issue 10's targets (bench/targets.toml [peers_lean]) against the OpenVINO-native peer;
    the CPU bound only holds on a machine with AMX (``amx``), elsewhere its row states the
    figure. Then the BentoML peer's ratios, for information."""
    by_name = {r.name: r for r in results}
    service, openvino, bentoml = by_name[SERVICE], by_name[OPENVINO], by_name[BENTOML]
    p50_max = LEAN["c1_p50_vs_openvino_max"]
    c1_cell, c1 = _c1_ratio(service, openvino)
    best, cpu_max = service.best(), LEAN["cpu_ms_per_request_max"]
    cpu = best.server_cpu_ms_per_request
    cpu_cell = f"{fmt(cpu)} ms ({best.load}; the OpenVINO peer: "
    cpu_cell += f"{fmt(openvino.best().server_cpu_ms_per_request)} ms)"
    bento_c1_cell, _ = _c1_ratio(service, bentoml)
    return [
        _saturation_row("saturation vs FastAPI + OpenVINO native", service, openvino,
                        LEAN["saturation_vs_openvino_min"]),
        ["c=1 p50 vs FastAPI + OpenVINO native", f"<= {p50_max:g}x", c1_cell,
         _judged(c1 <= p50_max, f"{c1 - p50_max:.2f}x")],
        ["server CPU per request at saturation, on a machine with AMX", f"<= {cpu_max:g} ms",
         cpu_cell, _judged(cpu <= cpu_max, f"{cpu - cpu_max:.1f} ms") if amx else "n/a: no AMX"],
        _saturation_row("saturation vs BentoML + ORT (adaptive batching)", service, bentoml,
                        None),
        ["c=1 p50 vs BentoML + ORT (adaptive batching)", "-", bento_c1_cell, "(information)"],
    ]  # fmt: skip


def measure_peers(cfg: BenchConfig, plan: Load) -> list[ServerResult]:
    servers.prepare_flask(cfg)
    specs = [servers.service_spec(cfg, MODEL, "auto", None, name=SERVICE)]
    specs += [servers.peer_spec(cfg, peer, MODEL) for peer in PEER_ORDER]
    with bar(len(specs) * len(plan.concurrencies), "peers") as progress:
        return [servers.measure_server(cfg, spec, plan, progress) for spec in specs]


def _summary_row(result: ServerResult, writeup: float) -> list[object]:
    best = result.best()
    return [
        result.name,
        fmt(result.saturation_rps),
        f"{result.saturation_rps / writeup:.1f}x",
        fmt(result.c1_p50()),
        f"{fmt(best.server_cpu_ms_per_request)} ({best.load})",
        fmt(max(s.server_peak_rss_mb for s in result.steps), 0),
    ]


def render_peers(
    cfg: BenchConfig, plan: Load, results: list[ServerResult], section: Section
) -> None:
    section.add(
        f"Closed loop, one load-generator process per step ({SENDERS[cfg.client].about}, raw JPEG "
        f"bodies), {plan.duration_s} s per concurrency. The Flask peer runs on Flask's own "
        "development server (threaded=True), as the write-up serves it; ResNet-18 weights are "
        "random (speed only). Server CPU per request = the server's CPU (cores, psutil on its "
        "process tree, sampled every 50 ms) / its req/s over the same step."
    )
    section.add("\n".join(f"- **{r.name}**: {r.description}" for r in results))
    section.add(servers.steps_table(results))
    headers = ["server", "saturation req/s", "x write-up", "c=1 p50 ms"]
    headers += ["server CPU ms/req at saturation", "peak RSS MB"]
    writeup = results[-1].saturation_rps
    section.add(table(headers, [_summary_row(r, writeup) for r in results]))
    targets = table(["target", "wanted", "measured", "verdict"], section.data["targets"])
    section.body += ["### Issue 4 targets", targets]
    section.summary += ["### Issue 4 targets (service vs peers, same harness and run)", targets]
    lean = table(["target", "wanted", "measured", "verdict"], section.data["lean_targets"])
    amx = "has AMX" if section.data["amx"] else "has no AMX: the CPU bound is stated, not judged"
    lean_title = "### Issue 10 targets (service vs FastAPI + OpenVINO native, same run)"
    section.body += ["### Issue 10 targets", f"This machine {amx}.", lean]
    section.summary += [lean_title, f"This machine {amx}.", lean]
    # A missed target: the service at c=1 and at its best, each peer at its best.
    if not (section.data["passed"] and section.data["lean_passed"]):
        section.add("Where the time goes (measured; phases from the service's Server-Timing):")
        service, steps = results[0], [(r, r.best()) for r in results]
        steps.insert(0, (service, service.at_concurrency(1) or service.best()))
        section.add("\n".join(f"- {breakdown(r.name, s)}" for r, s in steps))
    title = "ResNet-18 over HTTP: p50 latency vs throughput\n(closed loop; points = concurrency)"
    path = cfg.out_dir / "peers_latency_vs_throughput.png"
    section.plots.append(servers.latency_plot(path, results, "p50", title))
    cpu = {r.name: r.best().server_cpu_ms_per_request for r in results}
    title = "ResNet-18 over HTTP: server CPU per request at saturation (lower is better)"
    path = cfg.out_dir / "peers_cpu_per_request.png"
    section.plots.append(bar_plot(path, cpu, title, "server CPU ms per request"))


def run_peers(cfg: BenchConfig) -> Section:
    plan = PEERS_QUICK if cfg.quick else PEERS_FULL
    section = Section("peers", "Peers on the same harness (ResNet-18, same images, same run)")
    if not cfg.built([MODEL], section):
        return section
    results = measure_peers(cfg, plan)
    rows, passed = peer_target_rows(results)
    amx = "amx_int8" in isa.cpu_flags()  # the CPU figure is for AMX's int8 tiles
    section.data = {"plan": plan, "servers": results, "amx": amx}
    section.data |= {"targets": rows, "passed": passed}
    lean = lean_target_rows(results, amx)
    lean_passed = not any(str(row[3]).startswith("MISS") for row in lean)
    section.data |= {"lean_targets": lean, "lean_passed": lean_passed}
    render_peers(cfg, plan, results, section)
    return section


if __name__ == "__main__":
    run_benchmark(run, __doc__)
