"""Where the server's CPU goes per request, under load (issue 10).

Starts one server per variant (each a ``python -m service`` with a few uvicorn/logging knobs
forced from outside, see ``serve``), keeps them all up, and runs closed-loop load windows
against them in interleaved rounds (A B C, A B C, ...) so a noisy neighbour hits every variant
alike. For each window it reads the server's CPU time PER THREAD from /proc: the event loop
(MainThread: HTTP parsing, routing, pydantic, JSON, logging, metrics), the decode workers, and
inference (the imgcls-inference thread plus the runtime's own native worker threads). With
``--py-spy`` it also samples each variant for its round-0 window (left out of the medians:
py-spy costs CPU too), splits the event loop's share by what the stack is doing, and writes a
flame graph of all threads.

    python -m bench.experiments.profile --model-dir model_artifacts/resnet18 \\
        --variant base:http=h11,loop=asyncio --variant std:http=httptools,loop=uvloop \\
        --rounds 5 --window 8 --concurrency 16 --py-spy

Numbers are CPU milliseconds per successful request (thread CPU time / requests): they do
not depend on the share of the cores the server got, unlike req/s. The client runs in this
process and shares the machine: its CPU per request is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bench import launch
from bench.config import model_file
from bench.loadgen.http1 import RawSender, multipart
from bench.loadgen.loops import closed_loop
from bench.loadgen.outcomes import Step
from service import paths

CLASSIFY = "/v1/classify"
_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the server side (a variant)


def _name_os_threads() -> None:
    """Give every Python thread its name in /proc (comm), so the profiler can tell the decode
    workers from the inference thread. Python 3.11 leaves them all called "python"."""
    libc = ctypes.CDLL(None)
    original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def named(self: threading.Thread) -> None:
        libc.prctl(15, self.name[:15].encode())  # PR_SET_NAME, this thread only
        original(self)

    threading.Thread._bootstrap_inner = named  # type: ignore[attr-defined]


def _spinning() -> None:
    """ONNX Runtime's intra-op workers spin between runs (its default; service/model/runner.py turns
    it off): the sparse-load mitigation that bench/experiments/lowrate.py prices."""
    from service.model import runner

    plain = runner.session_options

    def spinning(intra_op_threads: int) -> Any:
        options = plain(intra_op_threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        return options

    runner.session_options = spinning


def _openvino_config(path: Path) -> None:
    """OpenVINO sessions get the EP's ``load_config`` (a JSON file of CPU plugin properties,
    e.g. {"CPU": {"ENABLE_CPU_PINNING": "YES"}}): OpenVINO's threading knobs, priced by
    bench/experiments/lowrate.py. The provider takes the JSON text itself: given a path,
    onnxruntime-openvino 1.24 fails to parse it and the session falls back to the CPU
    provider."""
    import onnxruntime as ort

    from service.model import runner
    from service.model.providers import CPU, OPENVINO

    plain = runner.create_session

    def configured(model_path: Path, provider: str, intra_op_threads: int, streams: int = 1) -> Any:
        if provider != OPENVINO:
            return plain(model_path, provider, intra_op_threads, streams)
        options = {
            "device_type": "CPU",
            "num_of_threads": str(intra_op_threads),
            "num_streams": str(streams),
            "load_config": path.read_text(),
        }
        return ort.InferenceSession(
            str(model_path),
            sess_options=runner.session_options(intra_op_threads),
            providers=[(OPENVINO, options), CPU],
        )

    runner.create_session = configured


def serve(knobs: dict[str, str]) -> None:
    """``python -m bench.experiments.profile --serve k=v,...``: the service with uvicorn's
    ``http`` and ``loop`` forced, and optionally: the access log off (``access_log=off``), ONNX
    Runtime's intra-op workers spinning (``spin=1``), OpenVINO CPU properties
    (``ov_config=FILE.json``)."""
    import uvicorn

    from service.__main__ import main

    _name_os_threads()
    init = uvicorn.Config.__init__

    def forced(self: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        for key in ("http", "loop"):
            if key in knobs:
                kwargs[key] = knobs[key]
        init(self, *args, **kwargs)

    uvicorn.Config.__init__ = forced  # type: ignore[method-assign]
    if knobs.get("spin") == "1":
        _spinning()
    if "ov_config" in knobs:
        _openvino_config(Path(knobs["ov_config"]))
    if knobs.get("access_log") == "off":
        import logging

        from service.observability.logs import ACCESS_LOGGER

        logging.getLogger(ACCESS_LOGGER).disabled = True
    main()


# ---------------------------------------------------------------- per-thread CPU from /proc


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds by thread kind: loop (MainThread), decode, inference (the Python thread
    and the runtime's native workers), other (Python threads we did not name)."""
    main_tid = str(pid)
    totals: dict[str, float] = defaultdict(float)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime
        totals[_kind(tid == main_tid, comm)] += cpu
    return dict(totals)


