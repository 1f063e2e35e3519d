"""OpenTelemetry tracing (issue 21): what it costs, off and on, closed loop, and the cost of
its hooks when it is off.

    python -m bench.experiments.tracing [--quick] [--out DIR]

Three servers run side by side and the steps alternate between them, round by round (medians
reported), so a noisy neighbour hits all alike: tracing off (no OTEL_* variables), on with every
request sampled, and on with 1 % sampled (parentbased_traceidratio 0.01, a usual production
setting). The two traced servers export OTLP/HTTP to a real receiver in its own process
(bench/otlp_receiver.py --quiet), which decodes every span. The load sends no traceparent: the
sampler decides at the root. Off, what remains per request is the hooks' ContextVar lookups:
timed here on their own, in nanoseconds.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import timeit
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, replace

import httpx

from bench import launch
from bench.config import BenchConfig, load_jpegs, run_benchmark
from bench.launch import Started
from bench.loadgen.http1 import CLASSIFY_PATH
from bench.loadgen.loops import closed_step
from bench.loadgen.outcomes import StepResult
from bench.report import Section, bar, fmt, table
from bench.servers import UsageSampler, running, service_spec
from service.observability.tracing import current, note_model, traced

MODEL = "resnet18"
USERS = 16  # enough to keep both cores busy, as bench.cache does
MODES = ("off", "on 100 %", "on 1 %")
SAMPLERS: dict[str, dict[str, str]] = {
    "on 100 %": {},  # the SDK's default: parentbased_always_on
    "on 1 %": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    },
}


@dataclass(frozen=True)
class Plan:
    rounds: int
    duration_s: float
    warmup_s: float
    export_delay_ms: int  # OTEL_BSP_SCHEDULE_DELAY: how often the servers send their spans

    @property
    def quiet_s(self) -> float:
        """How long the receiver's count must stand still for a step's spans to be in."""
        return self.export_delay_ms / 1000 + 1.0


# The full run exports as a deployment does (the SDK's default, every 5 s); quick mode, which
# only checks that the benchmark runs, exports often so that it does not wait 6 s per step.
FULL, QUICK = Plan(5, 10.0, 2.0, 5000), Plan(1, 2.0, 0.5, 200)


@dataclass(frozen=True)
class Measured:
    step: StepResult
    server_cpu_ms_per_request: float
    spans_per_request: float  # as the receiver counted them


def run(cfg: BenchConfig) -> Section:
    section = Section("tracing", "OpenTelemetry tracing: off, on, sampled")
    if not cfg.built([MODEL], section):
        return section
    plan = QUICK if cfg.quick else FULL
    jpegs = load_jpegs(cfg.data_dir)
    runs: dict[str, list[Measured]] = {mode: [] for mode in MODES}
    progress = bar(plan.rounds * len(MODES), "tracing")
    with ExitStack() as stack:
        receiver = stack.enter_context(_receiver(cfg))
        export = {"OTEL_BSP_SCHEDULE_DELAY": str(plan.export_delay_ms)}
        servers = {"off": stack.enter_context(_server(cfg, "off", receiver.url, {}))}
        # The batches in flight are chosen at start-up from a measurement (docs/decisions/
        # inference-streams.md): the traced servers take the untraced one's choice, so that
        # the only difference between them is tracing.
        streams = _model(servers["off"])["inference_streams"]
        pinned = {"IMGCLS_INFERENCE_STREAMS": str(streams)} | export
        for mode in MODES[1:]:
            servers[mode] = stack.enter_context(_server(cfg, mode, receiver.url, pinned))
        for server in servers.values():  # unrecorded: first batches, connections
            measure(server, receiver, jpegs, plan.warmup_s, plan.quiet_s)
        for round_index in range(plan.rounds):
            order = MODES if round_index % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                measured = measure(servers[mode], receiver, jpegs, plan.duration_s, plan.quiet_s)
                runs[mode].append(measured)
                progress.update(1)
    progress.close()
    _report(section, plan, runs, len(jpegs), streams)
    return section


def measure(
    server: Started, receiver: Started, jpegs: list[bytes], seconds: float, quiet_s: float
) -> Measured:
    before = _spans(receiver)
    with UsageSampler(server.proc.pid) as usage:
        step = closed_step(server.url + CLASSIFY_PATH, jpegs, USERS, seconds)
    # The servers flush every plan.export_delay_ms: wait for this step's spans.
    after = _settled(receiver, quiet_s)
    ok = max(1, step.ok)
    return Measured(step, 1000 * usage.cpu_s / ok, (after - before) / ok)


def _receiver(cfg: BenchConfig) -> AbstractContextManager[Started]:
    port = launch.free_port()
    command = [cfg.python, "-m", "bench.otlp_receiver", f"--port={port}", "--quiet"]
    return launch.started(command, port, cfg.log("otlp receiver"))


def _model(server: Started) -> dict[str, object]:
    answer: dict[str, object] = httpx.get(server.url + "/v1/model", timeout=10).json()
    return answer


def _server(
    cfg: BenchConfig, mode: str, endpoint: str, env: dict[str, str]
) -> AbstractContextManager[Started]:
    spec = service_spec(cfg, MODEL, "auto", None, name=f"service tracing {mode}")
    spec = replace(spec, env=spec.env | env)
    if mode != "off":
        otel = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        }
        spec = replace(spec, env=spec.env | otel | SAMPLERS[mode])
    return running(cfg, spec)


def _spans(receiver: Started) -> int:
    count: int = httpx.get(receiver.url + "/count", timeout=10).json()["spans"]
    return count


def _settled(receiver: Started, quiet_s: float) -> int:
    """The receiver's span count once it has not moved for ``quiet_s`` (longer than the
    exporters' schedule), bounded."""
    count = _spans(receiver)
    for _ in range(10):
        asyncio.run(asyncio.sleep(quiet_s))
        now = _spans(receiver)
        if now == count:
            return now
        count = now
    return count


