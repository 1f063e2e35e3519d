"""The container image as a user gets it: built ONCE per test session by `make image` (the
air-gapped podman path, deploy/build-image.sh), then run with podman the way the docs say.

Set IMGCLS_TEST_IMAGE=<image> to test an image that is already built instead (no build).
Podman missing: a skip, or a failure when IMGCLS_REQUIRE_REAL_SERVERS=1 (CI)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bench import launch
from tests.conftest import REPO

# trained_server: the service run from the checkout, to compare the image's answers with.
from tests.e2e.conftest import free_port, require_binary, trained_server

# `make image`'s own default, so that in CI every deployment command of the docs runs as written.
TEST_IMAGE = os.environ.get("IMGCLS_TEST_IMAGE", "localhost/imgcls:latest")
# A clean machine: podman install, base image, torch install, model build, runtime stage.
IMAGE_BUILD_TIMEOUT_S = 2400
READY_TIMEOUT_S = 120.0


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} exited {result.returncode}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The runtime image's name, built once per session (podman's layer cache makes a rebuild
    with unchanged sources take seconds)."""
    given = os.environ.get("IMGCLS_TEST_IMAGE")
    if given:
        return given
    require_binary("podman")  # .ci/run installs it (deploy/build-image.sh --host-setup-only)
    log = tmp_path_factory.mktemp("image") / "build.log"
    started = time.monotonic()
    with log.open("wb") as out:
        result = subprocess.run(
            ["make", "image", f"IMGCLS_IMAGE={TEST_IMAGE}"],  # as docs/guide/deployment.md says
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=IMAGE_BUILD_TIMEOUT_S,
            check=False,
        )
    if result.returncode != 0:
        pytest.fail(f"make image exited {result.returncode}\n{log.read_text()[-6000:]}")
    print(f"image {TEST_IMAGE} built in {time.monotonic() - started:.0f} s")
    return TEST_IMAGE


@pytest.fixture(scope="session")
def image_config(image: str) -> dict[str, Any]:
    (inspected,) = json.loads(podman("image", "inspect", image).stdout)
    config: dict[str, Any] = inspected
    return config


@pytest.fixture(scope="session")
def resource_limits(image: str) -> list[str]:
    """--cpus 2 --memory 1g, as the Kubernetes manifests ask, when this host's cgroups let
    podman set them; else none (printed in the test report)."""
    limits = ["--cpus", "2", "--memory", "1g"]
    probe = podman("run", "--rm", *limits, image, "true", check=False)
    if probe.returncode == 0:
        return limits
    print(f"this host refuses CPU/memory limits, running without: {probe.stderr.strip()}")
    return []


@dataclass
class Container:
    name: str
    url: str

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict[str, Any]:
        (inspected,) = json.loads(podman("container", "inspect", self.name).stdout)
        state: dict[str, Any] = inspected
        return state


def wait_ready(url: str, what: str, logs: Callable[[], str]) -> None:
    """bench.launch's readiness wait (the one bench/ and tests/e2e use) on a container's URL."""
    try:
        launch.wait_ready(url, READY_TIMEOUT_S, log=logs, interval_s=0.1)
    except launch.NotReady as exc:
        pytest.fail(f"{what}: {exc}")


@contextlib.contextmanager
def run_container(image: str, *args: str) -> Iterator[Container]:
    """`podman run -d` as a user would: read-only root, the image's non-root user, port 8000
    published on a free loopback port. Removed afterwards whatever happened."""
    name = f"imgcls-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    podman(
        "run", "-d", "--name", name, "--read-only", "-p", f"127.0.0.1:{port}:8000",
        *args, image,
    )  # fmt: skip
    container = Container(name, f"http://127.0.0.1:{port}")
    try:
        wait_ready(container.url, name, container.logs)
        yield container
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


@pytest.fixture(scope="module")
def container(image: str, resource_limits: list[str]) -> Iterator[Container]:
    with run_container(image, *resource_limits) as running:
        yield running


__all__ = ["Container", "podman", "run_container", "trained_server", "wait_ready"]
