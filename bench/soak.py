"""Soak and chaos: minutes of mixed traffic, valid and hostile, against one running service.

    python -m bench.soak [--quick]      (or: python -m bench.run_all --only soak)

Five kinds of caller run side by side: valid JPEGs (closed loop), invalid bodies (noise, a
truncated JPEG), oversized uploads (a Content-Length over the limit), slow uploads (a photo in
small pieces over about a second) and callers that hang up halfway through their upload. The
report gives every kind's answers by status (anything unexpected, and any 5xx, fails the run),
the server's RSS every second (its growth over the second half must stay small: no leak), and
the valid callers' latency before, during and after the chaos (after must be back to before).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.config import BenchConfig, load_jpegs, run_benchmark
from bench.launch import Started
from bench.loadgen.http1 import CLASSIFY_PATH, exchange_once
from bench.report import Section, Summary, fmt, line_plot, summarize, table, verdict
from bench.servers import running, service_spec

MODEL = "efficientnet_lite0"
VALID_USERS = 4
# What each kind of caller may get back; anything else is a failure. 499 is never seen by a
# caller (it hung up): "gone" counts those.
EXPECTED = {
    "valid": {"200"},
    "invalid": {"400", "415"},
    "oversized": {"413"},
    "slow": {"200"},
    "disconnecting": {"gone"},
}
HOSTILE_PAUSE_S = 0.05  # each hostile caller: at most ~20 requests/s, mischief not a flood
RSS_GROWTH_LIMIT_MB = 20.0  # over the run's second half
RECOVERY_LIMIT = 1.5  # valid p50 after the chaos / before


@dataclass
class Tally:
    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # valid callers only

    def record(self, kind: str, status: str) -> None:
        self.statuses.setdefault(kind, Counter())[status] += 1


async def chaos(url: str, photos: list[bytes], seconds: float, tally: Tally) -> None:
    """Every kind of caller at once, each on a fresh connection per request (a fresh
    connection keeps one kind's misbehaviour from touching another's)."""
    rng, stop, url = random.Random(0), time.monotonic() + seconds, url + CLASSIFY_PATH

    async def loop(kind: str, call: Callable[[bytes], Awaitable[str]]) -> None:
        index = 0
        while time.monotonic() < stop:
            photo = photos[index % len(photos)]
            index += 1
            started = time.perf_counter()
            status = await call(photo)
            if kind == "valid":
                tally.latencies_ms.append((time.perf_counter() - started) * 1e3)
            tally.record(kind, status)
            if kind != "valid":
                await asyncio.sleep(HOSTILE_PAUSE_S)

    def noise(photo: bytes) -> Awaitable[str]:
        junk = rng.randbytes(2048) if rng.random() < 0.5 else photo[: len(photo) // 3]
        return exchange_once(url, [junk])

    def slow(photo: bytes) -> Awaitable[str]:
        step = len(photo) // 20 + 1
        return exchange_once(url, [photo[i : i + step] for i in range(0, len(photo), step)], 0.05)

    def hang_up(photo: bytes) -> Awaitable[str]:
        return exchange_once(url, [photo[:1000]], length=len(photo), hang_up=True)

    await asyncio.gather(
        *(loop("valid", lambda p: exchange_once(url, [p])) for _ in range(VALID_USERS)),
        loop("invalid", noise),
        loop("oversized", lambda p: exchange_once(url, [], length=1 << 30)),
        loop("slow", slow),
        loop("disconnecting", hang_up),
    )


async def valid_only(url: str, photos: list[bytes], seconds: float) -> Summary:
    tally, stop, url = Tally(), time.monotonic() + seconds, url + CLASSIFY_PATH

    async def user(index: int) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            tally.record("valid", await exchange_once(url, [photos[index % len(photos)]]))
            tally.latencies_ms.append((time.perf_counter() - started) * 1e3)
            index += 1

    def hang_up(photo: bytes) -> Awaitable[str]:
        return exchange_once(url, [photo[:1000]], length=len(photo), hang_up=True)

    await asyncio.gather(*(user(i) for i in range(VALID_USERS)))
    return summarize(tally.latencies_ms)


def server_5xx(url: str) -> int:
    """5xx answers the server itself counted (the client cannot see a hung-up caller's)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("imgcls_http_requests_total{")
        and 'status="5' in line
        and 'route="/readyz"' not in line  # 503 while it loaded: meant
    )


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


