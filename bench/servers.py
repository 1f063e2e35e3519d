"""The servers the HTTP benchmarks compare, and how one is measured: start it in its own
process and wait for readiness (bench.launch), run the load generator in a SEPARATE process per
step (the client must not share the server's interpreter), and sample the server's CPU and RSS
meanwhile with psutil."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from tqdm import tqdm

from bench import launch
from bench.config import BenchConfig, model_file
from bench.launch import Started
from bench.loadgen.outcomes import STEP_HEADERS, StepResult, step_row
from bench.report import fmt, line_plot, table
from service.model.manifest import load_manifest


@dataclass(frozen=True)
class ServerSpec:
    name: str  # short label used in tables and plots
    description: str
    module: str  # python -m <module>
    env: dict[str, str]
    args: tuple[str, ...] = ()


def service_spec(
    cfg: BenchConfig, model: str, provider: str, max_batch: int | None, name: str | None = None
) -> ServerSpec:
    """The service; ``max_batch`` None keeps the service's default, 1 turns batching off."""
    env = {"IMGCLS_MODEL_DIR": str(cfg.model_dir(model)), "IMGCLS_PROVIDER": provider}
    env["IMGCLS_LOG_LEVEL"] = "warning"  # an access-log line per request would cost CPU
    batching = "default batching"
    if max_batch is not None:
        env["IMGCLS_MAX_BATCH_SIZE"] = str(max_batch)
        batching = f"batching on (max {max_batch})" if max_batch > 1 else "batching off"
    name = name or f"service {provider} {'nobatch' if max_batch == 1 else 'batch'}"
    description = f"imgcls service, {model} int8, provider {provider}, {batching}"
    return ServerSpec(name, description, "service", env)


PEERS = {
    "flask_torchscript": "the write-up's architecture: Flask dev server (threaded), "
    "TorchScript resnet18 preloaded and warmed up, torchvision transforms",
    "flask_torchscript lazy": "the write-up's 'before': Flask + TorchScript loading the model on "
    "the first request, no warm-up",
    "fastapi_ort": "plain FastAPI + ONNX Runtime, same int8 file, CPU provider, default "
    "session options, no batching, decode in the handler",
    "fastapi_openvino": "FastAPI + OpenVINO native (issue 10's strongest peer): same int8 QDQ "
    "file read by OpenVINO's own runtime, THROUGHPUT hint, one infer request per worker thread, "
    "decode + inference in Starlette's thread pool, no batching",
    "bentoml_ort": "BentoML + ONNX Runtime with BentoML's adaptive batching (max 8): same int8 "
    "file, CPU provider, intra-op spinning off, decode per request as BentoML parses it, "
    "one worker process (under BentoML's arbiter)",
}
# The peers that serve the service's int8 file itself (--model-file), not a model of their own.
SAME_FILE_PEERS = frozenset({"fastapi_ort", "fastapi_openvino", "bentoml_ort"})


def peer_spec(
    cfg: BenchConfig, peer: str, model: str = "resnet18", lazy: bool = False
) -> ServerSpec:
    model_dir = cfg.model_dir(model)
    args = [f"--model={model}", f"--labels={model_dir / load_manifest(model_dir).labels}"]
    served = model_file(model_dir, "int8")  # this CPU's int8 file, as the service serves it
    args += [f"--model-file={served}"] if peer in SAME_FILE_PEERS else []
    key = peer + (" lazy" if lazy else "")
    args += ["--lazy"] if lazy else []
    return ServerSpec(key.replace("_", " + "), PEERS[key], f"bench.peers.{peer}", {}, tuple(args))


def prepare_flask(cfg: BenchConfig) -> None:
    """Build the TorchScript file before the Flask peer starts, as a deployment would ship it."""
    code = "from bench.torch_models import torchscript_file as f; f('resnet18', uint8_front=False)"
    subprocess.run([cfg.python, "-c", code], check=True, capture_output=True)


@contextmanager
def running(cfg: BenchConfig, spec: ServerSpec) -> Iterator[Started]:
    port = launch.free_port()
    cmd = [cfg.python, "-m", spec.module, *spec.args]
    cmd += [] if spec.module == "service" else [f"--port={port}"]
    env = {**spec.env, "IMGCLS_PORT": str(port), "IMGCLS_HOST": "127.0.0.1"}
    with launch.started(cmd, port, cfg.log(spec.name), env) as server:
        yield server


@dataclass(frozen=True)
class Load:
    """How a server is loaded: closed loop at each concurrency (warm-up before the first), then
    open loop at each fraction of the best closed-loop throughput."""

    concurrencies: tuple[int, ...]
    duration_s: float  # per step
    warmup_s: float
    rate_fractions: tuple[float, ...] = ()


