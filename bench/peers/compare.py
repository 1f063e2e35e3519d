"""Peers on the same harness, images and run: the service with its defaults, the plain
FastAPI + ONNX Runtime peer and the write-up's Flask + TorchScript architecture, closed loop at
concurrency 1 to 64; then the issue-4 targets (ResNet-18): at saturation the service >= 5x the
write-up's architecture and >= 2x the plain peer; at concurrency 1 its p50 no worse than the
plain peer's. A missed target is reported with how much, and where the service's time goes.

    python -m bench.peers [--quick] [--out DIR]
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

from bench.cli import run_benchmark
from bench.config import BenchConfig
from bench.http import STEP_HEADERS, breakdown, step_row
from bench.loadgen import CLIENTS
from bench.plots import line_plot
from bench.progress import bar
from bench.report import Section, table
from bench.servers import (
    ServerSpec,
    at_concurrency,
    closed_steps,
    peer_spec,
    running,
    saturation,
    service_spec,
)
from bench.stats import fmt

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


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def targets(results: list[dict[str, Any]]) -> tuple[list[list[object]], bool]:
    service, plain, writeup = results
    sat = {r["name"]: r["saturation_rps"] for r in results}
    vs_writeup = sat[service["name"]] / sat[writeup["name"]]
    vs_plain = sat[service["name"]] / sat[plain["name"]]
    p50 = {
        r["name"]: (at_concurrency(r["steps"], 1) or {}).get("latency_ms", {}).get("p50")
        for r in results
    }
    c1_service, c1_plain = p50[service["name"]], p50[plain["name"]]
    c1_ok = c1_service is not None and c1_plain is not None and c1_service <= c1_plain
    rows: list[list[object]] = [
        [
            "saturation vs write-up architecture",
            ">= 5x",
            f"{vs_writeup:.1f}x",
            _verdict(vs_writeup >= 5) + ("" if vs_writeup >= 5 else f" by {5 / vs_writeup:.2f}x"),
        ],
        [
            "saturation vs plain FastAPI + ORT",
            ">= 2x",
            f"{vs_plain:.1f}x",
            _verdict(vs_plain >= 2) + ("" if vs_plain >= 2 else f" by {2 / vs_plain:.2f}x"),
        ],
        [
            "c=1 p50 vs plain FastAPI + ORT",
            "<= 1.0x",
            f"{fmt(c1_service)} vs {fmt(c1_plain)} ms",
            _verdict(c1_ok)
            + (
                ""
                if c1_ok or not c1_plain or not c1_service
                else f" by {c1_service - c1_plain:.1f} ms"
            ),
        ],
    ]
    return rows, vs_writeup >= 5 and vs_plain >= 2 and c1_ok


def where_time_goes(results: list[dict[str, Any]]) -> list[str]:
    """The service at c=1 and at its best throughput, then each peer at its best: the phases
    and the CPU each request costs, so a missed target shows its cause."""
    service = results[0]
    steps = service["steps"]
    best = max(steps, key=lambda s: s["throughput_rps"])
    lines = [breakdown(service["name"], s) for s in (at_concurrency(steps, 1), best) if s]
    for peer in results[1:]:
        peer_best = max(peer["steps"], key=lambda s: s["throughput_rps"])
        lines.append(breakdown(peer["name"], peer_best))
    return lines


def run(cfg: BenchConfig) -> Section:
    plan = QUICK if cfg.quick else FULL
    section = Section("peers", "Peers on the same harness (ResNet-18, same images, same run)")
    if not (cfg.model_dir(MODEL) / "manifest.json").is_file():
        section.add(f"**Skipped: no {MODEL} artifacts in {cfg.artifacts_dir}.**")
        return section
    prepare_flask(cfg)
    progress = bar(3 * len(plan.concurrencies), "peers")
    results: list[dict[str, Any]] = []
    for spec in specs(cfg):
        with running(cfg, spec) as server:
            steps = closed_steps(
                cfg, server, plan.concurrencies, plan.duration_s, plan.warmup_s, progress
            )
        results.append(
            {
                "name": spec.name,
                "description": spec.description,
                "ready_s": server.ready_s,
                "steps": steps,
                "saturation_rps": saturation(steps),
            }
        )
    progress.close()
    rows, passed = targets(results)
    section.data = {"plan": plan.__dict__, "servers": results, "targets": rows, "passed": passed}
    section.add(
        f"Closed loop, one load-generator process per step ({CLIENTS[cfg.client]}, raw JPEG "
        f"bodies), {plan.duration_s} s per concurrency. The Flask peer runs on Flask's own "
        "development server (threaded=True), as the write-up serves it; ResNet-18 weights are "
        "random (speed only)."
    )
    section.add("\n".join(f"- **{r['name']}**: {r['description']}" for r in results))
    section.add(table(STEP_HEADERS, [step_row(r["name"], s) for r in results for s in r["steps"]]))
    base = results[-1]["saturation_rps"]
    section.add(
        table(
            ["server", "saturation req/s", "x write-up", "c=1 p50 ms"],
            [
                [
                    r["name"],
                    fmt(r["saturation_rps"]),
                    fmt(r["saturation_rps"] / base, 1) + "x",
                    fmt((at_concurrency(r["steps"], 1) or {}).get("latency_ms", {}).get("p50")),
                ]
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
        r["name"]: (
            [s["throughput_rps"] for s in r["steps"]],
            [s["latency_ms"]["p50"] for s in r["steps"]],
        )
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
    return section


def main(argv: list[str] | None = None) -> None:
    run_benchmark("Peers on the same harness", run, argv)
