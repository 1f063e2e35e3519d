"""The service over HTTP: throughput and latency against concurrency (closed loop) and
against offered rate (open loop), batching on and off, CPU and OpenVINO providers, with the
service's CPU use and peak RSS; then the issue-3 targets against decode + inference measured
in-process with the same settings.

    python -m bench.http [--quick] [--out DIR]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.cli import run_benchmark
from bench.config import BenchConfig
from bench.images import load_samples
from bench.loadgen import CLIENTS
from bench.plots import line_plot
from bench.progress import bar
from bench.reference import decode_inference
from bench.report import Section, table
from bench.servers import (
    at_concurrency,
    closed_steps,
    load_step,
    running,
    saturation,
    service_spec,
)
from bench.stats import fmt
from service.settings import Settings

MODEL = "resnet18"  # the targets are stated for ResNet-18
# "Batching on" is the service's own default, so the table measures what ships.
BATCH: int = Settings.model_fields["max_batch_size"].default


@dataclass(frozen=True)
class Plan:
    configs: tuple[tuple[str, int], ...]  # (provider, max batch size); 1 = batching off
    concurrencies: tuple[int, ...]
    rate_fractions: tuple[float, ...]  # open-loop offered rates, as fractions of saturation
    duration_s: float
    warmup_s: float
    reference_runs: int
    reference_s: float


FULL = Plan(
    (("cpu", BATCH), ("cpu", 1), ("openvino", BATCH), ("openvino", 1)),
    (1, 4, 16, 64),
    (0.5, 0.8, 0.95),
    4.0,
    1.5,
    100,
    3.0,
)
QUICK = Plan((("cpu", BATCH),), (1, 4), (0.5,), 1.0, 0.5, 10, 0.5)


def server_cpu_ms_per_request(step: dict[str, Any]) -> float:
    rps = step["throughput_rps"]
    return float(step["server_cpu_cores"] * 1000 / rps) if rps else float("nan")


def breakdown(name: str, step: dict[str, Any]) -> str:
    """Where one step's time went, measured: the Server-Timing phases, the rest of the server's
    own total, the HTTP + client share, and CPU per request on both sides."""
    phases = step["phases_ms"]
    mean = step["latency_ms"]["mean"]
    load = f"c={step['concurrency']}" if step["mode"] == "closed" else f"{step['offered_rate']}/s"
    text = f"{name} at {load}: {step['throughput_rps']:.1f} req/s, mean {mean:.1f} ms"
    if "total" in phases:
        named = sum(phases.get(k, 0.0) for k in ("decode", "queue", "inference"))
        text += (
            f" = decode {fmt(phases.get('decode'))} + queue {fmt(phases.get('queue'))} + "
            f"inference {fmt(phases.get('inference'))} + other in-server "
            f"{fmt(phases['total'] - named)} + HTTP/transport/client {fmt(mean - phases['total'])}"
        )
    return (
        text + f"; server CPU {step['server_cpu_cores']:.2f} cores = "
        f"{server_cpu_ms_per_request(step):.1f} ms/req, client CPU "
        f"{step['client_cpu_ms_per_request']:.2f} ms/req"
    )


def step_row(name: str, step: dict[str, Any]) -> list[object]:
    """A table row; the HTTP share is end to end minus the server's own total (Server-Timing)."""
    phases = step["phases_ms"]
    http = step["latency_ms"]["mean"] - phases["total"] if "total" in phases else float("nan")
    load = (
        f"c={step['concurrency']}" if step["mode"] == "closed" else f"{step['offered_rate']:.0f}/s"
    )
    errors = sum(step["errors"].values()) + step["dropped"]
    return [
        name,
        load,
        fmt(step["throughput_rps"]),
        fmt(step["latency_ms"]["p50"]),
        fmt(step["latency_ms"]["p90"]),
        fmt(step["latency_ms"]["p99"]),
        errors,
        fmt(step["server_cpu_cores"], 2),
        fmt(server_cpu_ms_per_request(step), 1),
        fmt(step["server_peak_rss_mb"], 0),
        fmt(phases.get("decode")),
        fmt(phases.get("queue")),
        fmt(phases.get("inference")),
        fmt(http),
        fmt(step["client_cpu_ms_per_request"], 2),
    ]


