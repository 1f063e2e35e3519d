"""Cold start: process start to ready (the readiness probe answers 200), then the first and
second requests after ready, for the service and the peers. The write-up's row: a cold first
request ~900 ms, ~60 ms with preloading.

    python -m bench.coldstart [--quick] [--out DIR]
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from bench.cli import run_benchmark
from bench.config import BenchConfig
from bench.images import load_samples
from bench.loadgen import CLASSIFY_PATH, HEADERS
from bench.peers.compare import prepare_flask
from bench.progress import bar
from bench.report import Section, table
from bench.servers import ServerSpec, peer_spec, running, service_spec
from bench.stats import fmt

MODEL = "resnet18"


def specs(cfg: BenchConfig, quick: bool) -> list[ServerSpec]:
    service = [
        service_spec(cfg, MODEL, "cpu", None, name="service cpu"),
        service_spec(cfg, MODEL, "auto", None, name="service auto"),
    ]
    if quick:
        return service[:1]
    return [
        *service,
        peer_spec(cfg, "fastapi_ort", MODEL),
        peer_spec(cfg, "flask_torchscript", MODEL),
        peer_spec(cfg, "flask_torchscript", MODEL, lazy=True),
    ]


def _post_ms(client: httpx.Client, url: str, body: bytes) -> float:
    start = time.perf_counter()
    response = client.post(url + CLASSIFY_PATH, content=body, headers=HEADERS)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{url}: first request answered {response.status_code}")
    return elapsed


def measure(cfg: BenchConfig, spec: ServerSpec, body: bytes) -> dict[str, float]:
    with running(cfg, spec) as server, httpx.Client(timeout=60) as client:
        first = _post_ms(client, server.url, body)
        second = _post_ms(client, server.url, body)
    return {"ready_s": server.ready_s, "first_ms": first, "second_ms": second}


def run(cfg: BenchConfig) -> Section:
    section = Section("coldstart", "Cold start: process start to ready, first request")
    if not cfg.has_model(MODEL):
        section.add(f"**Skipped: no {MODEL} artifacts in {cfg.artifacts_dir}.**")
        return section
    repeats = 1 if cfg.quick else 3
    servers = specs(cfg, cfg.quick)
    if any(s.module.endswith("flask_torchscript") for s in servers):
        prepare_flask(cfg)
    body = load_samples(cfg.data_dir, 1)[0].jpeg
    progress = bar(len(servers) * repeats, "coldstart")
    results: dict[str, Any] = {}
    for spec in servers:
        runs = []
        for _ in range(repeats):
            runs.append(measure(cfg, spec, body))
            progress.update(1)
        results[spec.name] = {
            "description": spec.description,
            "runs": runs,
            **{k: statistics.median(r[k] for r in runs) for k in runs[0]},
        }
    progress.close()
    section.data = {"repeats": repeats, "servers": results}
    section.add(
        f"Median of {repeats} start(s) each. Ready: from just before the process is spawned to "
        "the first 200 from its readiness probe (polled every 10 ms; imports included). First "
        "request: the first POST after ready, on a new connection; second: the next one."
    )
    section.add(
        table(
            ["server", "start to ready s", "first request ms", "second request ms"],
            [
                [name, fmt(r["ready_s"], 2), fmt(r["first_ms"]), fmt(r["second_ms"])]
                for name, r in results.items()
            ],
        )
    )
    section.add("\n".join(f"- **{n}**: {r['description']}" for n, r in results.items()))
    return section


def main(argv: list[str] | None = None) -> None:
    run_benchmark("Cold start", run, argv)


if __name__ == "__main__":
    main()
