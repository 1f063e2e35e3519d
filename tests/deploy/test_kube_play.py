"""deploy/k8s/deployment.yaml run by `podman kube play` as shipped, the command
docs/guide/deployment.md gives: its pull policy, ports, security context, resources and probes
as written. The one thing a test changes, on a rendered copy, is the image, when this session's
is not `imgcls:latest` (IMGCLS_TEST_IMAGE names another tag so that two checkouts on one
machine do not replace each other's image). podman 4.3 publishes the container port on the
host's port 8000, as a user gets it. The Deployment has no `replicas` (the HPA owns it), so
podman starts one pod.

What podman does NOT do with it, so nothing here can test it: the Service, the PDB and the HPA
(no Kubernetes control plane), the preStop hook (ignored by kube play), the readiness and
startup probes (podman 4.3 turns only the liveness probe into a health check, and cannot run
that one here: see below), restarts on liveness failure (health checks run on demand only: no
systemd timers here)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.conftest import podman, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(3000)]

SHIPPED = REPO / "deploy" / "k8s" / "deployment.yaml"
HOST_PORT = 8000  # the container port, which podman 4.3 publishes on the host as it is


def manifest_for(image: str, folder: Path) -> Path:
    """The shipped file itself when it names this image, else a copy naming this one."""
    deployment = yaml.safe_load(SHIPPED.read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    if image.removeprefix("localhost/") == container["image"]:
        return SHIPPED
    container["image"] = image
    rendered = folder / "deployment.yaml"
    rendered.write_text(yaml.safe_dump(deployment))
    return rendered


def require_free(port: int) -> None:
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            pytest.fail(f"port {port} is taken: `podman kube play` publishes the Deployment's port")


@pytest.fixture(scope="module")
def kube_pod(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    manifest = manifest_for(image, tmp_path_factory.mktemp("kube"))
    podman("kube", "down", str(manifest), check=False)
    require_free(HOST_PORT)
    played = podman("kube", "play", str(manifest), timeout=300)
    try:
        names = podman("ps", "--format", "{{.Names}}", "--filter", "pod=imgcls-pod-0").stdout
        (name,) = [n for n in names.split() if not n.endswith("-infra")]

        def logs() -> str:
            return played.stdout + played.stderr + podman("logs", name, check=False).stderr

        url = f"http://127.0.0.1:{HOST_PORT}"
        wait_ready(url, "kube play pod", logs)
        (inspected,) = json.loads(podman("container", "inspect", name).stdout)
        yield {"name": name, "url": url, "inspect": inspected}
    finally:
        podman("kube", "down", str(manifest), check=False, timeout=120)


def test_the_shipped_manifest_is_played_unchanged_but_for_the_image(
    image: str, tmp_path: Path
) -> None:
    played = yaml.safe_load(manifest_for(image, tmp_path).read_text())
    shipped = yaml.safe_load(SHIPPED.read_text())
    (container,) = played["spec"]["template"]["spec"]["containers"]
    container["image"] = shipped["spec"]["template"]["spec"]["containers"][0]["image"]
    assert played == shipped
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_kube_pod_runs_the_security_context_as_written(kube_pod: dict[str, Any]) -> None:
    inspected = kube_pod["inspect"]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["Config"]["User"] == "10001"
    assert podman("exec", kube_pod["name"], "id", "-u").stdout.strip() == "10001"
    # The pod spec's limits: 2 CPUs, 1 GiB.
    assert inspected["HostConfig"]["Memory"] == 1024**3
    assert inspected["HostConfig"]["NanoCpus"] == 2 * 10**9


def test_kube_pod_liveness_probe_becomes_its_health_check(kube_pod: dict[str, Any]) -> None:
    """podman turns the liveness probe into the container's health check, with the probe's
    period, timeout and failure threshold. It cannot be RUN here as podman 4.3 writes it: an
    httpGet probe becomes `curl -f http://localhost:<port>/livez`, the image has no curl (python
    is its HTTP client), and a named port (`port: http`, as Kubernetes allows) becomes port 0.
    The probe routes themselves are exercised below over the pod's published port."""
    healthcheck = kube_pod["inspect"]["Config"]["Healthcheck"]
    assert "/livez" in " ".join(healthcheck["Test"]), healthcheck
    assert (healthcheck["Interval"], healthcheck["Timeout"], healthcheck["Retries"]) == (
        10 * 10**9,
        3 * 10**9,
        3,
    )


def test_kube_pod_answers_its_probe_routes(kube_pod: dict[str, Any]) -> None:
    for route in ("/livez", "/readyz"):
        assert httpx.get(f"{kube_pod['url']}{route}", timeout=5).status_code == 200, route
