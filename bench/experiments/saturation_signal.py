"""What the autoscaling targets rest on (docs/guide/operations.md#targets): the service's
saturation signals against offered load. The service's best closed-loop throughput is measured
first; then Poisson arrivals at fractions of it, and for each step the signals as Prometheus
would compute them from the counters (deltas over the step): the mean images in flight
(imgcls_in_flight_image_seconds_total's rate) over the capacity, the mean queue wait, and the
server's CPU beside the latency callers saw.

    python -m bench.experiments.saturation_signal [--model resnet18] [--seconds 10]
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import httpx

from bench.config import BenchConfig, config_from_args, load_jpegs, parser
from bench.launch import Started
from bench.loadgen.http1 import CLASSIFY_PATH, RawSender
from bench.loadgen.loops import closed_loop, open_loop
from bench.loadgen.outcomes import StepResult, measure_step
from bench.report import fmt, table
from bench.servers import UsageSampler, running, service_spec

FRACTIONS = (0.3, 0.5, 0.7, 0.85, 0.95, 1.1)
COUNTERS = (
    "imgcls_in_flight_image_seconds_total",
    "imgcls_queue_wait_seconds_sum",
    "imgcls_queue_wait_seconds_count",
    "imgcls_capacity_images",
)


@dataclass(frozen=True)
class Signals:
    step: StepResult
    saturation: float  # mean in flight / capacity over the step
    queue_wait_ms: float  # mean over the step's images
    cpu_cores: float


def counters(server: Started) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    found = {}
    for name in COUNTERS:
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        found[name] = float(match.group(1)) if match else 0.0
    return found


def signals(server: Started, jpegs: list[bytes], rate: float | None, seconds: float) -> Signals:
    before = counters(server)
    with UsageSampler(server.proc.pid) as usage:
        step = asyncio.run(_step(server, jpegs, rate, seconds))
    after = counters(server)
    delta = {name: after[name] - before[name] for name in COUNTERS}
    in_flight = delta["imgcls_in_flight_image_seconds_total"] / usage.wall_s
    waits = delta["imgcls_queue_wait_seconds_count"]
    queue_ms = 1000 * delta["imgcls_queue_wait_seconds_sum"] / waits if waits else 0.0
    return Signals(step, in_flight / after["imgcls_capacity_images"], queue_ms, usage.cpu_cores)


async def _step(
    server: Started, jpegs: list[bytes], rate: float | None, seconds: float
) -> StepResult:
    sender = RawSender(server.url + CLASSIFY_PATH, 512)
    try:
        if rate is None:
            run = closed_loop(sender.post, jpegs, 16, seconds)
            return await measure_step(run, "closed", concurrency=16)
        run = open_loop(sender.post, jpegs, rate, seconds, 512)
        return await measure_step(run, "open", rate=rate)
    finally:
        await sender.aclose()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    cfg: BenchConfig = config_from_args(args)
    jpegs = load_jpegs(cfg.data_dir)
    spec = service_spec(cfg, args.model, "auto", None, name="service saturation")
    with running(cfg, spec) as server:
        signals(server, jpegs, None, 2.0)  # warm-up
        best = signals(server, jpegs, None, args.seconds).step.throughput_rps
        rows = []
        for fraction in FRACTIONS:
            s = signals(server, jpegs, best * fraction, args.seconds)
            refused = sum(s.step.errors.values()) / max(1, s.step.sent)
            rows.append([
                f"{fraction:.2f}", fmt(s.step.throughput_rps), fmt(s.cpu_cores, 2),
                fmt(s.saturation, 3), fmt(s.saturation * 64, 1), fmt(s.queue_wait_ms, 1),
                fmt(s.step.latency_ms["p50"]), fmt(s.step.latency_ms["p99"]), f"{refused:.1%}",
            ])  # fmt: skip
    print(f"{args.model}: best closed-loop throughput {best:.1f} req/s (16 users)\n")
    headers = [
        "offered / best", "req/s", "server CPU cores", "saturation (mean)", "in flight",
        "queue wait ms", "p50 ms", "p99 ms", "refused",
    ]  # fmt: skip
    print(table(headers, rows))


if __name__ == "__main__":
    main()
