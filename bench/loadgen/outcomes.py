"""What one request and one load step come to: an Outcome per request (status, latency from its
scheduled or actual send, the server's Server-Timing phases) and a StepResult per step (counts,
throughput, latency percentiles, mean phases, the client's own CPU per request)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Literal

from bench.report import fmt, summarize


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


# Send one body; latency counts from ``since`` (open loop: the scheduled send time).
Post = Callable[[bytes, float], Awaitable[Outcome]]
Step = tuple[list[Outcome], float, int]  # a step's outcomes, seconds taken, arrivals dropped
Mode = Literal["open", "closed"]  # Poisson arrivals at a rate, or a number of users in a loop


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

    def figure(self, name: str) -> float:
        """One of the step's figures by name, for tables over many runs: throughput, p50, p99,
        errors (requests not answered 200)."""
        if name == "throughput":
            return self.throughput_rps
        if name in ("p50", "p99"):
            return float(self.latency_ms[name])
        if name == "errors":
            return float(self.sent - self.ok)
        raise ValueError(f"no figure {name!r} in a step")


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
