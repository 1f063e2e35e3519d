"""Open Inference Protocol v2 at saturation (issue 8): images/s with 8 images per request over v2
REST (binary UINT8 tensor), v2 gRPC (UINT8) and /v1/classify/batch (8 JPEGs), against the engine
ceiling at batch 8; one service on resnet18 with IMGCLS_MAX_BATCH_SIZE=8, the three transports
and the ceiling interleaved round by round (rotated order), medians over rounds.

    python -m bench.experiments.v2 [--quick] [--out DIR]   (or: python -m bench.run_all --only v2)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from bench import launch
from bench.config import BenchConfig, load_jpegs, model_file, run_benchmark
from bench.launch import Started
from bench.loadgen.http1 import RawSender, multipart
from bench.loadgen.loops import closed_loop
from bench.loadgen.outcomes import Outcome, Post, StepResult, measure_step
from bench.report import Section, bar, bar_plot, fmt, summarize, table, verdict
from bench.servers import UsageSampler, running, service_spec
from service.inference.preprocess import PreprocessSpec, preprocess

REPO = Path(__file__).resolve().parents[2]
Pixels = np.ndarray[Any, np.dtype[np.uint8]]
MODEL, BATCH, USERS = "resnet18", 8, 4  # 4 requests of 8 images in flight: 32 images queued
TARGET = 0.80  # v2 UINT8 images/s over the engine ceiling at batch 8
REST, GRPC, V1, CEILING = "v2 REST UINT8", "v2 gRPC UINT8", "/v1 batch JPEG", "engine ceiling"
CLIENTS = {
    REST: "binary tensor extension, a raw asyncio HTTP/1.1 client (bench.loadgen RawSender)",
    GRPC: "raw_input_contents, tritonclient.grpc.aio (one channel)",
    V1: "multipart, 8 files per request, the same raw HTTP/1.1 client",
    CEILING: "a separate process, no client: service.model.runner.create_session with the server's "
    "provider and intra-op threads (from /v1/model), one batch of the same 8 photos back to back",
}


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: float  # per measurement
    warmup_s: float  # per transport and round, unrecorded


FULL, QUICK = Plan(5, 8.0, 1.0), Plan(1, 1.5, 0.5)


def photos(data_dir: Path) -> tuple[list[bytes], Pixels]:
    jpegs = load_jpegs(data_dir, BATCH)
    return jpegs, np.stack([preprocess(j, PreprocessSpec()) for j in jpegs])


def ceiling(argv: Sequence[str]) -> dict[str, float]:
    """In its own process (``measure_ceiling``): the session alone, batch 8, for a time."""
    from service.model.runner import create_session

    model, provider, threads, data_dir, seconds = argv
    session = create_session(Path(model), provider, int(threads))
    feed = {session.get_inputs()[0].name: photos(Path(data_dir))[1]}
    out = [session.get_outputs()[0].name]  # the logits only, as service.model.runner asks
    for _ in range(3):
        session.run(out, feed)
    times, start, cpu0 = [], time.perf_counter(), time.process_time()
    while time.perf_counter() - start < float(seconds):
        began = time.perf_counter()
        session.run(out, feed)
        times.append((time.perf_counter() - began) * 1000)
    cpu_s, elapsed, runs = time.process_time() - cpu0, time.perf_counter() - start, summarize(times)
    images = len(times) * BATCH
    return {"ips": images / elapsed, "p50": runs.p50, "p99": runs.p99, "cpu": cpu_s * 1e3 / images}


def measure_ceiling(cfg: BenchConfig, model: dict[str, Any], seconds: float) -> dict[str, float]:
    path = model_file(cfg.model_dir(MODEL), model["precision"])
    args = [path, model["provider"], model["intra_op_threads"], cfg.data_dir, seconds]
    code = "import sys, json, bench.experiments.v2 as v; print(json.dumps(v.ceiling(sys.argv[1:])))"
    cmd = [cfg.python, "-c", code, *map(str, args)]
    found: dict[str, float] = json.loads(subprocess.check_output(cmd, cwd=REPO, text=True))
    return found


def rest_body(batch: Pixels) -> tuple[bytes, str, dict[str, str]]:
    """The binary tensor extension's body, its Content-Type and its extra header."""
    image: dict[str, Any] = {"name": "image", "datatype": "UINT8", "shape": list(batch.shape)}
    image["parameters"] = {"binary_data_size": batch.nbytes}
    logits = {"name": "logits", "parameters": {"binary_data": True}}
    text = json.dumps({"inputs": [image], "outputs": [logits]}).encode()
    header = {"Inference-Header-Content-Length": str(len(text))}
    return text + batch.tobytes(), "application/octet-stream", header


Client = tuple[Post, Callable[[], Awaitable[None]]]  # send one request; close the client


def grpc_client(url: str, batch: Pixels) -> Client:
    client = grpcclient.InferenceServerClient(url)
    image = grpcclient.InferInput("image", list(batch.shape), "UINT8")
    image.set_data_from_numpy(batch)
    wanted = [grpcclient.InferRequestedOutput("logits")]

    async def post(_: bytes, since: float) -> Outcome:
        try:
            await client.infer(MODEL, [image], outputs=wanted)
        except InferenceServerException as exc:
            return Outcome.since(since, str(exc.status()))
        return Outcome.since(since, 200)

    return post, client.close


def http_client(url: str, body: bytes, kind: str, headers: dict[str, str] | None = None) -> Client:
    sender = RawSender(url, USERS, kind, headers)
    return (lambda _, since: sender.post(body, since)), sender.aclose