def _kind(is_main: bool, comm: str) -> str:
    if is_main:
        return "loop"
    if comm.startswith("imgcls-decode"):
        return "decode"
    if comm.startswith(("asyncio", "ThreadPool", "Thread-", "AnyIO", "uvloop", "libuv")):
        return "other"  # e.g. FastAPI running a sync dependency in anyio's worker threads
    # imgcls-inference, ORT's intra-op pool and OpenVINO's (TBB) workers: none is Python but ours.
    return "inference"


# ---------------------------------------------------------------- the client


@dataclass
class Window:
    variant: str
    round: int
    seconds: float
    ok: int
    errors: int
    latencies_ms: list[float] = field(repr=False)
    cpu_ms_per_req: dict[str, float]
    client_cpu_ms_per_req: float

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def request_bodies(jpegs: Sequence[bytes], multipart_upload: bool) -> tuple[list[bytes], str]:
    """The bodies to post and their Content-Type: raw JPEGs, or each as a multipart "file"."""
    if not multipart_upload:
        return list(jpegs), "image/jpeg"
    bodies = [multipart([jpeg], "file") for jpeg in jpegs]
    return [body for body, _ in bodies], bodies[0][1]


async def closed(port: int, bodies: Sequence[bytes], kind: str, users: int, seconds: float) -> Step:
    """The load generator's closed loop: each user posts its next image when its last one is
    answered, over keep-alive connections."""
    sender = RawSender(f"http://127.0.0.1:{port}{CLASSIFY}", users, kind)
    try:
        return await closed_loop(sender.post, bodies, users, seconds)
    finally:
        await sender.aclose()


# ---------------------------------------------------------------- running the variants


@dataclass
class Variant:
    name: str
    knobs: dict[str, str]
    env: dict[str, str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None


def parse_variant(text: str) -> Variant:
    """``name:k=v,k=v``: knobs of ``serve`` (http, loop, access_log, spin, ov_config), or
    ``peer=MODULE`` (a server of bench/peers with the same model file), or environment
    variables (upper case: IMGCLS_*)."""
    name, _, spec = text.partition(":")
    knobs: dict[str, str] = {}
    env: dict[str, str] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        (env if key.isupper() else knobs)[key] = value
    return Variant(name, knobs, env)


@contextlib.contextmanager
def started(variants: list[Variant], model_dir: Path, log_dir: Path) -> Iterator[None]:
    """Every variant's server up and ready (bench.launch), stopped on the way out."""
    with contextlib.ExitStack() as stack:
        for v in variants:
            v.port = launch.free_port()
            knobs = ",".join(f"{k}={val}" for k, val in v.knobs.items())
            env = {"IMGCLS_MODEL_DIR": str(model_dir), "IMGCLS_PORT": str(v.port)}
            env |= {"IMGCLS_LOG_LEVEL": "info", **v.env}
            command = [sys.executable, "-m", "bench.experiments.profile", "--serve", knobs]
            if "peer" in v.knobs:  # a peer of bench/peers instead of the service
                command = [
                    *(sys.executable, "-m", f"bench.peers.{v.knobs['peer']}"),
                    *(f"--port={v.port}", f"--labels={model_dir / 'labels.txt'}"),
                    f"--model-file={model_file(model_dir, 'int8')}",  # this CPU's int8 file
                ]
            log = log_dir / f"server-{v.name}.log"
            server = launch.started(command, v.port, log, env, timeout_s=60.0, graceful_s=30.0)
            v.proc = stack.enter_context(server).proc
        yield


def measure(
    v: Variant, requests: tuple[list[bytes], str], concurrency: int, seconds: float, rnd: int
) -> Window:
    assert v.proc is not None
    before = thread_cpu_s(v.proc.pid)
    client0 = time.process_time()
    outcomes, elapsed, _ = asyncio.run(closed(v.port, *requests, concurrency, seconds))
    latencies = [o.latency_ms for o in outcomes if o.status == 200]
    errors = len(outcomes) - len(latencies)
    client = time.process_time() - client0
    after = thread_cpu_s(v.proc.pid)
    ok = max(1, len(latencies))
    per_req = {k: (after.get(k, 0.0) - before.get(k, 0.0)) * 1e3 / ok for k in after}
    per_req["total"] = sum(per_req.values())
    return Window(
        v.name, rnd, elapsed, len(latencies), errors, latencies, per_req, client * 1e3 / ok
    )


# ---------------------------------------------------------------- py-spy: the event loop's split

# First match wins, searched from the innermost frame outwards: the most specific work first.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("logging (access log, JSON formatter)", ("logging/", "pythonjsonlogger")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    (
        "JSON + pydantic (response)",
        (
            "json/",
            "orjson",
            "pydantic",
            "jsonable_encoder",
            "serialize_response",
            "_prepare_response_content",
        ),
    ),
    ("request body + multipart", ("multipart", "formparsers", "uploads.py")),
    ("HTTP parsing + writing (server protocol)", ("h11", "httptools", "uvicorn/protocols")),
    ("asyncio/uvloop scheduling + sockets", ("asyncio/", "uvloop", "selectors")),
    ("FastAPI/Starlette routing + deps", ("fastapi/", "starlette/")),
    ("service (routes, classifier, batcher, middleware)", ("service/",)),
]


