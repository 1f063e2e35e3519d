"""Model versions swapped under load (issue 21 item 1): what a swap costs callers and the
process. One server, copies of one built model as versions 1 and 2; USERS closed-loop callers
throughout; the steps alternate, round by round, between "steady" (no swap) and "swapping"
(loads back to back, 1 and 2 in turn), so both see the same neighbours.

    python -m bench.experiments.versions [--model efficientnet_lite0] [--rounds 3] [--step-s 8]

Reports p50/p99 of /v1/classify in each kind of step, the time of each load (verify, open,
warm every batch size, swap: the API call), and the RSS once each swapped-out version is
released. tests/e2e/test_live_versions.py drives the same pieces and asserts on correctness.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from bench import launch
from bench.launch import free_port
from service.model.manifest import load_manifest

USERS = 8


@dataclass(frozen=True, slots=True)
class Answer:
    sent: float  # time.monotonic()
    answered: float
    status: int
    version: str | None  # the body's model_version; None when the call failed


@dataclass(frozen=True, slots=True)
class Serving:
    """A version's possible serving window: from when its load began until the next load that
    replaced it ended (the swap itself happens somewhere inside each load call)."""

    version: str
    start: float
    end: float


def jpeg(size: tuple[int, int] = (320, 240)) -> bytes:
    image = Image.new("RGB", size)
    image.putdata([((x * 7) % 256, (y * 5) % 256, (x + y) % 256) for y in range(size[1])
                   for x in range(size[0])])  # fmt: skip
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


@dataclass
class Callers:
    """``users`` threads posting one image to /v1/classify in a loop, each answer recorded."""

    url: str
    users: int = USERS
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Callers:
        body = jpeg()
        for _ in range(self.users):
            thread = threading.Thread(target=self._loop, args=(body,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _loop(self, body: bytes) -> None:
        headers = {"content-type": "image/jpeg"}
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post("/v1/classify?top_k=1", content=body, headers=headers)
                except httpx.HTTPError:
                    self.answers.append(Answer(sent, time.monotonic(), 0, None))
                    continue
                version = response.json().get("model_version") if response.is_success else None
                self.answers.append(Answer(sent, time.monotonic(), response.status_code, version))


def load(client: httpx.Client, model: str, version: str) -> tuple[float, float]:
    """Load ``version`` through the repository API; (began, ended) in time.monotonic()."""
    began = time.monotonic()
    response = client.post(
        f"/v2/repository/models/{model}/load", json={"parameters": {"version": version}}
    )
    response.raise_for_status()
    return began, time.monotonic()


def retiring(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("imgcls_models_retiring "):
            return float(line.split()[1])
    raise RuntimeError("no imgcls_models_retiring in /metrics")


def settled_rss(client: httpx.Client, pid: int, timeout_s: float = 30.0) -> int:
    """The server's RSS (bytes) once every swapped-out version has been released."""
    deadline = time.monotonic() + timeout_s
    while retiring(client) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("a swapped-out version was never released")
        time.sleep(0.05)
    return rss_bytes(pid)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def unexplained(answers: list[Answer], windows: list[Serving]) -> list[Answer]:
    """Answers whose version was not serving at any moment while they were in flight."""
    return [
        a
        for a in answers
        if not any(
            w.version == a.version and w.start <= a.answered and a.sent <= w.end for w in windows
        )
    ]


def copied_model(source: Path, root: Path, versions: tuple[str, ...]) -> Path:
    """root/<v>/: the int8 files, labels and manifest of ``source`` (symlinked: no copies)."""
    manifest = load_manifest(source)
    files = {manifest.labels, "manifest.json"} | {e.path for e in manifest.files.values()}
    for version in versions:
        (root / version).mkdir(parents=True)
        for file in files:
            (root / version / file).symlink_to(source / file)
    return root


@contextlib.contextmanager
def service(model_dir: Path, log: Path, **env: str) -> Iterator[launch.Started]:
    port = free_port()
    environment = {
        "IMGCLS_HOST": "127.0.0.1",
        "IMGCLS_PORT": str(port),
        "IMGCLS_MODEL_DIR": str(model_dir),
        "IMGCLS_PROVIDER": "cpu",
        "IMGCLS_LOG_FORMAT": "json",
        **env,
    }
    with launch.started([sys.executable, "-m", "service"], port, log, environment) as started:
        yield started


def percentiles(answers: list[Answer]) -> tuple[float, float, int]:
    latencies = sorted((a.answered - a.sent) * 1e3 for a in answers)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return statistics.median(latencies), p99, len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--step-s", type=float, default=8.0)
    args = parser.parse_args()
    source = Path("model_artifacts") / args.model
    with tempfile.TemporaryDirectory() as tmp:
        root = copied_model(source.resolve(), Path(tmp) / "model", ("1", "2"))
        with service(root, Path(tmp) / "service.log") as server, Callers(server.url) as callers:
            report(server, callers, args)


def report(server: launch.Started, callers: Callers, args: argparse.Namespace) -> None:
    name = load_manifest(Path("model_artifacts") / args.model).model.name
    steady: list[Answer] = []
    swapping: list[Answer] = []
    loads: list[float] = []
    rss: list[int] = []
    with httpx.Client(base_url=server.url, timeout=120) as client:
        time.sleep(2.0)  # callers warm up
        version = "2"
        for _ in range(args.rounds):
            began = time.monotonic()
            time.sleep(args.step_s)
            steady += [
                a for a in callers.answers if began <= a.sent and a.answered <= time.monotonic()
            ]
            began = time.monotonic()
            while time.monotonic() < began + args.step_s:
                version = "1" if version == "2" else "2"
                start, end = load(client, name, version)
                loads.append(end - start)
            ended = time.monotonic()
            swapping += [a for a in callers.answers if began <= a.sent and a.answered <= ended]
            rss.append(settled_rss(client, server.proc.pid))
    failed = [a for a in callers.answers if a.status != 200]
    print(f"{USERS} callers, /v1/classify, {args.model}, {args.rounds} rounds of {args.step_s} s")
    for label, answers in (("steady", steady), ("swapping", swapping)):
        p50, p99, n = percentiles(answers)
        print(f"{label:9s} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  ({n} answers)")
    print(f"loads: {len(loads)}, median {statistics.median(loads):.2f} s, max {max(loads):.2f} s")
    print(f"RSS after each round, released: {[round(r / 2**20) for r in rss]} MiB")
    print(f"failed answers: {len(failed)} of {len(callers.answers)}")


if __name__ == "__main__":
    main()
