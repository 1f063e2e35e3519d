"""The servers the HTTP benchmarks compare, and how one is measured: start it, wait for
readiness, run the load generator in a SEPARATE process per step (the client must not share
the server's interpreter), and sample the server's CPU and RSS meanwhile."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from tqdm import tqdm

from bench.config import BenchConfig, model_file
from bench.loadgen import StepResult
from bench.procs import Server, UsageSampler, free_port, start_server
from service.manifest import load_manifest


@dataclass(frozen=True)
class ServerSpec:
    name: str  # short label used in tables and plots
    description: str
    module: str  # python -m <module>
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()


def service_spec(
    cfg: BenchConfig, model: str, provider: str, max_batch: int | None, name: str | None = None
) -> ServerSpec:
    """The service; ``max_batch`` None keeps the service's default, 1 turns batching off."""
    env = {
        "IMGCLS_MODEL_DIR": str(cfg.model_dir(model)),
        "IMGCLS_PROVIDER": provider,
        "IMGCLS_LOG_LEVEL": "warning",  # an access-log line per request would cost CPU
    }
    if max_batch is None:
        batching = "default batching"
    else:
        env["IMGCLS_MAX_BATCH_SIZE"] = str(max_batch)
        batching = f"batching on (max {max_batch})" if max_batch > 1 else "batching off"
    return ServerSpec(
        name=name or f"service {provider} {'nobatch' if max_batch == 1 else 'batch'}",
        description=f"imgcls service, {model} int8, provider {provider}, {batching}",
        module="service",
        env=env,
    )


def peer_spec(
    cfg: BenchConfig, peer: str, model: str = "resnet18", lazy: bool = False
) -> ServerSpec:
    descriptions = {
        "flask_torchscript": "the write-up's architecture: Flask dev server (threaded), "
        "TorchScript resnet18 preloaded and warmed up, torchvision transforms",
        "fastapi_ort": "plain FastAPI + ONNX Runtime, same int8 file, CPU provider, default "
        "session options, no batching, decode in the handler",
    }
    model_dir = cfg.model_dir(model)
    args: tuple[str, ...] = (
        f"--model={model}",
        f"--labels={model_dir / load_manifest(model_dir).labels}",
    )
    if peer == "fastapi_ort":
        args += (f"--model-file={model_file(model_dir, 'int8')}",)
    if lazy:
        return ServerSpec(
            name=peer.replace("_", " + ") + " lazy",
            description="the write-up's 'before': Flask + TorchScript loading the model on the "
            "first request, no warm-up",
            module=f"bench.peers.{peer}",
            args=(*args, "--lazy"),
        )
    return ServerSpec(peer.replace("_", " + "), descriptions[peer], f"bench.peers.{peer}", {}, args)


@contextmanager
def running(cfg: BenchConfig, spec: ServerSpec) -> Iterator[Server]:
    port = free_port()
    cmd = [cfg.python, "-m", spec.module, *spec.args]
    env = {**spec.env, "IMGCLS_PORT": str(port), "IMGCLS_HOST": "127.0.0.1"}
    if spec.module != "service":
        cmd.append(f"--port={port}")
    logs = cfg.out_dir / "logs"
    logs.mkdir(exist_ok=True)
    server = start_server(spec.name, cmd, port, logs / f"{spec.name.replace(' ', '_')}.log", env)
    try:
        yield server
    finally:
        server.stop()


def load_step(
    cfg: BenchConfig,
    server: Server,
    concurrency: int | None = None,
    rate: float | None = None,
    duration_s: float = 5.0,
    warmup_s: float = 0.0,
) -> StepResult:
    """One load step from a fresh client process; the loadgen result plus the server's CPU use
    (cores) and peak RSS over the step."""
    cmd = [
        cfg.python,
        "-m",
        "bench.loadgen",
        f"--url={server.url}",
        f"--duration={duration_s}",
        f"--warmup={warmup_s}",
        f"--data-dir={cfg.data_dir}",
        f"--client={cfg.client}",
        "--json=-",
    ]
    cmd += [f"--concurrency={concurrency}"] if concurrency else [f"--rate={rate}"]
    with UsageSampler(server.proc.pid) as sampler:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr[-2000:]}")
    (step,) = json.loads(done.stdout)
    result = StepResult(**step)
    result.server_cpu_cores = sampler.usage.cpu_cores
    result.server_peak_rss_mb = sampler.usage.peak_rss_mb
    return result


@dataclass(frozen=True)
class ServerResult:
    name: str
    description: str
    ready_s: float
    steps: list[StepResult]
    saturation_rps: float  # the best closed-loop throughput: the server's capacity here

    def at_concurrency(self, concurrency: int) -> StepResult | None:
        return next((s for s in self.steps if s.concurrency == concurrency), None)

    def c1_p50(self) -> float | None:
        step = self.at_concurrency(1)
        return step.latency_ms["p50"] if step else None

    @property
    def closed(self) -> list[StepResult]:
        return [s for s in self.steps if s.mode == "closed"]

    def best(self) -> StepResult:
        return max(self.closed, key=lambda s: s.throughput_rps)


def measure_server(
    cfg: BenchConfig,
    spec: ServerSpec,
    concurrencies: Sequence[int],
    duration_s: float,
    warmup_s: float,
    progress: tqdm,
    rate_fractions: Sequence[float] = (),
) -> ServerResult:
    """Closed loop at each concurrency (warm-up before the first), then open loop at each
    fraction of the best closed-loop throughput."""
    with running(cfg, spec) as server:
        steps = []
        for index, concurrency in enumerate(concurrencies):
            warm = warmup_s if index == 0 else 0.0
            steps.append(load_step(cfg, server, concurrency, None, duration_s, warm))
            progress.update(1)
        capacity = max((s.throughput_rps for s in steps), default=0.0)
        for fraction in rate_fractions:
            steps.append(load_step(cfg, server, None, max(1.0, capacity * fraction), duration_s))
            progress.update(1)
    return ServerResult(spec.name, spec.description, server.ready_s, steps, capacity)
