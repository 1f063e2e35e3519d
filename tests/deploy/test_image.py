"""The runtime image, run as a user would: read-only root filesystem, its own non-root user,
2 CPUs and 1 GB when the host allows limits. It must answer real photos like the service run
from the checkout, expose its metrics, report healthy, and drain on `podman stop`."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO
from tests.deploy.conftest import Container, podman, run_container, wait_ready
from tests.e2e.conftest import ServiceProcess, free_port, run_service

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(3000)]

# python:3.11-slim-bookworm is ~125 MB (uncompressed). Budget on that base: 450 MB.
SLIM_BASE_MB = 125
RUNTIME_BUDGET_MB = 450
PROVIDER_SETTING = {"CPUExecutionProvider": "cpu", "OpenVINOExecutionProvider": "openvino"}


def classify(url: str, data: bytes, top_k: int) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{url}/v1/classify", params={"top_k": top_k}, files={"file": ("photo", data)}, timeout=60
    )
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def top1(url: str, data: bytes) -> tuple[int, str]:
    best = classify(url, data, 1)[0]
    return best["class_index"], best["label"]


def top5(url: str, data: bytes) -> list[tuple[int, float]]:
    return [(p["class_index"], p["score"]) for p in classify(url, data, 5)]


def test_image_metadata(image_config: dict[str, Any]) -> None:
    config = image_config["Config"]
    assert config["User"] == "10001:10001"
    labels = config["Labels"]
    for key in ("title", "version", "revision", "created", "licenses", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert "/readyz" in " ".join(image_config["Healthcheck"]["Test"])
    assert config["StopSignal"] in ("SIGTERM", "15")


def test_runtime_has_the_service_only(image: str) -> None:
    """No torch, no build/ package, no offline-tool dependencies; the service imports."""
    script = (
        "import importlib.util as u, json, service.app; "
        "print(json.dumps({m: u.find_spec(m) is not None "
        "for m in ['torch', 'torchvision', 'build', 'sympy', 'onnx', 'service']}))"
    )
    found = json.loads(podman("run", "--rm", "--read-only", image, "python", "-c", script).stdout)
    assert found == {
        "torch": False, "torchvision": False, "build": False, "sympy": False, "onnx": False,
        "service": True,
    }  # fmt: skip


def test_runtime_image_size(image: str, image_config: dict[str, Any]) -> None:
    """Measured on the base it was built on; the budget is for the public slim base."""
    base = image_config["Config"]["Labels"]["org.opencontainers.image.base.name"]
    (base_config,) = json.loads(podman("image", "inspect", base).stdout)
    own_mb = (image_config["Size"] - base_config["Size"]) / 1e6
    print(f"runtime image {image_config['Size'] / 1e6:.0f} MB = base {base} "
          f"{base_config['Size'] / 1e6:.0f} MB + {own_mb:.0f} MB of ours")  # fmt: skip
    assert own_mb + SLIM_BASE_MB <= RUNTIME_BUDGET_MB


def test_container_runs_read_only_as_non_root(container: Container) -> None:
    state = container.state()
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    uid = podman("exec", container.name, "id", "-u").stdout.strip()
    assert uid == "10001"


def test_container_classifies_photos_as_expected(
    container: Container, photos: dict[str, Any], photo_bytes: Callable[[str], bytes]
) -> None:
    """The image as a user runs it (default settings): every photo's top-1 is an accepted one."""
    wrong = {}
    for name, expected in photos.items():
        index, label = top1(container.url, photo_bytes(name))
        if expected["assert"] and index not in expected["accept"]:
            wrong[name] = (label, expected["accept_names"])
    assert not wrong, wrong


def image_model_dir(image: str, name: str, into: Path) -> Path:
    """The model directory the image serves, copied out of it (`podman cp` from a created,
    never started container)."""
    created = podman("create", image).stdout.strip()
    try:
        podman("cp", f"{created}:/app/model_artifacts/{name}", str(into))
    finally:
        podman("rm", "-f", created, check=False)
    return into


