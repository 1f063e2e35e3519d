"""The load generator: asyncio clients posting real JPEGs to POST /v1/classify. Closed loop (N
concurrent users, each sends its next request when the last one returns) gives throughput and
latency against concurrency; open loop (Poisson arrivals at a fixed offered rate, latency
counted from each request's SCHEDULED send time so a slow server cannot hide its queue) gives
latency against offered load. The client costs CPU too: on a 2-core box it competes with the
server, so every step reports the client's own CPU per request. Two clients (--client): httpx
(~2.5 ms CPU per request here) and raw (~0.4 ms), which the benchmarks use by default.

    python -m bench.loadgen --url http://127.0.0.1:8000 --concurrency 1 4 16 64 --duration 10
    python -m bench.loadgen --url http://127.0.0.1:8000 --rate 50 100 200 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import httpx

from bench.config import load_jpegs
from bench.report import fmt, summarize, table
from service import paths

CLASSIFY_PATH = "/v1/classify"
HEADERS = {"content-type": "image/jpeg"}
ANSWER_TIMEOUT_S = 60.0  # six times the service's default deadline: an answer lost, not late


@dataclass
class Outcome:
    latency_ms: float
    status: int | str  # HTTP status, or the exception's type name
    phases_ms: dict[str, float]
    # How late the client began to send after ``since`` (open loop: the scheduled time): the
    # load generator's own share of the latency, when it shares the server's cores.
    sent_late_ms: float = 0.0

    @classmethod
    def since(
        cls,
        since: float,
        status: int | str,
        server_timing: str | None = None,
        sent_late_ms: float = 0.0,
    ) -> Outcome:
        """Timed from ``since`` to now; phases from a Server-Timing header."""
        latency_ms = (time.perf_counter() - since) * 1000
        return cls(latency_ms, status, parse_server_timing(server_timing), sent_late_ms)


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
        for key, _, value in (param.partition("=") for param in params):
            if key == "dur" and name:
                with contextlib.suppress(ValueError):
                    phases[name] = float(value)
    return phases


# Send one body; latency counts from ``since`` (open loop: the scheduled send time).
Post = Callable[[bytes, float], Awaitable[Outcome]]
Step = tuple[list[Outcome], float, int]  # a step's outcomes, seconds taken, arrivals dropped
Mode = Literal["open", "closed"]  # Poisson arrivals at a rate, or a number of users in a loop


class HttpxSender:
    """The issue's client: httpx.AsyncClient, HTTP/1.1 keep-alive, one pool of connections."""

    about = "httpx.AsyncClient, HTTP/1.1 keep-alive"

    def __init__(self, url: str, connections: int) -> None:
        self.url = url
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(ANSWER_TIMEOUT_S))

    async def post(self, body: bytes, since: float) -> Outcome:
        try:  # reads the whole body
            response = await self.client.post(self.url, content=body, headers=HEADERS)
        except httpx.HTTPError as exc:
            return Outcome.since(since, type(exc).__name__)
        return Outcome.since(since, response.status_code, response.headers.get("server-timing"))

    async def aclose(self) -> None:
        await self.client.aclose()


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class RawSender:
    """A minimal HTTP/1.1 client on asyncio streams, for when the client's own CPU matters
    (it shares the server's 2 cores): request heads built once, no header objects, a few
    times less CPU per request than httpx. Reopens connections the server closes (Flask's
    development server answers HTTP/1.0: one connection per request)."""

    about = "a minimal asyncio HTTP/1.1 keep-alive client, a few times cheaper than httpx"

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
        fields = (line.partition(":") for line in head[1:])
        headers = {name.strip().lower(): value.strip() for name, _, value in fields}
        await reader.readexactly(int(headers["content-length"]))
        connection = headers.get("connection", "").lower()
        keep = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        return int(status), headers, keep

    async def post(self, body: bytes, since: float) -> Outcome:
        late_ms = (time.perf_counter() - since) * 1000
        # A reused connection may have been closed by the server while idle: retry once, fresh.
        for attempt in range(2):
            reused = bool(self.idle) and attempt == 0
            conn = self.idle.pop() if reused else None
            try:
                # Bounded, as httpx's client is: a lost answer is recorded, never waited for.
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    conn = conn or await asyncio.open_connection(self.host, self.port)
                    status, headers, keep = await self._exchange(conn, body)
            except TimeoutError:  # an OSError, but not one a fresh connection would cure
                if conn is not None:
                    conn[1].close()
                return Outcome.since(since, "NoAnswer", sent_late_ms=late_ms)
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
                if conn is not None:
                    conn[1].close()
                if reused:
                    continue
                return Outcome.since(since, type(exc).__name__, sent_late_ms=late_ms)
            outcome = Outcome.since(
                since, status, headers.get("server-timing"), sent_late_ms=late_ms
            )
            if keep:
                self.idle.append(conn)
            else:
                conn[1].close()
            return outcome
        raise AssertionError("unreachable: the second attempt always returns")

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()


SENDERS: dict[str, type[HttpxSender | RawSender]] = {"httpx": HttpxSender, "raw": RawSender}


