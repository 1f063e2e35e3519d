"""Response cache (issue 21): throughput and latency when 0 %, 50 % or 90 % of requests repeat
an image already sent, with the cache off (IMGCLS_CACHE_BYTES=0) and on, closed loop.

    python -m bench.cache [--quick] [--out DIR]

Two servers run side by side, cache off and on, and the steps alternate between them, round
by round (medians reported), so a noisy neighbour hits both alike. The request stream is
seeded: a repeat is an exact copy of one of the last WINDOW new images; a new image is one of
the sample JPEGs with a unique trailer after its end-of-image marker (decoders stop before it,
the cache key covers it), so every new image costs a full decode and inference. Each step
draws new images of its own: nothing a previous step stored is hit.
"""

from __future__ import annotations

import random
import re
import statistics
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import overload

import httpx

from bench.config import BenchConfig, load_jpegs, run_benchmark
from bench.launch import Started
from bench.loadgen.http1 import CLASSIFY_PATH
from bench.loadgen.loops import closed_step
from bench.loadgen.outcomes import StepResult
from bench.report import Section, bar, fmt, table
from bench.servers import UsageSampler, running, service_spec

MODEL = "resnet18"
REPEATS = (0.0, 0.5, 0.9)
CACHE_BYTES = 64 * 2**20  # ~15 000 images' scores: every step's images fit
USERS = 16  # enough to keep both cores busy, as bench.http's saturation steps do
WINDOW = 64  # a repeat copies one of the last WINDOW new images
PLAN_LENGTH = 200_000  # requests per step before the stream would wrap (none does)


@dataclass(frozen=True)
class Plan:
    rounds: int
    duration_s: float
    warmup_s: float


FULL, QUICK = Plan(3, 8.0, 2.0), Plan(1, 1.5, 0.5)


class Stream(Sequence[bytes]):
    """Request i's body, made on demand: the image ``ids[i]`` of this step."""

    def __init__(self, jpegs: Sequence[bytes], repeat: float, step: int, seed: int = 0) -> None:
        self._jpegs = jpegs
        self._step = step
        self._ids = plan_ids(repeat, random.Random(seed * 1_000_003 + step))

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        image = self._ids[index]
        trailer = f"imgcls-bench step {self._step} image {image}".encode()
        return self._jpegs[image % len(self._jpegs)] + trailer


def plan_ids(repeat: float, rng: random.Random) -> list[int]:
    """Each request's image id: with probability ``repeat`` one of the last WINDOW new ids,
    else the next new id."""
    ids, fresh = [], 0
    for _ in range(PLAN_LENGTH):
        if fresh and rng.random() < repeat:
            ids.append(fresh - 1 - rng.randrange(min(WINDOW, fresh)))
        else:
            ids.append(fresh)
            fresh += 1
    return ids


@dataclass(frozen=True)
class Measured:
    step: StepResult
    answered_by_cache: float  # share of the step's lookups answered without inference
    server_cpu_ms_per_request: float


def cache_counts(server: Started) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    found = re.findall(r'^imgcls_cache_requests_total\{outcome="(\w+)"\} (\S+)$', text, re.M)
    return {outcome: float(value) for outcome, value in found}


def measure(server: Started, stream: Stream, seconds: float) -> Measured:
    before = cache_counts(server)
    with UsageSampler(server.proc.pid) as usage:
        step = closed_step(server.url + CLASSIFY_PATH, stream, USERS, seconds)
    after = cache_counts(server)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("hit", "collapsed", "miss")}
    lookups = sum(delta.values())
    shared = (delta["hit"] + delta["collapsed"]) / lookups if lookups else 0.0
    cpu_ms = 1000 * usage.cpu_s / max(1, step.ok)
    return Measured(step, shared, cpu_ms)


@dataclass(frozen=True)
class Row:
    repeat: float
    cache: str  # "off" | "on"
    runs: list[Measured]

    def median(self, value: str) -> float:
        return statistics.median(_value(run, value) for run in self.runs)


