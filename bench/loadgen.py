"""The load generator: asyncio clients posting real JPEGs to POST /v1/classify.

Closed loop (N concurrent users, each sends its next request when the last one returns) gives
throughput and latency against concurrency; open loop (Poisson arrivals at a fixed offered
rate, latency counted from each request's SCHEDULED send time so a slow server cannot hide its
queue) gives latency against offered load.

    python -m bench.loadgen --url http://127.0.0.1:8000 --concurrency 1 4 16 64 --duration 10
    python -m bench.loadgen --url http://127.0.0.1:8000 --rate 50 100 200 --json out.json

The client costs CPU too: on a 2-core box it competes with the server, so every step reports
the client's own CPU per request. Two clients (--client): httpx (AsyncClient, HTTP/1.1
keep-alive; measured here ~2.5 ms CPU per request) and raw (a minimal HTTP/1.1 client on
asyncio streams, ~0.4 ms per request), which the benchmarks use by default so that the server
keeps the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.config import default_data_dir
from bench.images import load_samples
from bench.stats import fmt, summarize

CLASSIFY_PATH = "/v1/classify"
HEADERS = {"content-type": "image/jpeg"}


@dataclass
class Outcome:
    latency_ms: float
    status: int | str  # HTTP status, or the exception's type name
    phases_ms: dict[str, float]


@dataclass
class StepResult:
    mode: str  # "closed" or "open"
    concurrency: int | None
    offered_rate: float | None
    duration_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    dropped: int  # open loop: arrivals not sent because max_outstanding requests were in flight
    throughput_rps: float
    latency_ms: dict[str, float]  # of successful requests
    phases_ms: dict[str, float]  # mean of each Server-Timing phase, successful requests
    client_cpu_ms_per_request: float
    # Filled in by bench.servers.load_step: the server process's use over the step.
    server_cpu_cores: float = float("nan")
    server_peak_rss_mb: float = float("nan")

    @property
    def server_cpu_ms_per_request(self) -> float:
        rps = self.throughput_rps
        return self.server_cpu_cores * 1000 / rps if rps else float("nan")

    @property
    def load(self) -> str:
        return f"c={self.concurrency}" if self.mode == "closed" else f"{self.offered_rate:.0f}/s"


def parse_server_timing(header: str | None) -> dict[str, float]:
    """'decode;dur=2.1, queue;dur=0.3' -> {'decode': 2.1, 'queue': 0.3} (unknown parts ignored)."""
    phases: dict[str, float] = {}
    for part in (header or "").split(","):
        name, *params = (p.strip() for p in part.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if key == "dur" and name:
                try:
                    phases[name] = float(value)
                except ValueError:
                    continue
    return phases


class Sender(Protocol):
    async def post(self, body: bytes, since: float) -> Outcome: ...

    async def aclose(self) -> None: ...


class HttpxSender:
    """The issue's client: httpx.AsyncClient, HTTP/1.1 keep-alive, one pool of connections."""

    def __init__(self, url: str, connections: int) -> None:
        self.url = url
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0))

    async def post(self, body: bytes, since: float) -> Outcome:
        try:
            response = await self.client.post(self.url, content=body, headers=HEADERS)
            await response.aread()
        except httpx.HTTPError as exc:
            return Outcome((time.perf_counter() - since) * 1000, type(exc).__name__, {})
        timing = parse_server_timing(response.headers.get("server-timing"))
        return Outcome((time.perf_counter() - since) * 1000, response.status_code, timing)

    async def aclose(self) -> None:
        await self.client.aclose()


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class RawSender:
    """A minimal HTTP/1.1 client on asyncio streams, for when the client's own CPU matters
    (it shares the server's 2 cores): request heads built once, no header objects, a few
    times less CPU per request than httpx. Reopens connections the server closes (Flask's
    development server answers HTTP/1.0: one connection per request)."""

    def __init__(self, url: str, connections: int) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n"
        )
        self.idle: list[Connection] = []

    async def _exchange(self, conn: Connection, body: bytes) -> tuple[int, dict[str, str], bool]:
        reader, writer = conn
        writer.write(self.head.format(len(body)).encode() + body)
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        version, status = head[0].split(" ", 2)[:2]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        await reader.readexactly(int(headers["content-length"]))
        connection = headers.get("connection", "").lower()
        keep = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        return int(status), headers, keep

    async def post(self, body: bytes, since: float) -> Outcome:
        # A reused connection may have been closed by the server while idle: retry once, fresh.
        for attempt in range(2):
            reused = bool(self.idle) and attempt == 0
            conn = self.idle.pop() if reused else None
            try:
                conn = conn or await asyncio.open_connection(self.host, self.port)
                status, headers, keep = await self._exchange(conn, body)
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
                if conn is not None:
                    conn[1].close()
                if reused:
                    continue
                return Outcome((time.perf_counter() - since) * 1000, type(exc).__name__, {})
            latency = (time.perf_counter() - since) * 1000
            if keep:
                self.idle.append(conn)
            else:
                conn[1].close()
            return Outcome(latency, status, parse_server_timing(headers.get("server-timing")))
        raise AssertionError("unreachable: the second attempt always returns")

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()


SENDERS: dict[str, Callable[[str, int], Sender]] = {"httpx": HttpxSender, "raw": RawSender}
CLIENTS = {
    "httpx": "httpx.AsyncClient, HTTP/1.1 keep-alive",
    "raw": "a minimal asyncio HTTP/1.1 keep-alive client, a few times cheaper than httpx",
}