STEP_HEADERS = [
    "server",
    "load",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "errors",
    "server CPU (cores)",
    "server CPU ms/req",
    "server peak RSS MB",
    "decode ms",
    "queue ms",
    "inference ms",
    "HTTP+client ms",
    "client CPU ms/req",
]


def _measure_config(
    cfg: BenchConfig, plan: Plan, provider: str, max_batch: int, progress: Any
) -> dict[str, Any]:
    spec = service_spec(cfg, MODEL, provider, max_batch)
    with running(cfg, spec) as server:
        steps = closed_steps(
            cfg, server, plan.concurrencies, plan.duration_s, plan.warmup_s, progress
        )
        capacity = saturation(steps)
        for fraction in plan.rate_fractions:
            rate = max(1.0, capacity * fraction)
            steps.append(load_step(cfg, server, None, rate, plan.duration_s))
            progress.update(1)
    return {
        "name": spec.name,
        "description": spec.description,
        "ready_s": server.ready_s,
        "steps": steps,
        "saturation_rps": capacity,
    }


TARGET_HEADERS = [
    "server",
    "c=1 p50 vs in-process (<= 1.5x)",
    "saturation vs in-process (>= 85%)",
    "peak RSS (<= 250 MB)",
    "start to ready (<= 2 s)",
]


def _targets(results: list[dict[str, Any]], references: dict[str, Any]) -> list[list[object]]:
    """Issue 3's targets, per configuration: c=1 p50 <= 1.5x in-process decode + inference;
    saturation >= 85% of in-process throughput; peak RSS under load <= 250 MB; ready <= 2 s."""
    rows: list[list[object]] = []
    for result in results:
        provider = result["name"].split()[1]
        ref = references[provider]
        c1 = at_concurrency(result["steps"], 1)
        p50 = c1["latency_ms"]["p50"] if c1 else float("nan")
        ref_p50 = ref["decode_inference_ms"]["p50"]
        sat_ratio = result["saturation_rps"] / ref["throughput_ips"]
        rss = max(s["server_peak_rss_mb"] for s in result["steps"])
        rows.append(
            [
                result["name"],
                f"{fmt(p50)} vs {fmt(ref_p50)} = {fmt(p50 / ref_p50, 2)}x "
                + ("PASS" if p50 <= 1.5 * ref_p50 else "MISS"),
                f"{fmt(result['saturation_rps'])} vs {fmt(ref['throughput_ips'])} = "
                f"{sat_ratio:.0%} " + ("PASS" if sat_ratio >= 0.85 else "MISS"),
                f"{fmt(rss, 0)} MB " + ("PASS" if rss <= 250 else "MISS"),
                f"{fmt(result['ready_s'], 2)} s " + ("PASS" if result["ready_s"] <= 2 else "MISS"),
            ]
        )
    return rows


def _plot(cfg: BenchConfig, results: list[dict[str, Any]], section: Section) -> None:
    for pct in ("p50", "p99"):
        series = {}
        for result in results:
            closed = [s for s in result["steps"] if s["mode"] == "closed"]
            series[result["name"]] = (
                [s["throughput_rps"] for s in closed],
                [s["latency_ms"][pct] for s in closed],
            )
        section.plots.append(
            line_plot(
                cfg.out_dir / f"http_latency_vs_throughput_{pct}.png",
                series,
                f"Service over HTTP, {MODEL}: {pct} latency vs throughput\n"
                "(closed loop; points = concurrency 1, 4, 16, 64)",
                "throughput, req/s",
                f"{pct} latency, ms",
                logy=True,
            )
        )