def _value(run: Measured, value: str) -> float:
    if value == "cpu":
        return run.server_cpu_ms_per_request
    if value == "shared":
        return run.answered_by_cache
    return run.step.figure(value)


def run(cfg: BenchConfig) -> Section:
    section = Section("cache", "Response cache: repeated images, cache off and on")
    if not cfg.built([MODEL], section):
        return section
    plan = QUICK if cfg.quick else FULL
    jpegs = load_jpegs(cfg.data_dir)
    rows = {(r, c): Row(r, c, []) for r in REPEATS for c in ("off", "on")}
    progress = bar(plan.rounds * len(rows), "cache")
    with ExitStack() as stack:
        servers = dict(_servers(cfg, stack))
        for cache, server in servers.items():  # unrecorded: first batches, connections
            measure(server, Stream(jpegs, 0.5, step=-1 if cache == "off" else -2), plan.warmup_s)
        for round_index, repeat, cache in _order(plan.rounds):
            step = round_index * 10 + REPEATS.index(repeat)
            stream = Stream(jpegs, repeat, step * 2 + (cache == "on"))
            rows[repeat, cache].runs.append(measure(servers[cache], stream, plan.duration_s))
            progress.update(1)
    progress.close()
    _report(section, cfg, plan, list(rows.values()), len(jpegs))
    return section


def _servers(cfg: BenchConfig, stack: ExitStack) -> Iterator[tuple[str, Started]]:
    for cache, cache_bytes in (("off", 0), ("on", CACHE_BYTES)):
        spec = service_spec(cfg, MODEL, "auto", None, name=f"service cache {cache}")
        spec = replace(spec, env=spec.env | {"IMGCLS_CACHE_BYTES": str(cache_bytes)})
        yield cache, stack.enter_context(running(cfg, spec))


def _order(rounds: int) -> Iterator[tuple[int, float, str]]:
    for round_index in range(rounds):
        for repeat in REPEATS:
            # Alternate which goes first, so neither always follows the other's load.
            first, second = ("off", "on") if round_index % 2 == 0 else ("on", "off")
            yield round_index, repeat, first
            yield round_index, repeat, second


def _report(section: Section, cfg: BenchConfig, plan: Plan, rows: list[Row], images: int) -> None:
    off = {row.repeat: row for row in rows if row.cache == "off"}
    body = []
    for row in rows:
        base = off[row.repeat]
        body.append(
            [
                f"{row.repeat:.0%}",
                row.cache,
                fmt(row.median("throughput")),
                fmt(row.median("throughput") / base.median("throughput"), 2),
                fmt(row.median("p50"), 2),
                fmt(row.median("p50") / base.median("p50"), 2),
                fmt(row.median("p99"), 2),
                f"{row.median('shared'):.0%}",
                fmt(row.median("cpu"), 2),
                fmt(row.median("errors"), 0),
            ]
        )
    headers = [
        "repeated", "cache", "req/s", "x off", "p50 ms", "x off", "p99 ms",
        "answered by cache", "server CPU ms/req", "errors",
    ]  # fmt: skip
    section.add(
        f"{MODEL} int8, provider auto, the service's default batching; {USERS} users, closed "
        f"loop, {plan.duration_s:g} s per step, median of {plan.rounds} interleaved rounds; "
        f"{images} distinct JPEGs made unique by a trailer; cache {CACHE_BYTES >> 20} MiB. "
        "'x off': the ratio to the same stream with the cache off. 'answered by cache': hits "
        "and requests that shared an identical one in flight, from the server's counters."
    )
    section.add(table(headers, body))
    section.data = {
        "plan": plan.__dict__,
        "rows": [
            {"repeat": r.repeat, "cache": r.cache, "runs": [m.__dict__ for m in r.runs]}
            for r in rows
        ],
    }


if __name__ == "__main__":
    run_benchmark(run, __doc__)
