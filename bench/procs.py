"""Child processes the benchmarks start: engine workers spoken to over JSON lines, servers
waited on with a bounded readiness poll, and a psutil sampler for a server's CPU and RSS."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import psutil  # type: ignore[import-untyped]


class ChildFailed(RuntimeError):
    """A child process died or did not become ready in time; the message carries its log tail."""


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class JsonLineChild:
    """A child that answers one JSON line per JSON line it is sent (bench.engine_worker)."""

    def __init__(self, cmd: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._log_file: IO[str] = log.open("w")
        self.proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env=env,
        )

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None  # set by Popen(stdout=PIPE)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise ChildFailed(
                f"{self.log.stem} exited with {self.proc.returncode}:\n{log_tail(self.log)}"
            )
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server child process; ``started`` is the monotonic time just before Popen."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    started: float
    ready_s: float = float("nan")

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(
    name: str,
    cmd: Sequence[str],
    port: int,
    log: Path,
    env: dict[str, str] | None = None,
    ready_path: str = "/readyz",
    timeout_s: float = 120.0,
) -> Server:
    """Start a server and poll ``ready_path`` every 10 ms until it answers 200, at most
    ``timeout_s``. Ready time counts from just before the process is spawned."""
    full_env = {**os.environ, **(env or {})}
    with log.open("wb") as log_file:
        started = time.monotonic()
        proc = subprocess.Popen(list(cmd), stdout=log_file, stderr=subprocess.STDOUT, env=full_env)
    server = Server(name, proc, f"http://127.0.0.1:{port}", log, started)
    deadline = started + timeout_s
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ChildFailed(f"{name} exited with {proc.returncode}:\n{log_tail(log)}")
            try:
                if client.get(server.url + ready_path).status_code == 200:
                    server.ready_s = time.monotonic() - started
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.01)
    server.stop()
    raise ChildFailed(f"{name} was not ready within {timeout_s} s:\n{log_tail(log)}")


@dataclass
class Usage:
    cpu_s: float = 0.0  # user + system CPU seconds of the server (and its children)
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def cpu_cores(self) -> float:
        """Average cores busy: 2.0 means both cores of this machine were fully used."""
        return self.cpu_s / self.wall_s if self.wall_s else float("nan")


class UsageSampler:
    """Samples a process tree's RSS every 50 ms in a thread and its CPU time at both ends."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.usage = Usage()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _cpu(self) -> float:
        total = 0.0
        for proc in self._tree():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total

    def _rss_mb(self) -> float:
        total = 0
        for proc in self._tree():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.usage.peak_rss_mb = max(self.usage.peak_rss_mb, self._rss_mb())

    def __enter__(self) -> UsageSampler:
        self._cpu0, self._t0 = self._cpu(), time.monotonic()
        self.usage.peak_rss_mb = self._rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.usage.cpu_s = self._cpu() - self._cpu0
        self.usage.wall_s = time.monotonic() - self._t0
