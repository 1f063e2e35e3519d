"""deploy/k8s/deployment.yaml run by `podman kube play`: the pod spec as written (security
context, read-only root, resources, probes), with two test-only changes made on a rendered
copy: the image is the one this session built, and the container port gets a free hostPort
(podman publishes containerPorts on the host; a fixed 8000 may be taken). The Deployment has no
`replicas` (the HPA owns it), so podman starts one pod: two would both bind the same host port.

What podman does NOT do with it, so nothing here can test it: the Service, the PDB and the HPA
(no Kubernetes control plane), the preStop hook (ignored by kube play), the readiness and
startup probes (podman 4.3 turns only the liveness probe into a health check, and cannot run
that one here: see below), restarts on liveness failure (health checks run on demand only: no
systemd timers here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.conftest import podman, wait_ready
from tests.e2e.conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(3000)]


def rendered(image: str, host_port: int) -> str:
    deployment = yaml.safe_load((REPO / "deploy" / "k8s" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = image
    container["imagePullPolicy"] = "Never"
    (port,) = container["ports"]
    port["hostPort"] = host_port
    port["hostIP"] = "127.0.0.1"
    return yaml.safe_dump(deployment)


@pytest.fixture(scope="module")
def kube_pod(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    port = free_port()
    manifest = tmp_path_factory.mktemp("kube") / "deployment.yaml"
    manifest.write_text(rendered(image, port))
    podman("kube", "down", str(manifest), check=False)
    played = podman("kube", "play", str(manifest), timeout=300)
    try:
        names = podman("ps", "--format", "{{.Names}}", "--filter", "pod=imgcls-pod-0").stdout
        (name,) = [n for n in names.split() if not n.endswith("-infra")]

        def logs() -> str:
            return played.stdout + played.stderr + podman("logs", name, check=False).stderr

        url = f"http://127.0.0.1:{port}"
        wait_ready(url, "kube play pod", logs)
        (inspected,) = json.loads(podman("container", "inspect", name).stdout)
        yield {"name": name, "url": url, "inspect": inspected}
    finally:
        podman("kube", "down", str(manifest), check=False, timeout=120)


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