def categorise(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other"


def py_spy(pid: int, seconds: float, out: Path) -> tuple[Path, Path]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw, svg = out.with_suffix(".txt"), out.with_suffix(".svg")
    common = ["--pid", str(pid), "--duration", str(int(seconds)), "--nonblocking", "--threads"]
    procs = [
        subprocess.Popen(
            [exe, "record", *common, "--rate", "200", "--gil", "--format", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [exe, "record", *common, "--rate", "50", "-o", str(svg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    del procs  # they end on their own after --duration
    return raw, svg


def loop_split(raw: Path) -> dict[str, float]:
    """Share of the MainThread's samples by category: recorded with --gil, so a sample is the
    loop running Python (or C called from it) while holding the GIL, not waiting for it."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "MainThread" not in stack.split(";", 1)[0]:
            continue
        counts[categorise(stack)] += int(n)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.most_common()}


# ---------------------------------------------------------------- main


def jpegs_of_size(folder: Path, size: tuple[int, int], limit: int) -> list[bytes]:
    out = []
    for path in sorted(folder.glob("*.JPEG")):
        with Image.open(path) as im:
            if im.size == size and im.mode == "RGB":
                out.append(path.read_bytes())
        if len(out) == limit:
            break
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(windows: list[Window]) -> dict[str, Any]:
    lat = [x for w in windows for x in w.latencies_ms]
    kinds = sorted({k for w in windows for k in w.cpu_ms_per_req})
    return {
        "rps_median": statistics.median(w.rps for w in windows),
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "errors": sum(w.errors for w in windows),
        "cpu_ms_per_req_median": {
            k: statistics.median(w.cpu_ms_per_req.get(k, 0.0) for w in windows) for k in kinds
        },
        "client_cpu_ms_per_req": statistics.median(w.client_cpu_ms_per_req for w in windows),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", type=Path, default=Path("model_artifacts/resnet18"))
    p.add_argument("--variant", action="append", default=[], help="name:k=v,... (repeat)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--window", type=float, default=8.0, help="seconds of load per window")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--multipart", action="store_true", help="send multipart uploads")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--py-spy", action="store_true", help="profile each variant's round 0")
    p.add_argument("--out", type=Path, default=Path("bench/results/profile"))
    args = p.parse_args()
    if args.serve is not None:
        serve(dict(kv.split("=", 1) for kv in filter(None, args.serve.split(","))))
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    variants = [parse_variant(t) for t in args.variant] or [parse_variant("default:")]
    folder = paths.data_dir() / "imagenet-sample-images"
    jpegs = jpegs_of_size(folder, (500, 375), args.images)
    requests = request_bodies(jpegs, args.multipart)
    print(f"{len(jpegs)} JPEGs of 500x375; uptime: {os.getloadavg()}", flush=True)
    windows: list[Window] = []
    spy: dict[str, Any] = {}
    with started(variants, args.model_dir, args.out):
        for v in variants:  # warm-up, not recorded
            measure(v, requests, args.concurrency, 2.0, -1)
        for rnd in range(args.rounds):
            for v in variants:
                profiled = args.py_spy and rnd == 0  # round 0 only: py-spy costs CPU too
                if profiled:
                    assert v.proc is not None
                    raw, svg = py_spy(v.proc.pid, args.window, args.out / f"flame-{v.name}")
                    time.sleep(0.5)  # py-spy attaches
                w = measure(v, requests, args.concurrency, args.window, rnd)
                if not profiled:
                    windows.append(w)
                cpu = ", ".join(f"{k} {x:.2f}" for k, x in sorted(w.cpu_ms_per_req.items()))
                print(f"round {rnd} {v.name}: {w.rps:.1f} req/s, cpu/req {cpu}", flush=True)
                if profiled:
                    time.sleep(2.0)
                    spy[v.name] = {"raw": str(raw), "svg": str(svg), "loop_split": loop_split(raw)}
    result = {
        "load_average_end": os.getloadavg(),
        "concurrency": args.concurrency,
        "multipart": args.multipart,
        "model_dir": str(args.model_dir),
        "variants": {
            v.name: {
                "knobs": v.knobs,
                "env": v.env,
                **summary([w for w in windows if w.variant == v.name]),
            }
            for v in variants
        },
        "py_spy": spy,
        "windows": [asdict(w) | {"latencies_ms": None} for w in windows],
    }
    (args.out / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    buf = io.StringIO()
    json.dump({k: result[k] for k in ("variants", "py_spy", "load_average_end")}, buf, indent=2)
    print(buf.getvalue())


if __name__ == "__main__":
    main()
