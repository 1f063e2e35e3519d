"""Cold start: process start to ready (the readiness probe answers 200), then the first and
second requests after ready, for the service and the peers. The write-up's row: a cold first
request ~900 ms, ~60 ms with preloading.

    python -m bench.coldstart [--quick] [--out DIR]
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from bench.config import BenchConfig, load_jpegs, run_benchmark
from bench.loadgen.http1 import CLASSIFY_PATH, HEADERS
from bench.report import Section, bar, fmt, median_of, table
from bench.servers import ServerSpec, peer_spec, prepare_flask, running, service_spec

MODEL = "resnet18"


@dataclass(frozen=True)
class Start:
    ready_s: float
    first_ms: float
    second_ms: float


def specs(cfg: BenchConfig, quick: bool) -> list[ServerSpec]:
    service = [service_spec(cfg, MODEL, p, None, name=f"service {p}") for p in ("cpu", "auto")]
    if quick:
        return service[:1]
    peers = [peer_spec(cfg, "fastapi_ort", MODEL), peer_spec(cfg, "flask_torchscript", MODEL)]
    return [*service, *peers, peer_spec(cfg, "flask_torchscript", MODEL, lazy=True)]


def start_once(cfg: BenchConfig, spec: ServerSpec, body: bytes) -> Start:
    """Start the server, then time two requests after it is ready (each must answer 200)."""
    with running(cfg, spec) as server, httpx.Client(timeout=60) as client:
        posts_ms = []
        for _ in range(2):
            start = time.perf_counter()
            response = client.post(server.url + CLASSIFY_PATH, content=body, headers=HEADERS)
            posts_ms.append((time.perf_counter() - start) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{spec.name}: a request answered {response.status_code}")
    return Start(server.ready_s, *posts_ms)


def measure(cfg: BenchConfig, servers: list[ServerSpec], repeats: int) -> dict[str, list[Start]]:
    if any(s.module.endswith("flask_torchscript") for s in servers):
        prepare_flask(cfg)
    body = load_jpegs(cfg.data_dir, 1)[0]
    results: dict[str, list[Start]] = {spec.name: [] for spec in servers}
    with bar(len(servers) * repeats, "coldstart") as progress:
        for spec in servers:
            for _ in range(repeats):
                results[spec.name].append(start_once(cfg, spec, body))
                progress.update(1)
    return results


def run(cfg: BenchConfig) -> Section:
    section = Section("coldstart", "Cold start: process start to ready, first request")
    if not cfg.built([MODEL], section):
        return section
    repeats, servers = 1 if cfg.quick else 3, specs(cfg, cfg.quick)
    runs = measure(cfg, servers, repeats)
    median = {name: median_of(starts) for name, starts in runs.items()}
    section.data = {"repeats": repeats, "runs": runs, "median": median}
    section.add(
        f"Median of {repeats} start(s) each. Ready: from just before the process is spawned to "
        "the first 200 from its readiness probe (polled every 10 ms; imports included). First "
        "request: the first POST after ready, on a new connection; second: the next one."
    )
    rows = [[n, fmt(m.ready_s, 2), fmt(m.first_ms), fmt(m.second_ms)] for n, m in median.items()]
    headers = ["server", "start to ready s", "first request ms", "second request ms"]
    section.add(table(headers, rows))
    section.add("\n".join(f"- **{s.name}**: {s.description}" for s in servers))
    first = {name: fmt(m.first_ms) for name, m in median.items()}
    lazy, warm = first.get("flask + torchscript lazy", "-"), first.get("flask + torchscript", "-")
    ours = first.get("service auto") or first["service cpu"]
    section.writeup["first"] = (f"{lazy} -> {warm}", f"ours (service): {ours}")
    return section


if __name__ == "__main__":
    run_benchmark(run, __doc__)