async def sample_rss(pid: int, every_s: float, into: list[tuple[float, float]]) -> None:
    started = time.monotonic()
    while True:
        into.append((time.monotonic() - started, rss_mb(pid)))
        await asyncio.sleep(every_s)


@dataclass(frozen=True)
class SoakResult:
    seconds: float
    statuses: dict[str, dict[str, int]]
    unexpected: dict[str, dict[str, int]]
    before: Summary
    during: Summary
    after: Summary
    rss: list[tuple[float, float]]  # (seconds, MB)
    server_5xx: int

    @property
    def rss_growth_mb(self) -> float:
        """RSS at the end minus RSS halfway: warm-up growth (caches, arenas) is left out."""
        half = [mb for t, mb in self.rss if t >= self.seconds / 2]
        return half[-1] - half[0] if len(half) > 1 else 0.0

    @property
    def recovered(self) -> float:
        return self.after.p50 / self.before.p50

    @property
    def passed(self) -> bool:
        return (
            not self.unexpected
            and self.server_5xx == 0
            and self.rss_growth_mb < RSS_GROWTH_LIMIT_MB
            and self.recovered < RECOVERY_LIMIT
        )


async def soak(server: Started, photos: list[bytes], seconds: float) -> SoakResult:
    settle_s = 5.0 if seconds < 60 else 15.0
    before = await valid_only(server.url, photos, settle_s)
    tally, rss = Tally(), list[tuple[float, float]]()
    sampler = asyncio.create_task(sample_rss(server.proc.pid, 1.0, rss))
    try:
        await chaos(server.url, photos, seconds, tally)
    finally:
        sampler.cancel()
    after = await valid_only(server.url, photos, settle_s)
    unexpected = {
        kind: {s: n for s, n in counts.items() if s not in EXPECTED[kind]}
        for kind, counts in tally.statuses.items()
    }
    return SoakResult(
        seconds,
        {kind: dict(counts) for kind, counts in tally.statuses.items()},
        {kind: found for kind, found in unexpected.items() if found},
        before,
        summarize(tally.latencies_ms),
        after,
        rss,
        await asyncio.to_thread(server_5xx, server.url),
    )


def run(cfg: BenchConfig, minutes: float | None = None) -> Section:
    section = Section("soak", "Soak and chaos: mixed valid and hostile traffic")
    seconds = 60 * (minutes if minutes is not None else (0.25 if cfg.quick else 5))
    photos = load_jpegs(cfg.data_dir, 32)
    spec = service_spec(cfg, MODEL, "cpu", None, name="service soak")
    with running(cfg, spec) as server:
        result = asyncio.run(soak(server, photos, seconds))
    section.data["soak"] = result
    rows = [
        [kind, sum(counts.values()), ", ".join(f"{s}: {n}" for s, n in sorted(counts.items()))]
        for kind, counts in result.statuses.items()
    ]
    section.add(
        f"{seconds / 60:.1f} minutes, {MODEL}, CPU provider, {VALID_USERS} valid callers and "
        "one of each hostile kind, fresh connection per request.\n\n"
        + table(["caller", "requests", "answers by status"], rows)
    )
    latency = [
        [phase, fmt(s.p50), fmt(s.p99), s.count]
        for phase, s in (
            ("before", result.before),
            ("during", result.during),
            ("after", result.after),
        )
    ]
    section.add(table(["valid callers", "p50 ms", "p99 ms", "requests"], latency))
    rss = [mb for _, mb in result.rss]
    section.add(
        f"RSS: {fmt(rss[0], 0)} MB at the start, {fmt(max(rss), 0)} MB at most, "
        f"{fmt(rss[-1], 0)} MB at the end; growth over the second half "
        f"{fmt(result.rss_growth_mb)} MB (limit {RSS_GROWTH_LIMIT_MB:.0f}). Valid p50 after / "
        f"before: {result.recovered:.2f} (limit {RECOVERY_LIMIT}). Unexpected answers: "
        f"{result.unexpected or 'none'}; 5xx counted by the server: {result.server_5xx}. "
        f"**{verdict(result.passed)}**"
    )
    times = [t for t, _ in result.rss]
    section.plots.append(
        line_plot(
            cfg.out_dir / "soak_rss.png",
            {"server RSS": (times, rss)},
            ("Soak: RSS", "s", "MB"),
            logy=False,
        )
    )
    return section


if __name__ == "__main__":
    run_benchmark(run, __doc__)