async def closed_loop(
    sender: Sender, bodies: Sequence[bytes], concurrency: int, duration_s: float
) -> tuple[list[Outcome], float, int]:
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    stop = start + duration_s

    async def user(index: int) -> None:
        while time.perf_counter() < stop:
            body = bodies[index % len(bodies)]
            index += concurrency
            outcomes.append(await sender.post(body, time.perf_counter()))

    await asyncio.gather(*(user(i) for i in range(concurrency)))
    return outcomes, time.perf_counter() - start, 0


async def open_loop(
    sender: Sender, bodies: Sequence[bytes], rate: float, duration_s: float, max_outstanding: int
) -> tuple[list[Outcome], float, int]:
    """Poisson arrivals (seeded), each request timed from its scheduled send time."""
    arrivals = random.Random(0)
    outcomes: list[Outcome] = []
    dropped = 0
    in_flight: set[asyncio.Task[None]] = set()

    async def send(body: bytes, scheduled: float) -> None:
        outcomes.append(await sender.post(body, scheduled))

    start = time.perf_counter()
    scheduled, index = start, 0
    while scheduled < start + duration_s:
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_outstanding:
            dropped += 1
        else:
            task = asyncio.create_task(send(bodies[index % len(bodies)], scheduled))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        index += 1
        scheduled += arrivals.expovariate(rate)
    await asyncio.gather(*in_flight)
    return outcomes, time.perf_counter() - start, dropped


def _result(
    mode: str,
    outcomes: list[Outcome],
    elapsed_s: float,
    cpu_s: float,
    concurrency: int | None = None,
    rate: float | None = None,
    dropped: int = 0,
) -> StepResult:
    good = [o for o in outcomes if o.status == 200]
    errors = Counter(str(o.status) for o in outcomes if o.status != 200)
    phase_names = sorted({name for o in good for name in o.phases_ms})
    phases = {
        name: sum(o.phases_ms.get(name, 0.0) for o in good) / len(good) for name in phase_names
    }
    return StepResult(
        mode=mode,
        concurrency=concurrency,
        offered_rate=rate,
        duration_s=elapsed_s,
        sent=len(outcomes),
        ok=len(good),
        errors=dict(errors),
        dropped=dropped,
        throughput_rps=len(good) / elapsed_s if elapsed_s else 0.0,
        latency_ms=summarize([o.latency_ms for o in good]).as_dict(),
        phases_ms=phases,
        client_cpu_ms_per_request=cpu_s * 1000 / max(1, len(outcomes)),
    )


async def _measured(
    step: Awaitable[tuple[list[Outcome], float, int]], mode: str, **labels: Any
) -> StepResult:
    cpu0 = time.process_time()
    outcomes, elapsed, dropped = await step
    cpu_s = time.process_time() - cpu0
    return _result(mode, outcomes, elapsed, cpu_s, dropped=dropped, **labels)


async def run_steps(
    base_url: str,
    bodies: Sequence[bytes],
    concurrencies: Sequence[int],
    rates: Sequence[float],
    duration_s: float,
    warmup_s: float,
    client: str = "httpx",
    max_outstanding: int = 512,
) -> list[StepResult]:
    url = base_url.rstrip("/") + CLASSIFY_PATH
    sender = SENDERS[client](url, max([max_outstanding if rates else 1, *concurrencies]))
    try:
        if warmup_s > 0:  # not recorded: connections, caches, the server's first batches
            await closed_loop(sender, bodies, max([4, *concurrencies][:2]), warmup_s)
        results = []
        for c in concurrencies:
            step = closed_loop(sender, bodies, c, duration_s)
            results.append(await _measured(step, "closed", concurrency=c))
        for rate in rates:
            step = open_loop(sender, bodies, rate, duration_s, max_outstanding)
            results.append(await _measured(step, "open", rate=rate))
        return results
    finally:
        await sender.aclose()


def print_table(results: Sequence[StepResult]) -> None:
    print(
        f"{'mode':6} {'conc':>5} {'rate':>7} {'ok':>6} {'err':>5} {'rps':>8} "
        f"{'p50':>8} {'p90':>8} {'p99':>8}  phases (mean ms)"
    )
    for r in results:
        phases = " ".join(f"{k}={v:.1f}" for k, v in r.phases_ms.items())
        print(
            f"{r.mode:6} {r.concurrency or '-':>5} {fmt(r.offered_rate, 0):>7} {r.ok:>6} "
            f"{sum(r.errors.values()) + r.dropped:>5} {r.throughput_rps:>8.1f} "
            f"{r.latency_ms['p50']:>8.1f} {r.latency_ms['p90']:>8.1f} {r.latency_ms['p99']:>8.1f}"
            f"  {phases}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="HTTP load generator for POST /v1/classify")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[])
    parser.add_argument("--rate", type=float, nargs="*", default=[], help="offered req/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds, not recorded")
    parser.add_argument("--images", type=int, default=64, help="distinct JPEGs to cycle")
    parser.add_argument(
        "--data-dir", type=Path, default=default_data_dir(), help="env IMGCLS_DATA_DIR"
    )
    parser.add_argument("--client", choices=sorted(SENDERS), default="httpx")
    parser.add_argument("--json", type=Path, help="write the results here ('-' for stdout)")
    args = parser.parse_args(argv)
    if not args.concurrency and not args.rate:
        args.concurrency = [1, 4, 16, 64]
    bodies = [s.jpeg for s in load_samples(args.data_dir, args.images)]
    results = asyncio.run(
        run_steps(
            args.url,
            bodies,
            args.concurrency,
            args.rate,
            args.duration,
            args.warmup,
            args.client,
        )
    )
    payload = json.dumps([asdict(r) for r in results], indent=2)
    if args.json and str(args.json) == "-":
        sys.stdout.write(payload + "\n")
        return
    if args.json:
        args.json.write_text(payload + "\n")
    print_table(results)


if __name__ == "__main__":
    main()