@contextlib.contextmanager
def no_collector_pauses() -> Iterator[None]:
    """No cyclic garbage collection during a step: a full collection of the client's heap
    takes ~53-80 ms (measured in bench.overload's client), and a request scheduled meanwhile
    would be charged to the server. A step's garbage is mostly freed by reference
    counting; the cycles it leaves wait until the step ends."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


async def closed_loop(post: Post, bodies: Sequence[bytes], users: int, duration_s: float) -> Step:
    """``users`` concurrent users, each sending its next body when its last one is answered."""
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    stop = start + duration_s

    async def user(index: int) -> None:
        while time.perf_counter() < stop:
            body = bodies[index % len(bodies)]
            index += users
            outcomes.append(await post(body, time.perf_counter()))

    with no_collector_pauses():
        await asyncio.gather(*(user(i) for i in range(users)))
    return outcomes, time.perf_counter() - start, 0


async def open_loop(
    post: Post,
    bodies: Sequence[bytes],
    rate: float,
    duration_s: float,
    max_outstanding: int,
    seed: int = 0,
) -> Step:
    """Poisson arrivals (seeded), each request timed from its scheduled send time."""
    arrivals = random.Random(seed)
    outcomes: list[Outcome] = []
    dropped = 0
    in_flight: set[asyncio.Task[None]] = set()

    async def send(body: bytes, scheduled: float) -> None:
        outcomes.append(await post(body, scheduled))

    with no_collector_pauses():
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


async def measure_step(
    step: Awaitable[Step], mode: str, concurrency: int | None = None, rate: float | None = None
) -> StepResult:
    """Run one step and sum it up: successful requests' latency and phases, the rest as errors
    by status, the client's CPU per request sent."""
    cpu0 = time.process_time()
    outcomes, elapsed_s, dropped = await step
    cpu_s = time.process_time() - cpu0
    good = [o for o in outcomes if o.status == 200]
    phase_names = sorted({name for o in good for name in o.phases_ms})
    return StepResult(
        mode=mode,
        concurrency=concurrency,
        offered_rate=rate,
        duration_s=elapsed_s,
        sent=len(outcomes),
        ok=len(good),
        errors=dict(Counter(str(o.status) for o in outcomes if o.status != 200)),
        dropped=dropped,
        throughput_rps=len(good) / elapsed_s if elapsed_s else 0.0,
        latency_ms=asdict(summarize([o.latency_ms for o in good])),
        phases_ms={n: sum(o.phases_ms.get(n, 0.0) for o in good) / len(good) for n in phase_names},
        client_cpu_ms_per_request=cpu_s * 1000 / max(1, len(outcomes)),
    )


async def run_steps(args: argparse.Namespace, max_outstanding: int = 512) -> list[StepResult]:
    """The steps the command line asks for (see main): closed loop at each concurrency, then
    open loop at each rate, after an unrecorded warm-up."""
    bodies = load_jpegs(args.data_dir, args.images)
    concurrencies: list[int] = args.concurrency or ([] if args.rate else [1, 4, 16, 64])
    url = args.url.rstrip("/") + CLASSIFY_PATH
    sender = SENDERS[args.client](url, max([max_outstanding if args.rate else 1, *concurrencies]))
    try:
        if args.warmup > 0:  # not recorded: connections, caches, the server's first batches
            await closed_loop(sender.post, bodies, max([4, *concurrencies][:2]), args.warmup)
        results = []
        for c in concurrencies:
            step = closed_loop(sender.post, bodies, c, args.duration)
            results.append(await measure_step(step, "closed", concurrency=c))
        for rate in args.rate:
            step = open_loop(sender.post, bodies, rate, args.duration, max_outstanding)
            results.append(await measure_step(step, "open", rate=rate))
        return results
    finally:
        await sender.aclose()


STEP_HEADERS = [
    *("server", "load", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "server CPU (cores)"),
    *("server CPU ms/req", "server peak RSS MB", "decode ms", "queue ms", "inference ms"),
    *("HTTP+client ms", "client CPU ms/req"),
]


def step_row(name: str, step: StepResult) -> list[object]:
    """A table row; the HTTP share is end to end minus the server's own total (Server-Timing)."""
    phases, latency = step.phases_ms, step.latency_ms
    http = latency["mean"] - phases["total"] if "total" in phases else float("nan")
    return [
        *(name, step.load, fmt(step.throughput_rps)),
        *(fmt(latency[p]) for p in ("p50", "p90", "p99")),
        sum(step.errors.values()) + step.dropped,
        fmt(step.server_cpu_cores, 2),
        fmt(step.server_cpu_ms_per_request, 1),
        fmt(step.server_peak_rss_mb, 0),
        *(fmt(phases.get(k)) for k in ("decode", "queue", "inference")),
        fmt(http),
        fmt(step.client_cpu_ms_per_request, 2),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="HTTP load generator for POST /v1/classify")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[])
    parser.add_argument("--rate", type=float, nargs="*", default=[], help="offered req/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds, not recorded")
    parser.add_argument("--images", type=int, default=64, help="distinct JPEGs to cycle")
    parser.add_argument("--data-dir", type=Path, default=paths.data_dir(), help=paths.DATA_DIR_ENV)
    parser.add_argument("--client", choices=sorted(SENDERS), default="httpx")
    parser.add_argument("--json", type=Path, help="write the results here ('-' for stdout)")
    args = parser.parse_args()
    results = asyncio.run(run_steps(args))
    payload = json.dumps([asdict(r) for r in results], indent=2) + "\n"
    if str(args.json) == "-":
        sys.stdout.write(payload)
        return
    if args.json:
        args.json.write_text(payload)
    print(table(STEP_HEADERS, [step_row(args.url, r) for r in results]))


if __name__ == "__main__":
    main()