def load_step(
    cfg: BenchConfig,
    server: Started,
    duration_s: float,
    arg: str,
    warmup_s: float = 0.0,
    bodies: tuple[str, ...] = (),
) -> StepResult:
    """One load step (``arg``: --concurrency=N or --rate=R) from a fresh client process; the
    loadgen result plus the server's CPU use (cores) and peak RSS over the step. ``bodies``:
    the loadgen's --bodies/--content-type, when it sends other files than the labeled JPEGs."""
    cmd = [cfg.python, "-m", "bench.loadgen", "--json=-", f"--url={server.url}", arg]
    cmd += [f"--duration={duration_s}", f"--warmup={warmup_s}", f"--data-dir={cfg.data_dir}"]
    cmd += [f"--client={cfg.client}", *bodies]
    with UsageSampler(server.proc.pid) as sampler:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr[-2000:]}")
    (step,) = json.loads(done.stdout)
    usage = {"server_cpu_cores": sampler.cpu_cores, "server_peak_rss_mb": sampler.peak_rss_mb}
    return StepResult(**{**step, **usage})


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
        return step.latency_ms["p50"] if (step := self.at_concurrency(1)) else None

    @property
    def closed(self) -> list[StepResult]:
        return [s for s in self.steps if s.mode == "closed"]

    def best(self) -> StepResult:
        return max(self.closed, key=lambda s: s.throughput_rps)


def measure_server(
    cfg: BenchConfig,
    spec: ServerSpec,
    load: Load,
    progress: tqdm,
    bodies: tuple[str, ...] = (),
) -> ServerResult:
    with running(cfg, spec) as server:
        steps = []
        for index, users in enumerate(load.concurrencies):
            warm = load.warmup_s if index == 0 else 0.0
            arg = f"--concurrency={users}"
            steps.append(load_step(cfg, server, load.duration_s, arg, warm, bodies))
            progress.update(1)
        capacity = max((s.throughput_rps for s in steps), default=0.0)
        for fraction in load.rate_fractions:
            rate = max(1.0, capacity * fraction)
            steps.append(load_step(cfg, server, load.duration_s, f"--rate={rate}", 0.0, bodies))
            progress.update(1)
    return ServerResult(spec.name, spec.description, server.ready_s, steps, capacity)


def breakdown(name: str, step: StepResult) -> str:
    """Where one step's time went, measured: the Server-Timing phases, the rest of the server's
    own total, the HTTP + client share, and CPU per request on both sides."""
    phases, mean = step.phases_ms, step.latency_ms["mean"]
    text = f"{name} at {step.load}: {step.throughput_rps:.1f} req/s, mean {mean:.1f} ms"
    if "total" in phases:
        named = sum(phases.get(k, 0.0) for k in ("decode", "queue", "inference"))
        text += (
            f" = decode {fmt(phases.get('decode'))} + queue {fmt(phases.get('queue'))} + "
            f"inference {fmt(phases.get('inference'))} + other in-server "
            f"{fmt(phases['total'] - named)} + HTTP/transport/client {fmt(mean - phases['total'])}"
        )
    return (
        text + f"; server CPU {step.server_cpu_cores:.2f} cores = "
        f"{step.server_cpu_ms_per_request:.1f} ms/req, client CPU "
        f"{step.client_cpu_ms_per_request:.2f} ms/req"
    )


def steps_table(results: list[ServerResult]) -> str:
    return table(STEP_HEADERS, [step_row(r.name, s) for r in results for s in r.steps])


def latency_plot(path: Path, results: list[ServerResult], pct: str, title: str) -> str:
    """Latency against throughput, one line per server over its closed-loop steps."""
    series = {
        r.name: ([s.throughput_rps for s in r.closed], [s.latency_ms[pct] for s in r.closed])
        for r in results
    }
    return line_plot(path, series, (title, "throughput, req/s", f"{pct} latency, ms"))


class UsageSampler:
    """A process tree's CPU time (user + system, children included) between enter and exit, and
    its peak RSS, sampled every 50 ms in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.cpu_s = self.wall_s = self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @property
    def cpu_cores(self) -> float:
        """Average cores busy: 2.0 means both cores of this machine were fully used."""
        return self.cpu_s / self.wall_s if self.wall_s else float("nan")

    def _sum(self, measure: Callable[[Any], float]) -> float:
        total = 0.0
        with contextlib.suppress(psutil.NoSuchProcess):
            for proc in [self.process, *self.process.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += measure(proc)
        return total

    def _cpu(self) -> float:
        return self._sum(lambda p: sum(p.cpu_times()[:2]))  # user + system

    def _loop(self) -> None:
        while True:
            rss_mb = self._sum(lambda p: p.memory_info().rss) / 2**20
            self.peak_rss_mb = max(self.peak_rss_mb, rss_mb)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> UsageSampler:
        self._cpu0, self._t0 = self._cpu(), time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_s = self._cpu() - self._cpu0
        self.wall_s = time.monotonic() - self._t0