@dataclass(frozen=True)
class HookCost:
    traced_ns: float  # a @traced coroutine call with no request span, minus the bare call
    note_model_ns: float
    current_ns: float  # what each queued item's default factory does


def hook_costs(number: int = 200_000) -> HookCost:
    """The per-call cost of the hooks with tracing off (no request span), in ns."""

    async def bare() -> None:
        return None

    wrapped = traced("phase")(bare)

    def drive(call: Callable[[], Awaitable[None]]) -> float:
        async def loop() -> float:
            started = timeit.default_timer()
            for _ in range(number):
                await call()
            return timeit.default_timer() - started

        return asyncio.run(loop())

    overhead = min(drive(wrapped) for _ in range(3)) - min(drive(bare) for _ in range(3))
    model = min(timeit.repeat(lambda: note_model("m", "1"), number=number, repeat=3))
    lookup = min(timeit.repeat(current, number=number, repeat=3))
    return HookCost(overhead / number * 1e9, model / number * 1e9, lookup / number * 1e9)


def _report(
    section: Section, plan: Plan, runs: dict[str, list[Measured]], images: int, streams: object
) -> None:
    def median(mode: str, value: str) -> float:
        return statistics.median(_value(m, value) for m in runs[mode])

    body = []
    for mode in MODES:
        body.append(
            [
                mode,
                fmt(median(mode, "throughput")),
                fmt(median(mode, "throughput") / median("off", "throughput"), 3),
                fmt(median(mode, "p50"), 2),
                fmt(median(mode, "p50") / median("off", "p50"), 3),
                fmt(median(mode, "p99"), 2),
                fmt(median(mode, "p99") / median("off", "p99"), 3),
                fmt(median(mode, "cpu"), 2),
                fmt(median(mode, "spans"), 2),
                fmt(median(mode, "errors"), 0),
            ]
        )
    headers = [
        "tracing", "req/s", "x off", "p50 ms", "x off", "p99 ms", "x off",
        "server CPU ms/req", "spans/req received", "errors",
    ]  # fmt: skip
    hooks = hook_costs()
    section.add(
        f"{MODEL} int8, provider auto, the service's default batching, {streams} inference "
        f"stream(s) in all three (the untraced server's start-up choice); {USERS} users, closed "
        f"loop, {plan.duration_s:g} s per step, median of {plan.rounds} interleaved rounds; "
        f"{images} JPEGs. Traced servers export OTLP/HTTP (BatchSpanProcessor defaults) to a "
        "receiver process on the same machine, which decodes every span. 'x off': the ratio "
        "to tracing off, same run."
    )
    section.add(table(headers, body))
    section.add(
        "Off, per request, the hooks cost (ns, this machine, Python "
        f"{sys.version.split()[0]}): a @traced phase {hooks.traced_ns:.0f} (x2: read body, "
        f"decode), note_model {hooks.note_model_ns:.0f}, each queued image's span lookup "
        f"{hooks.current_ns:.0f}: under a microsecond in all, against milliseconds per request."
    )
    section.data = {
        "plan": plan.__dict__,
        "runs": {mode: [m.__dict__ for m in ms] for mode, ms in runs.items()},
        "hooks_ns": hooks.__dict__,
    }


def _value(run: Measured, value: str) -> float:
    if value == "cpu":
        return run.server_cpu_ms_per_request
    if value == "spans":
        return run.spans_per_request
    return run.step.figure(value)


if __name__ == "__main__":
    run_benchmark(run, __doc__)
