"""Latency at sparse load (issue 10): open-loop Poisson arrivals at low rates (5 and 20 req/s)
beside the closed-loop c=1 figure, per server variant, in interleaved rounds; plus each
variant's CPU use while idle, which is what a keep-warm or spinning mitigation costs.

A request that arrives after the server sat idle finds cold caches, sleeping runtime threads
and a core that may have clocked down; back to back (c=1), it does not. Latency is counted
from each arrival's scheduled time (a late send counts against the server).

    python -m bench.lowrate --model-dir model_artifacts/resnet18 \\
        --variant base: --variant spin:spin=1 --rates 5,20 --rounds 3

Variants take the knobs of bench.profile (http, loop, access_log), IMGCLS_*
variables, and ``spin=1`` (ONNX Runtime's intra-op workers spin between runs, the runtime's
default that service/runner.py turns off).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.profile import (
    Variant,
    _exchange,
    jpegs_of_size,
    parse_variant,
    pct,
    request_bytes,
    started,
    thread_cpu_s,
)
from service import paths

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Pool:
    """Keep-alive connections to one server, opened as needed, reused when idle."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[Conn] = []

    async def post(self, request: bytes) -> int:
        """A reused connection the server closed while idle (keep-alive timeout) is retried
        once on a new one, as an HTTP client library would."""
        for reused in (bool(self.idle), False):
            conn = self.idle.pop() if reused else None
            conn = conn or await asyncio.open_connection("127.0.0.1", self.port)
            try:
                status, keep = await _exchange(conn, request)
            except (OSError, asyncio.IncompleteReadError):
                conn[1].close()
                if reused:
                    continue
                raise
            if keep:
                self.idle.append(conn)
            else:
                conn[1].close()
            return status
        raise AssertionError("unreachable: the fresh connection's attempt returns or raises")

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def open_loop(
    port: int, requests: Sequence[bytes], rate: float, seconds: float, seed: int
) -> list[float]:
    """Latencies (ms, from the scheduled arrival) of the 200s of a Poisson arrival process."""
    pool, arrivals = Pool(port), random.Random(seed)
    latencies: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(request: bytes, scheduled: float) -> None:
        if await pool.post(request) == 200:
            latencies.append((time.perf_counter() - scheduled) * 1e3)

    # First, one unrecorded request: opens the connection.
    await pool.post(requests[0])
    await asyncio.sleep(arrivals.expovariate(rate))
    start = scheduled = time.perf_counter()
    index = 0
    while scheduled < start + seconds:
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(requests[index % len(requests)], scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        index += 1
        scheduled += arrivals.expovariate(rate)
    await asyncio.gather(*tasks)
    pool.close()
    return latencies


async def closed_c1(port: int, requests: Sequence[bytes], seconds: float) -> list[float]:
    pool = Pool(port)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    index = 0
    while time.perf_counter() < stop:
        sent = time.perf_counter()
        if await pool.post(requests[index % len(requests)]) == 200:
            latencies.append((time.perf_counter() - sent) * 1e3)
        index += 1
    pool.close()
    return latencies


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
    requests = [request_bytes("127.0.0.1", 0, j, False) for j in jpegs]
    rates = [float(r) for r in args.rates.split(",")]
    lat: dict[str, dict[str, list[float]]] = {
        v.name: {k: [] for k in loads(rates)} for v in variants
    }
    idle: dict[str, list[float]] = {v.name: [] for v in variants}
    load_start = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    with started(variants, args.model_dir, args.out):
        for v in variants:  # warm-up
            asyncio.run(closed_c1(v.port, requests, 2.0))
        for rnd in range(args.rounds):
            for v in variants:
                idle[v.name].append(idle_cpu_pct(v, args.idle))
                lat[v.name]["c=1"] += asyncio.run(closed_c1(v.port, requests, args.window))
                for rate in rates:
                    seconds = max(args.window, args.requests / rate)
                    got = asyncio.run(open_loop(v.port, requests, rate, seconds, seed=rnd))
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
