"""Watching a server process while a test attacks it: its resident memory (sampled every 10 ms
from /proc, the peak kept) and how long /livez takes to answer (asked one after another from
another thread). The attack itself runs in another process where it is CPU-heavy, so this
process's GIL does not delay the probe."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.conftest import ServiceProcess


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


@dataclass
class Watch:
    baseline_mb: float
    peak_mb: float = 0.0
    livez_s: list[float] = field(default_factory=list)
    livez_statuses: set[int] = field(default_factory=set)

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.baseline_mb

    @property
    def slowest_livez_s(self) -> float:
        return max(self.livez_s)


@contextlib.contextmanager
def watching(server: ServiceProcess) -> Iterator[Watch]:
    pid = server.process.pid
    watch = Watch(baseline_mb=rss_mb(pid))
    watch.peak_mb = watch.baseline_mb
    stop = threading.Event()

    def sample_memory() -> None:
        while not stop.wait(0.01):
            watch.peak_mb = max(watch.peak_mb, rss_mb(pid))

    def probe_liveness() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while True:  # ask first: an attack refused at once still gets one answer timed
                started = time.perf_counter()
                watch.livez_statuses.add(client.get("/livez").status_code)
                watch.livez_s.append(time.perf_counter() - started)
                if stop.wait(0.02):
                    return

    threads = [threading.Thread(target=f) for f in (sample_memory, probe_liveness)]
    for thread in threads:
        thread.start()
    try:
        yield watch
    finally:
        stop.set()
        for thread in threads:
            thread.join()
