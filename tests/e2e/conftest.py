"""Real servers: ``python -m service`` as its own process on a free loopback port (started and
waited for by bench.launch, the one helper bench/, these tests and tests/deploy share), and
helpers for the outside programs the tests drive (chromium, chromedriver, prometheus).

Waiting for another process to come up is the one place these tests poll: always with a
bounded deadline, and failing with that process's log when it never comes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench import launch
from bench.launch import free_port
from tests.conftest import REPO

STARTUP_TIMEOUT_S = 120.0


def require_binary(name: str) -> str:
    """The path of a Debian program a test needs. Missing: a failure when the CI says real
    servers are required (IMGCLS_REQUIRE_REAL_SERVERS=1), else a skip that says why."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed (apt-get install {name}); this test needs the real program"
    if os.environ.get("IMGCLS_REQUIRE_REAL_SERVERS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, log: Path | Callable[[], str] | None
) -> None:
    """Poll ``check`` (bounded); on timeout fail with the tail of ``log``: a log file, or a
    callable returning the text (a container's logs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.1)
    if isinstance(log, Path):
        tail = log.read_text()[-4000:] if log.exists() else ""
    else:
        tail = log()[-4000:] if log is not None else ""
    pytest.fail(f"{what} not reached within {timeout_s:.0f} s\n{tail}")


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)


@contextlib.contextmanager
def run_service(
    tmp_path: Path, model_dir: Path, *, wait_ready: bool = True, **env: str
) -> Iterator[ServiceProcess]:
    """The service on a free port, ready unless ``wait_ready`` is False; killed afterwards if
    the test has not stopped it."""
    port = free_port()
    log = tmp_path / f"service-{port}.log"
    environment = {
        "IMGCLS_HOST": "127.0.0.1",
        "IMGCLS_PORT": str(port),
        "IMGCLS_MODEL_DIR": str(model_dir),
        "IMGCLS_LOG_FORMAT": "json",
        **env,
    }
    command = [sys.executable, "-m", "service"]
    try:
        with launch.started(
            command, port, log, environment, timeout_s=STARTUP_TIMEOUT_S, wait=wait_ready,
            graceful_s=None, cwd=REPO,
        ) as started:  # fmt: skip
            yield ServiceProcess(started.proc, started.url, log)
    except launch.NotReady as exc:
        pytest.fail(f"the service did not start: {exc}")


@pytest.fixture(scope="session")
def trained_server(
    tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> Iterator[ServiceProcess]:
    with run_service(tmp_path_factory.mktemp("service"), trained_model_dir) as server:
        yield server


__all__ = ["ServiceProcess", "free_port", "require_binary", "run_service", "wait_until"]