async def load(server: Started, client: Callable[[], Client], plan: Plan) -> StepResult:
    """Closed loop, USERS callers, after an unrecorded warm-up; the server's CPU meanwhile."""
    post, close = client()
    try:
        await closed_loop(post, [b""], USERS, plan.warmup_s)
        with UsageSampler(server.proc.pid) as usage:
            step = await measure_step(
                closed_loop(post, [b""], USERS, plan.seconds), "closed", USERS
            )
        return replace(step, server_cpu_cores=usage.cpu_cores, server_peak_rss_mb=usage.peak_rss_mb)
    finally:
        await close()


def measure(cfg: BenchConfig, plan: Plan) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    jpegs, batch = photos(cfg.data_dir)
    port = launch.free_port()  # for gRPC
    spec = service_spec(cfg, MODEL, "auto", BATCH, name="service v2")
    spec = replace(spec, env={**spec.env, "IMGCLS_GRPC_PORT": str(port)})
    rounds: list[dict[str, Any]] = []
    with running(cfg, spec) as server, bar(plan.rounds * 4, "v2") as progress:
        model: dict[str, Any] = httpx.get(f"{server.url}/v1/model", timeout=10).json()
        clients: dict[str, Callable[[], Client]] = {
            REST: lambda: http_client(f"{server.url}/v2/models/{MODEL}/infer", *rest_body(batch)),
            GRPC: lambda: grpc_client(f"127.0.0.1:{port}", batch),
            V1: lambda: http_client(f"{server.url}/v1/classify/batch", *multipart(jpegs, "files")),
        }
        for index in range(plan.rounds):
            found: dict[str, Any] = {}
            for name in [*clients, CEILING][index % 4 :] + [*clients, CEILING][: index % 4]:
                if name == CEILING:
                    found[name] = measure_ceiling(cfg, model, plan.seconds)
                else:
                    found[name] = asyncio.run(load(server, clients[name], plan))
                progress.update(1)
            rounds.append(found)
    return model, rounds


def run(cfg: BenchConfig) -> Section:
    section = Section("v2", "Open Inference Protocol v2: 8 images per request at saturation")
    if not cfg.built([MODEL], section):
        return section
    plan, load_avg = QUICK if cfg.quick else FULL, [os.getloadavg()]
    model, rounds = measure(cfg, plan)
    load_avg.append(os.getloadavg())
    ceil = [r[CEILING] for r in rounds]
    ceiling_ips = median(c["ips"] for c in ceil)
    rows: list[list[object]] = []
    share: dict[str, tuple[float, float]] = {}  # of the ceiling: by images/s, by CPU per image
    ips: dict[str, float] = {}
    for name in (REST, GRPC, V1):
        steps: list[StepResult] = [r[name] for r in rounds]
        ips[name] = median(s.throughput_rps * BATCH for s in steps)
        pairs = list(zip(steps, ceil, strict=True))
        share[name] = (
            median(s.throughput_rps * BATCH / c["ips"] for s, c in pairs),
            median(c["cpu"] * BATCH / s.server_cpu_ms_per_request for s, c in pairs),
        )
        cpu = median(s.server_cpu_ms_per_request for s in steps)
        latency = [fmt(median(s.latency_ms[p] for s in steps)) for p in ("p50", "p99")]
        client = fmt(median(s.client_cpu_ms_per_request for s in steps), 2)
        errors = sum(sum(s.errors.values()) for s in steps)
        rows.append([name, fmt(ips[name]), *(f"{x:.0%}" for x in share[name]), *latency])
        rows[-1] += [fmt(cpu), fmt(cpu / BATCH, 2), client, errors]
    latency = [fmt(median(c[p] for c in ceil)) for p in ("p50", "p99")]
    ceiling_cpu = fmt(median(c["cpu"] for c in ceil), 2)
    rows.append([CEILING, fmt(ceiling_ips), "100%", "100%", *latency, "-", ceiling_cpu, "-", 0])
    data = {"plan": plan, "model": model, "rounds": rounds, "images_per_s": ips, "share": share}
    section.data = data | {"ceiling_ips": ceiling_ips, "load_average": load_avg}
    warm_ms = model["warmup_latency_ms"][str(BATCH)]
    section.add(
        f"resnet18 {model['precision']}, {model['provider']}, {model['intra_op_threads']} threads, "
        f"max batch {BATCH}; {USERS} requests of {BATCH} images in flight; {plan.rounds} round(s) "
        f"of {plan.seconds:g} s. Medians over rounds; shares: of each round's ceiling, by images/s "
        "and by CPU per image (independent of the share of cores the scheduler gives each "
        f"process). Load average {[round(x, 2) for x in load_avg[0]]} before, "
        f"{[round(x, 2) for x in load_avg[1]]} after. Server warm-up, batch {BATCH}: {warm_ms} ms."
    )
    headers = ["transport", "images/s", "of ceiling, images/s", "of ceiling, CPU", "p50 ms"]
    headers += ["p99 ms", "server CPU ms/req", "server CPU ms/image", "client CPU ms/req"]
    section.add(table([*headers, "errors"], rows))
    section.add("\n".join(f"- **{name}**: {about}" for name, about in CLIENTS.items()))
    met = [
        f"{n} {share[n][0]:.0%} {verdict(share[n][0] >= TARGET)} (by CPU {share[n][1]:.0%} "
        f"{verdict(share[n][1] >= TARGET)})"
        for n in (REST, GRPC)
    ]
    line = f"**Issue 8 target**, v2 UINT8 >= {TARGET:.0%} of the ceiling: " + ", ".join(met)
    section.add(line)
    section.summary.append(line)
    title = f"resnet18, {BATCH} images per request, at saturation"
    path = cfg.out_dir / "v2_throughput.png"
    section.plots.append(bar_plot(path, ips | {CEILING: ceiling_ips}, title, "images/s"))
    return section


if __name__ == "__main__":
    run_benchmark(run, __doc__)
