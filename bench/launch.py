"""Start a server and wait until it is ready: the one way bench/, tests/e2e and tests/deploy
do it. A process (``started``) or any URL (``wait_ready``: a container's) is polled on
``/readyz`` until it answers 200, within a bound; a process that exits meanwhile, or a bound
that passes, raises NotReady with the tail of its log, never hangs. A started process is
stopped on the way out, gracefully (SIGTERM, then SIGKILL) or at once."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

Log = Path | Callable[[], str] | None  # a log file, or a callable returning the text


class NotReady(RuntimeError):
    """A server that exited, or did not answer ready in time; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(log: Log, chars: int = 4000) -> str:
    if isinstance(log, Path):
        with contextlib.suppress(OSError):
            return log.read_text(errors="replace")[-chars:]
        return ""
    return log()[-chars:] if log is not None else ""


def wait_ready(
    url: str,
    timeout_s: float,
    *,
    exited: Callable[[], int | None] = lambda: None,
    log: Log = None,
    interval_s: float = 0.01,
) -> float:
    """Poll ``url``/readyz until 200; the seconds it took. ``exited`` returns a process's exit
    code once it has ended (a dead server is not waited for)."""
    started = time.monotonic()
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < started + timeout_s:
            if (code := exited()) is not None:
                raise NotReady(f"{url} exited with {code}\n{log_tail(log)}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(url + "/readyz").status_code == 200:
                    return time.monotonic() - started
            time.sleep(interval_s)
    raise NotReady(f"{url}/readyz did not answer 200 within {timeout_s:.0f} s\n{log_tail(log)}")


def stop(proc: subprocess.Popen[Any], graceful_s: float | None = 15.0) -> None:
    """SIGTERM and up to ``graceful_s`` for the process to end, then SIGKILL (None: at once)."""
    if proc.poll() is not None:
        return
    if graceful_s is not None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=graceful_s)
            return
    proc.kill()
    proc.wait()


@dataclass(frozen=True)
class Started:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    ready_s: float  # from just before the process was spawned to its first 200 from /readyz


@contextlib.contextmanager
def started(
    command: Sequence[str],
    port: int,
    log: Path,
    env: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 120.0,
    wait: bool = True,
    graceful_s: float | None = 15.0,
    cwd: Path | None = None,
) -> Iterator[Started]:
    """``command`` run with ``env`` added to this process's environment, its output to
    ``log``, serving on 127.0.0.1:``port``; ready (unless ``wait`` is False), then stopped."""
    environment = {**os.environ, **(env or {})}
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        began = time.monotonic()
        proc = subprocess.Popen(
            list(command), stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=cwd
        )
    try:
        if wait:
            wait_ready(url, timeout_s, exited=proc.poll, log=log)
        yield Started(proc, url, log, time.monotonic() - began if wait else 0.0)
    finally:
        stop(proc, graceful_s)
