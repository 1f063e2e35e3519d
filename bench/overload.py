"""Overload: open-loop arrivals at 4x the measured capacity against a small admission queue.

    python -m bench.overload [--quick]      (or: python -m bench.run_all --only overload)

A server under overload must refuse cheaply at the door and keep serving what it admitted at
full speed. Capacity is measured first (closed loop, 16 callers); then Poisson arrivals at
OVERLOAD x that rate, each request timed from its scheduled send. Reported: goodput (answers
200 per second, as a share of capacity), how fast a refused caller gets its 503, and the
admitted requests' latency against the request deadline. Targets (issue 7): goodput >= 90 %
of capacity, 503 p99 < 10 ms, admitted p99 within the deadline.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from bench.config import BenchConfig, load_jpegs, run_benchmark
from bench.loadgen import Outcome, RawSender, closed_loop, open_loop
from bench.report import Section, Summary, fmt, summarize, table, verdict
from bench.servers import running, service_spec

MODEL = "resnet18"
OVERLOAD = 4.0
QUEUE_CAPACITY = 16  # small, so that most arrivals are refused
DEADLINE_S = 10.0  # the service's default IMGCLS_REQUEST_TIMEOUT_S
GOODPUT_TARGET = 0.90
REFUSAL_P99_TARGET_MS = 10.0


@dataclass(frozen=True)
class OverloadResult:
    capacity_rps: float
    offered_rps: float
    goodput_rps: float
    admitted_ms: Summary
    refused_ms: Summary
    other: dict[str, int]  # statuses besides 200 and 503

    @property
    def goodput_share(self) -> float:
        return self.goodput_rps / self.capacity_rps if self.capacity_rps else 0.0

    def targets(self) -> list[tuple[str, str, bool]]:
        return [
            (
                f"goodput >= {GOODPUT_TARGET:.0%} of capacity",
                f"{self.goodput_share:.0%}",
                self.goodput_share >= GOODPUT_TARGET,
            ),
            (
                f"503 p99 < {REFUSAL_P99_TARGET_MS:.0f} ms",
                f"{fmt(self.refused_ms.p99)} ms",
                self.refused_ms.p99 < REFUSAL_P99_TARGET_MS,
            ),
            (
                f"admitted p99 < deadline ({DEADLINE_S:.0f} s)",
                f"{fmt(self.admitted_ms.p99)} ms",
                self.admitted_ms.p99 < DEADLINE_S * 1e3,
            ),
            ("no other status", str(self.other or "none"), not self.other),
        ]


def _latencies(outcomes: list[Outcome], status: int) -> Summary:
    return summarize([o.latency_ms for o in outcomes if o.status == status])


async def measure(url: str, bodies: list[bytes], seconds: float) -> OverloadResult:
    sender = RawSender(url + "/v1/classify", 512)
    try:
        await closed_loop(sender.post, bodies, 16, seconds / 4)  # warm-up, not recorded
        outcomes, elapsed, _ = await closed_loop(sender.post, bodies, 16, seconds)
        capacity = sum(o.status == 200 for o in outcomes) / elapsed
        offered = capacity * OVERLOAD
        outcomes, elapsed, dropped = await open_loop(sender.post, bodies, offered, seconds, 2048)
    finally:
        await sender.aclose()
    other: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.status not in (200, 503):
            other[str(outcome.status)] = other.get(str(outcome.status), 0) + 1
    if dropped:
        other["not sent (client limit)"] = dropped
    return OverloadResult(
        capacity,
        offered,
        sum(o.status == 200 for o in outcomes) / elapsed,
        _latencies(outcomes, 200),
        _latencies(outcomes, 503),
        other,
    )


def run(cfg: BenchConfig) -> Section:
    section = Section("overload", f"Overload: open loop at {OVERLOAD:.0f}x capacity")
    seconds = 4.0 if cfg.quick else 12.0
    spec = service_spec(cfg, MODEL, "cpu", None, name="service overload")
    # As deployed (an access-log line per request), with a small admission queue.
    env = {"IMGCLS_QUEUE_CAPACITY": str(QUEUE_CAPACITY), "IMGCLS_LOG_LEVEL": "info"}
    spec = replace(spec, env=spec.env | env)
    with running(cfg, spec) as server:
        result = asyncio.run(measure(server.url, load_jpegs(cfg.data_dir, 64), seconds))
    section.data["overload"] = result
    section.add(
        f"{MODEL} int8, CPU provider, IMGCLS_QUEUE_CAPACITY={QUEUE_CAPACITY}, access log on; "
        f"capacity {fmt(result.capacity_rps)} req/s (closed loop, 16 callers), then Poisson "
        f"arrivals at {fmt(result.offered_rps)} req/s for {seconds:.0f} s."
    )
    rows = [
        ["admitted (200)", fmt(result.goodput_rps), *_cells(result.admitted_ms)],
        ["refused (503)", "", *_cells(result.refused_ms)],
    ]
    section.add(table(["answers", "per second", "count", "p50 ms", "p99 ms", "max ms"], rows))
    rows = [[name, measured, verdict(ok)] for name, measured, ok in result.targets()]
    section.add("### Issue 7 targets\n\n" + table(["target", "measured", ""], rows))
    return section


def _cells(summary: Summary) -> list[object]:
    return [summary.count, fmt(summary.p50), fmt(summary.p99), fmt(summary.max)]


if __name__ == "__main__":
    run_benchmark(run, __doc__)
