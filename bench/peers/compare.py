"""Peers on the same harness, images and run: the service with its defaults, the plain
FastAPI + ONNX Runtime peer and the write-up's Flask + TorchScript architecture, closed loop at
concurrency 1 to 64; then the issue-4 targets (ResNet-18): at saturation the service >= 5x the
write-up's architecture and >= 2x the plain peer; at concurrency 1 its p50 no worse than the
plain peer's. A missed target is reported with how much, and where the service's time goes.

    python -m bench.peers [--quick] [--out DIR]
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass

from bench.cli import run_benchmark
from bench.config import BenchConfig
from bench.http import breakdown, steps_table
from bench.loadgen import CLIENTS
from bench.plots import line_plot
from bench.progress import bar
from bench.report import Section, table
from bench.servers import ServerResult, ServerSpec, measure_server, peer_spec, service_spec
from bench.stats import fmt
from bench.targets import PEERS, verdict

MODEL = "resnet18"


@dataclass(frozen=True)
class Plan:
    concurrencies: tuple[int, ...]
    duration_s: float
    warmup_s: float


FULL = Plan((1, 4, 16, 64), 4.0, 1.5)
QUICK = Plan((1,), 1.0, 0.3)


def specs(cfg: BenchConfig) -> list[ServerSpec]:
    return [
        service_spec(cfg, MODEL, "auto", None, name="service (defaults)"),
        peer_spec(cfg, "fastapi_ort", MODEL),
        peer_spec(cfg, "flask_torchscript", MODEL),
    ]


def prepare_flask(cfg: BenchConfig) -> None:
    """Build the TorchScript file before the Flask peer starts, as a deployment would ship it."""
    code = (
        "from bench.torch_models import torchscript_file; "
        f"torchscript_file({MODEL!r}, uint8_front=False)"
    )
    subprocess.run([cfg.python, "-c", code], check=True, capture_output=True)


def _ratio_row(what: str, ratio: float, wanted: float) -> list[object]:
    miss = "" if ratio >= wanted else f" by {wanted / ratio:.2f}x"
    return [what, f">= {wanted:g}x", f"{ratio:.1f}x", verdict(ratio >= wanted) + miss]


def targets(results: list[ServerResult]) -> tuple[list[list[object]], bool]:
    """Issue 4's targets (bench/targets.toml [peers])."""
    service, plain, writeup = results
    vs_writeup = service.saturation_rps / writeup.saturation_rps
    vs_plain = service.saturation_rps / plain.saturation_rps
    c1_service, c1_plain = service.c1_p50(), plain.c1_p50()
    wanted = PEERS["c1_p50_vs_plain_max"]
    c1_ok = c1_service is not None and c1_plain is not None and c1_service <= wanted * c1_plain
    miss = "" if c1_ok or not c1_plain or not c1_service else f" by {c1_service - c1_plain:.1f} ms"
    rows: list[list[object]] = [
        _ratio_row(
            "saturation vs write-up architecture", vs_writeup, PEERS["saturation_vs_writeup_min"]
        ),
        _ratio_row("saturation vs plain FastAPI + ORT", vs_plain, PEERS["saturation_vs_plain_min"]),
        [
            "c=1 p50 vs plain FastAPI + ORT",
            f"<= {wanted:.1f}x",
            f"{fmt(c1_service)} vs {fmt(c1_plain)} ms",
            verdict(c1_ok) + miss,
        ],
    ]
    passed = all(str(row[3]).startswith("PASS") for row in rows)
    return rows, passed


def where_time_goes(results: list[ServerResult]) -> list[str]:
    """The service at c=1 and at its best throughput, then each peer at its best: the phases
    and the CPU each request costs, so a missed target shows its cause."""
    service = results[0]
    lines = [breakdown(service.name, s) for s in (service.at_concurrency(1), service.best()) if s]
    return lines + [breakdown(peer.name, peer.best()) for peer in results[1:]]


def measure(cfg: BenchConfig, plan: Plan) -> list[ServerResult]:
    prepare_flask(cfg)
    progress = bar(3 * len(plan.concurrencies), "peers")
    results = [
        measure_server(cfg, spec, plan.concurrencies, plan.duration_s, plan.warmup_s, progress)
        for spec in specs(cfg)
    ]
    progress.close()
    return results


def render(cfg: BenchConfig, plan: Plan, results: list[ServerResult], section: Section) -> None:
    rows, passed = targets(results)
    section.add(
        f"Closed loop, one load-generator process per step ({CLIENTS[cfg.client]}, raw JPEG "
        f"bodies), {plan.duration_s} s per concurrency. The Flask peer runs on Flask's own "
        "development server (threaded=True), as the write-up serves it; ResNet-18 weights are "
        "random (speed only)."
    )
    section.add("\n".join(f"- **{r.name}**: {r.description}" for r in results))
    section.add(steps_table(results))
    base = results[-1].saturation_rps
    section.add(
        table(
            ["server", "saturation req/s", "x write-up", "c=1 p50 ms"],
            [
                [r.name, fmt(r.saturation_rps), f"{r.saturation_rps / base:.1f}x", fmt(r.c1_p50())]
                for r in results
            ],
        )
    )
    section.add("### Issue 4 targets")
    section.add(table(["target", "wanted", "measured", "verdict"], rows))
    if not passed:
        section.add("Where the time goes (measured; phases from the service's Server-Timing):")
        section.add("\n".join(f"- {line}" for line in where_time_goes(results)))
    series = {
        r.name: ([s.throughput_rps for s in r.steps], [s.latency_ms["p50"] for s in r.steps])
        for r in results
    }
    section.plots.append(
        line_plot(
            cfg.out_dir / "peers_latency_vs_throughput.png",
            series,
            "ResNet-18 over HTTP: p50 latency vs throughput\n(closed loop; points = concurrency)",
            "throughput, req/s",
            "p50 latency, ms",
            logy=True,
        )
    )


def run(cfg: BenchConfig) -> Section:
    plan = QUICK if cfg.quick else FULL
    section = Section("peers", "Peers on the same harness (ResNet-18, same images, same run)")
    if not cfg.has_model(MODEL):
        section.add(f"**Skipped: no {MODEL} artifacts in {cfg.artifacts_dir}.**")
        return section
    results = measure(cfg, plan)
    rows, passed = targets(results)
    section.data = {
        "plan": asdict(plan),
        "servers": [asdict(r) for r in results],
        "targets": rows,
        "passed": passed,
    }
    render(cfg, plan, results, section)
    return section


def main(argv: list[str] | None = None) -> None:
    run_benchmark("Peers on the same harness", run, argv)