def run(cfg: BenchConfig) -> Section:
    plan = QUICK if cfg.quick else FULL
    section = Section("http", "The service over HTTP")
    model_file = cfg.model_dir(MODEL) / "model.int8.onnx"
    if not (cfg.model_dir(MODEL) / "manifest.json").is_file():
        section.add(f"**Skipped: {model_file} is missing (build the model first).**")
        return section
    jpegs = [s.jpeg for s in load_samples(cfg.data_dir, 64)]
    providers = sorted({p for p, _ in plan.configs})
    steps = len(plan.configs) * (len(plan.concurrencies) + len(plan.rate_fractions))
    progress = bar(steps + len(providers), "http")
    references = {}
    for provider in providers:
        references[provider] = decode_inference(
            model_file, provider, jpegs, plan.reference_runs, plan.reference_s
        )
        progress.update(1)
    results = [_measure_config(cfg, plan, p, b, progress) for p, b in plan.configs]
    progress.close()
    section.data = {
        "plan": plan.__dict__,
        "model": MODEL,
        "reference": references,
        "servers": results,
    }
    fractions = ", ".join(f"{f:.0%}" for f in plan.rate_fractions)
    section.add(
        f"Model {MODEL} int8 (U8S8). One load-generator process per step ({CLIENTS[cfg.client]}, "
        f"{len(jpegs)} real JPEGs cycled, read once); the client runs on the same 2 cores and "
        f"its CPU per request is shown. Closed loop: {plan.duration_s} s per "
        f"concurrency; open loop: Poisson arrivals at {fractions} "
        "of the configuration's best closed-loop throughput, latency from the scheduled send "
        "time. Server CPU and RSS: psutil on the server process, sampled every 50 ms. Phases: "
        "means of the service's Server-Timing header; HTTP+client = end-to-end mean minus the "
        "server's total."
    )
    for result in results:
        section.add(
            f"- **{result['name']}**: {result['description']}; ready in "
            f"{fmt(result['ready_s'], 2)} s"
        )
    rows = [step_row(r["name"], s) for r in results for s in r["steps"]]
    section.add(table(STEP_HEADERS, rows))
    section.add("### In-process reference: decode + inference, same settings, no HTTP")
    section.add(
        table(
            [
                "provider",
                "decode p50 ms",
                "decode + inference p50 ms",
                "pipeline images/s",
                "pipeline CPU ms/image",
            ],
            [
                [
                    p,
                    fmt(r["decode_ms"]["p50"], 2),
                    fmt(r["decode_inference_ms"]["p50"], 2),
                    fmt(r["throughput_ips"]),
                    fmt(r["cpu_ms_per_image"]),
                ]
                for p, r in references.items()
            ],
        )
    )
    section.add("### Issue 3 targets")
    section.data["target_headers"] = TARGET_HEADERS
    section.data["targets"] = _targets(results, references)
    section.add(table(TARGET_HEADERS, section.data["targets"]))
    section.add("### Where the time goes (measured: Server-Timing phases, CPU per request)")
    lines = []
    for result in results:
        closed = [s for s in result["steps"] if s["mode"] == "closed"]
        best = max(closed, key=lambda s: s["throughput_rps"])
        lines += [breakdown(result["name"], s) for s in (at_concurrency(closed, 1), best) if s]
    section.add("\n".join(f"- {line}" for line in lines))
    section.add(
        "Saturation is CPU-bound on 2 cores: compare the server's CPU ms/req with the "
        "in-process pipeline's CPU ms/image (the floor for decode + inference); whatever the "
        "server's CPU (cores) falls short of 2.0 went to the load generator and to other "
        "processes on the machine (see the load average at the top)."
    )
    _plot(cfg, results, section)
    return section


def main(argv: list[str] | None = None) -> None:
    run_benchmark("The service over HTTP", run, argv)


if __name__ == "__main__":
    main()