def test_container_answers_like_the_checkout(
    image: str,
    resource_limits: list[str],
    trained_server: ServiceProcess,
    photos: dict[str, Any],
    photo_bytes: Callable[[str], bytes],
    tmp_path: Path,
) -> None:
    """The image's runtime (its Python, Pillow, NumPy, ONNX Runtime, settings) gives the same
    answers as `python -m service` from the checkout serving the very model file the image
    built. The image calibrates its own int8 model at build time (on the data it was given, or on
    the package photos without it), so its int8 weights may differ from the checkout's own build
    and near-ties then flip: a comparison of two different models would test calibration, not
    the image. Same execution provider too (the automatic choice times both at start, and
    providers break near-ties differently)."""
    checkout = httpx.get(f"{trained_server.url}/v1/model", timeout=10).json()
    provider = PROVIDER_SETTING[checkout["provider"]]
    with run_container(image, *resource_limits, "-e", f"IMGCLS_PROVIDER={provider}") as running:
        model = httpx.get(f"{running.url}/v1/model", timeout=10).json()
        assert model["provider"] == checkout["provider"]
        model_dir = image_model_dir(image, model["name"], tmp_path / model["name"])
        with run_service(tmp_path, model_dir, IMGCLS_PROVIDER=provider) as same_model:
            served = httpx.get(f"{same_model.url}/v1/model", timeout=10).json()
            assert (served["name"], served["version"]) == (model["name"], model["version"])
            differ = {}
            for name in photos:
                data = photo_bytes(name)
                got, want = top5(running.url, data), top5(same_model.url, data)
                if [index for index, _ in got] != [index for index, _ in want] or any(
                    abs(a - b) > 1e-4 for (_, a), (_, b) in zip(got, want, strict=True)
                ):
                    differ[name] = (got, want)
    assert not differ, differ


def test_container_metrics_and_healthcheck(container: Container) -> None:
    text = httpx.get(f"{container.url}/metrics", timeout=10).text
    for series in (
        "imgcls_ready 1.0",
        "imgcls_http_requests_total",
        "imgcls_http_request_duration_seconds_bucket",
        "imgcls_batch_size_bucket",
        "imgcls_queue_depth",
        "imgcls_model_info",
        "imgcls_provider_selected",
    ):
        assert series in text, series
    health = podman("healthcheck", "run", container.name, check=False)
    # podman 4.3 prints nothing on success, later versions "healthy": the exit code decides.
    assert health.returncode == 0, health.stdout + health.stderr


def test_podman_stop_drains_and_exits_0(container: Container) -> None:
    podman("stop", "-t", "30", container.name, timeout=60)
    state = container.state()["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0), state
    messages = [
        json.loads(line)["message"]
        for line in container.logs().splitlines()
        if line.startswith("{")
    ]
    assert any(m.startswith("signal SIGTERM: draining") for m in messages), messages[-10:]
    assert "drained" in messages


def test_make_run_image_serves_and_drains(
    image: str, photos: dict[str, Any], photo_bytes: Callable[[str], bytes], tmp_path: Path
) -> None:
    """`make run-image`, the command docs/guide/deployment.md gives, with its variables: the image
    read-only, 2 CPUs, 1 GiB, on a loopback port; it classifies, and `podman stop` drains it and
    the command exits 0 (the container is removed: --rm)."""
    port, name = free_port(), f"imgcls-run-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "run-image.log"
    command = ["make", "run-image", f"IMGCLS_IMAGE={image}", f"IMGCLS_HOST_PORT={port}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, f"IMGCLS_CONTAINER={name}"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, "make run-image", log.read_text)
        inspected = json.loads(podman("container", "inspect", name).stdout)[0]["HostConfig"]
        assert inspected["ReadonlyRootfs"] is True
        assert (inspected["Memory"], inspected["NanoCpus"]) == (1024**3, 2 * 10**9)
        name_, expected = next((n, e) for n, e in photos.items() if e["assert"])
        assert top1(url, photo_bytes(name_))[0] in expected["accept"]
        podman("stop", "-t", "30", name, timeout=60)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert podman("container", "exists", name, check=False).returncode != 0
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_failing_accuracy_gate_fails_the_image_build(image: str, tmp_path: Path) -> None:
    """MAX_TOP1_DROP=-100 asks int8 to beat fp32 by 100 points: the model build must refuse,
    and with it the image build (only the build stage: its dependency layers are cached)."""
    log = tmp_path / "gate.log"
    with log.open("wb") as out:
        result = subprocess.run(
            [str(REPO / "deploy" / "build-image.sh"), "--target", "build",
             "--build-arg", "MAX_TOP1_DROP=-100"],
            env=os.environ | {"IMGCLS_IMAGE": "localhost/imgcls:gate-test",
                              "IMGCLS_SKIP_HOST_SETUP": "1"},
            stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False,
        )  # fmt: skip
    text = log.read_text()
    assert result.returncode != 0, text[-3000:]
    assert "failed the accuracy gate" in text, text[-3000:]
    assert podman("image", "exists", "localhost/imgcls:gate-test", check=False).returncode != 0
