"""Pillow's kept image blocks (IMGCLS_IMAGE_BLOCK_CACHE_BYTES): what they save on phone photos
and what they cost on small ones, by what the servers decoded before.

    python -m bench.experiments.image_blocks [--quick] [--out DIR]

Two servers run side by side, identical but for the setting: 0 (the default: every large
image's pixels mapped and zero-filled afresh, glibc's mmap threshold being 1 MB in the
service) and 64 MiB. Three phases, in this order, each of closed-loop steps at 1 and 16 users
alternated between the servers round by round (medians reported): 500x375 JPEGs on fresh
servers (the kept blocks are small ones), 12 MP phone JPEGs, and 500x375 JPEGs again (the kept
blocks were a 12 MP photo's). Reported: throughput, p50, the server's CPU per request and its
RSS (peak during the steps, and once idle after them).
"""

from __future__ import annotations

import statistics
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, replace

import psutil  # type: ignore[import-untyped]

from bench.config import BenchConfig, image_paths, load_jpegs, run_benchmark
from bench.launch import Started
from bench.loadgen.http1 import CLASSIFY_PATH
from bench.loadgen.loops import closed_step
from bench.loadgen.outcomes import StepResult
from bench.report import Section, bar, fmt, table
from bench.servers import UsageSampler, running, service_spec
from build.phone_photos import phone_jpegs
from build.photo_size import default_cache

MODEL = "resnet18"
SETTINGS = {
    "kept 0": {"IMGCLS_IMAGE_BLOCK_CACHE_BYTES": "0"},
    "kept 64 MiB": {"IMGCLS_IMAGE_BLOCK_CACHE_BYTES": str(64 << 20)},
}
USERS = (1, 16)
PHOTOS = 24


@dataclass(frozen=True)
class Plan:
    rounds: int
    duration_s: float


FULL, QUICK = Plan(3, 10.0), Plan(1, 1.5)


@dataclass(frozen=True)
class Measured:
    step: StepResult
    cpu_ms_per_request: float
    peak_rss_mb: float


def run(cfg: BenchConfig) -> Section:
    section = Section("image_blocks", "Kept image blocks: phone photos and small JPEGs")
    if not cfg.built([MODEL], section):
        return section
    plan = QUICK if cfg.quick else FULL
    photos = PHOTOS // 6 if cfg.quick else PHOTOS
    small = load_jpegs(cfg.data_dir)
    workloads = {
        "500x375 JPEG, fresh": small,
        "12 MP JPEG": phone_jpegs(image_paths(cfg.data_dir, photos), "12mp", default_cache()),
        "500x375 JPEG, after 12 MP": small,
    }
    runs: dict[tuple[str, str, int], list[Measured]] = {}
    idle_rss: dict[str, float] = {}
    progress = bar(plan.rounds * len(workloads) * len(USERS) * len(SETTINGS), "image blocks")
    with ExitStack() as stack:
        servers = {name: stack.enter_context(_server(cfg, name, value)) for name, value in
                   SETTINGS.items()}  # fmt: skip
        for server in servers.values():  # unrecorded: first batches, connections
            _measure(server, small, 16, 1.0)
        for workload, bodies in workloads.items():
            for round_index in range(plan.rounds):
                names = list(SETTINGS) if round_index % 2 == 0 else list(reversed(SETTINGS))
                for users in USERS:
                    for name in names:
                        measured = _measure(servers[name], bodies, users, plan.duration_s)
                        runs.setdefault((name, workload, users), []).append(measured)
                        progress.update(1)
        for name, server in servers.items():
            idle_rss[name] = psutil.Process(server.proc.pid).memory_info().rss / 2**20
    progress.close()
    _report(section, plan, runs, idle_rss, {w: len(b) for w, b in workloads.items()})
    return section


def _server(
    cfg: BenchConfig, name: str, setting: dict[str, str]
) -> AbstractContextManager[Started]:
    spec = service_spec(cfg, MODEL, "auto", None, name=f"service {name}")
    env = setting | {"IMGCLS_INFERENCE_STREAMS": "2"}
    return running(cfg, replace(spec, env=spec.env | env))


def _measure(server: Started, bodies: list[bytes], users: int, seconds: float) -> Measured:
    with UsageSampler(server.proc.pid) as usage:
        step = closed_step(server.url + CLASSIFY_PATH, bodies, users, seconds)
    return Measured(step, 1000 * usage.cpu_s / max(1, step.ok), usage.peak_rss_mb)


def _report(
    section: Section,
    plan: Plan,
    runs: dict[tuple[str, str, int], list[Measured]],
    idle_rss: dict[str, float],
    images: dict[str, int],
) -> None:
    def median(key: tuple[str, str, int], value: str) -> float:
        if value == "cpu":
            return statistics.median(m.cpu_ms_per_request for m in runs[key])
        if value == "rss":
            return max(m.peak_rss_mb for m in runs[key])
        return statistics.median(m.step.figure(value) for m in runs[key])

    off = next(iter(SETTINGS))
    rows = []
    for name, workload, users in runs:
        key, base = (name, workload, users), (off, workload, users)
        rows.append(
            [
                workload, users, name,
                fmt(median(key, "throughput")),
                fmt(median(key, "throughput") / median(base, "throughput"), 3),
                fmt(median(key, "p50"), 2),
                fmt(median(key, "cpu"), 2),
                fmt(median(key, "cpu") / median(base, "cpu"), 3),
                fmt(median(key, "rss"), 0),
                fmt(median(key, "errors"), 0),
            ]
        )  # fmt: skip
    headers = [
        "workload", "users", "setting", "req/s", "x kept 0", "p50 ms", "server CPU ms/req",
        "x kept 0", "peak RSS MB", "errors",
    ]  # fmt: skip
    section.add(
        f"{MODEL} int8, provider auto, 2 inference streams in both servers; phases in order; "
        f"{plan.duration_s:g} s per step, median of {plan.rounds} interleaved rounds; "
        + ", ".join(f"{w}: {n} images" for w, n in images.items())
        + ". RSS once idle after the steps: "
        + ", ".join(f"{name} {fmt(mb, 0)} MB" for name, mb in idle_rss.items())
        + "."
    )
    section.add(table(headers, rows))
    section.data = {
        "runs": {" / ".join(map(str, k)): [m.step.__dict__ for m in v] for k, v in runs.items()},
        "idle_rss_mb": idle_rss,
    }


if __name__ == "__main__":
    run_benchmark(run, __doc__)
