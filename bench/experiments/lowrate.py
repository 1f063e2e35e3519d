"""Latency at sparse load (issue 10): open-loop Poisson arrivals at low rates (5 and 20 req/s)
beside the closed-loop c=1 figure, per server variant, in interleaved rounds; plus each
variant's CPU use while idle, which is what a keep-warm or spinning mitigation costs.

A request that arrives after the server sat idle finds cold caches, sleeping runtime threads
and a core that may have clocked down; back to back (c=1), it does not. Latency is counted
from each arrival's scheduled time (a late send counts against the server).

    python -m bench.experiments.lowrate --model-dir model_artifacts/resnet18 \\
        --variant base: --variant spin:spin=1 --rates 5,20 --rounds 3

Variants take the knobs of bench.experiments.profile (http, loop, access_log), IMGCLS_*
variables, and ``spin=1`` (ONNX Runtime's intra-op workers spin between runs, the runtime's
default that service/model/runner.py turns off).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.experiments.profile import (
    Variant,
    jpegs_of_size,
    parse_variant,
    pct,
    started,
    thread_cpu_s,
)
from bench.loadgen import loops
from bench.loadgen.http1 import RawSender
from service import paths

# The service's own load generator (bench.loadgen): its raw keep-alive client, and its open
# and closed loops, each latency counted from the scheduled (open) or actual (closed) send.
MAX_OUTSTANDING = 512


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/classify"


async def open_loop(
    port: int, jpegs: Sequence[bytes], rate: float, seconds: float, seed: int
) -> list[float]:
    """Latencies (ms, from the scheduled arrival) of the 200s of a Poisson arrival process."""
    sender = RawSender(_url(port), MAX_OUTSTANDING)
    try:
        await sender.post(jpegs[0], time.perf_counter())  # unrecorded: opens the connection
        step = loops.open_loop(sender.post, jpegs, rate, seconds, MAX_OUTSTANDING, seed)
        outcomes, _, _ = await step
    finally:
        await sender.aclose()
    return [o.latency_ms for o in outcomes if o.status == 200]


async def closed_c1(port: int, jpegs: Sequence[bytes], seconds: float) -> list[float]:
    sender = RawSender(_url(port), 1)
    try:
        outcomes, _, _ = await loops.closed_loop(sender.post, jpegs, 1, seconds)
    finally:
        await sender.aclose()
    return [o.latency_ms for o in outcomes if o.status == 200]


def idle_cpu_pct(v: Variant, seconds: float) -> float:
    """The server's CPU use with no requests, in percent of one core."""
    assert v.proc is not None
    before = sum(thread_cpu_s(v.proc.pid).values())
    time.sleep(seconds)
    return 100 * (sum(thread_cpu_s(v.proc.pid).values()) - before) / seconds


def loads(rates: list[float]) -> list[str]:
    return ["c=1", *(f"{r:g}/s" for r in rates)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    variants = [parse_variant(t) for t in args.variant] or [parse_variant("default:")]
    jpegs = jpegs_of_size(paths.data_dir() / "imagenet-sample-images", (500, 375), args.images)
    rates = [float(r) for r in args.rates.split(",")]
    lat: dict[str, dict[str, list[float]]] = {
        v.name: {k: [] for k in loads(rates)} for v in variants
    }
    idle: dict[str, list[float]] = {v.name: [] for v in variants}
    load_start = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    with started(variants, args.model_dir, args.out):
        for v in variants:  # warm-up
            asyncio.run(closed_c1(v.port, jpegs, 2.0))
        for rnd in range(args.rounds):
            for v in variants:
                idle[v.name].append(idle_cpu_pct(v, args.idle))
                lat[v.name]["c=1"] += asyncio.run(closed_c1(v.port, jpegs, args.window))
                for rate in rates:
                    seconds = max(args.window, args.requests / rate)
                    got = asyncio.run(open_loop(v.port, jpegs, rate, seconds, seed=rnd))
                    lat[v.name][f"{rate:g}/s"] += got
                print(
                    f"round {rnd} {v.name}: "
                    + ", ".join(f"{k} p50 {pct(x, 0.5):.1f}" for k, x in lat[v.name].items()),
                    flush=True,
                )
    result: dict[str, Any] = {
        "load_average": [load_start, os.getloadavg()],
        "model_dir": str(args.model_dir),
        "variants": {
            v.name: {
                "knobs": v.knobs,
                "env": v.env,
                "idle_cpu_pct_of_core": statistics.median(idle[v.name]),
                **{
                    k: {"n": len(x), "p50_ms": pct(x, 0.5), "p99_ms": pct(x, 0.99)}
                    for k, x in lat[v.name].items()
                },
            }
            for v in variants
        },
    }
    (args.out / "lowrate.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=Path("model_artifacts/resnet18"))
    p.add_argument("--variant", action="append", default=[], help="name:k=v,... (repeat)")
    p.add_argument("--rates", default="5,20", help="offered req/s, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=float, default=8.0, help="seconds of c=1 per round")
    p.add_argument("--requests", type=int, default=100, help="arrivals per open-loop round")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measured")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("bench/results/lowrate"))
    result = run(p.parse_args())
    print(json.dumps(result["variants"], indent=2))


if __name__ == "__main__":
    main()
