"""docker-compose.yml run by `make stack` / `make stack-down` (podman-compose), the commands
docs/guide/deployment.md gives, with their variables: the service and a real Prometheus (built by
the compose file itself from Debian's package on the local base when its image is missing: no
registry here) loading deploy/prometheus's config and alert rules. Every PromQL expression of the
Grafana dashboard and of the alert rules is queried against it after real traffic. Grafana is
in an optional profile that `make stack` leaves out: it has no Debian package and no registry is
reachable here (its provisioning files are checked for shape only)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.conftest import podman, wait_ready
from tests.e2e.conftest import free_port, require_binary, wait_until

DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "imgcls.json"


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def as_instant(expr: str) -> str:
    """Grafana's $__rate_interval as Prometheus needs it: 4 scrape intervals of 5 s, at least."""
    return expr.replace("$__rate_interval", "1m")


def test_alert_rules_pass_promtool() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_grafana_provisioning_points_at_the_stack() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    (source,) = datasources
    assert source["url"] == "http://prometheus:9090"
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {p["datasource"]["uid"] for p in panels} == {source["uid"]}
    titles = " ".join(p["title"].lower() for p in panels)
    for wanted in ("request rate", "p50", "p99", "queue depth", "batch size", "rejections",
                   "provider", "model"):  # fmt: skip
        assert wanted in titles, wanted


@dataclass
class Stack:
    project: str
    service_url: str
    prometheus: httpx.Client

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.prometheus.get("/api/v1/query", params={"query": as_instant(expr)}).json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`make stack` / `make stack-down` as the docs give them, the variables in the environment
    (COMPOSE_PROJECT_NAME keeps this run's containers apart from any other stack)."""
    return subprocess.run(
        ["make", target], cwd=REPO, env=os.environ | env, capture_output=True, text=True,
        timeout=1200, check=False,
    )  # fmt: skip


def compose_logs(env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "podman_compose", "logs"], cwd=REPO, env=os.environ | env,
        capture_output=True, text=True, timeout=120, check=False,
    ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def stack(image: str) -> Iterator[Stack]:
    project = f"imgcls-test-{uuid.uuid4().hex[:8]}"
    service_port, prometheus_port = free_port(), free_port()
    env = {
        "COMPOSE_PROJECT_NAME": project,
        "IMGCLS_IMAGE": image,
        "IMGCLS_HOST_PORT": str(service_port),
        "PROMETHEUS_HOST_PORT": str(prometheus_port),
    }
    up = make("stack", env)

    def logs() -> str:
        return up.stdout + up.stderr + compose_logs(env)

    try:
        assert up.returncode == 0, logs()
        service_url = f"http://127.0.0.1:{service_port}"
        wait_ready(service_url, "compose imgcls", logs)
        with httpx.Client(base_url=f"http://127.0.0.1:{prometheus_port}", timeout=10) as client:
            wait_until(lambda: client.get("/-/ready").status_code == 200, 60, "Prometheus", None)
            yield Stack(project, service_url, client)
    finally:
        make("stack-down", env)


def test_grafana_is_optional_and_prometheus_is_built_here() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert services["grafana"]["profiles"] == ["grafana"]  # `make stack` leaves it out
    assert "profiles" not in services["imgcls"]
    assert "profiles" not in services["prometheus"]
    assert services["prometheus"]["build"]["context"] == "./deploy/prometheus"


def containers(project: str, service: str) -> list[str]:
    labels = [
        f"label=io.podman.compose.project={project}",
        f"label=com.docker.compose.service={service}",
    ]
    names = podman("ps", "-a", "--format", "{{.Names}}", *[f"--filter={f}" for f in labels]).stdout
    return names.split()


@pytest.mark.slow
@pytest.mark.container
@pytest.mark.timeout(3000)
def test_stack_scrapes_alerts_and_answers_every_dashboard_query(
    stack: Stack, photo_bytes: Callable[[str], bytes]
) -> None:
    with httpx.Client(base_url=stack.service_url, timeout=30) as service:

        def traffic() -> None:
            for name in ("rocket.jpg", "coffee.png"):
                ok = service.post("/v1/classify", files={"file": (name, photo_bytes(name))})
                assert ok.status_code == 200, ok.text
            refused = service.post(
                "/v1/classify", content=b"hi", headers={"Content-Type": "text/plain"}
            )
            assert refused.status_code == 415

        exprs = dashboard_exprs()

        empty: list[str] = []

        def every_panel_has_data() -> bool:
            traffic()  # keeps every rate() window holding fresh increases
            time.sleep(1)
            empty[:] = [expr for expr in exprs if not stack.query(expr)]
            return not empty

        try:
            wait_until(every_panel_has_data, 120, "data for every dashboard query", None)
        except pytest.fail.Exception:
            targets = stack.prometheus.get("/api/v1/targets").text
            pytest.fail(f"no data for {empty}\ntargets: {targets[:2000]}")
        metrics_text = service.get("/metrics").text

    targets = stack.prometheus.get("/api/v1/targets").json()["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("imgcls", "up")]

    # Every metric the dashboard and the alerts name exists in the service's real exposition.
    # (Recorded series, level:metric:operations, are the rules' own: not the service's.)
    queried = " ".join(exprs + [r["expr"] for r in alert_rules()])
    names = set(re.findall(r"(?<!:)\bimgcls_[a-z0-9_]+\b(?!:)", queried))
    exposed = {
        line.split("{")[0].split(" ")[0] for line in metrics_text.splitlines() if line[:1] != "#"
    }
    assert names <= exposed, names - exposed

    # The rules as Prometheus loaded them evaluate without error; each expression runs.
    rules = stack.prometheus.get("/api/v1/rules").json()["data"]["groups"]
    loaded = {rule["name"]: rule["health"] for group in rules for rule in group["rules"]}
    assert loaded == {rule.get("alert", rule.get("record")): "ok" for rule in alert_rules()}
    for rule in alert_rules():
        stack.query(rule["expr"])
    # With traffic and a ready replica, the not-ready and down alerts' series exist and hold.
    assert stack.query("imgcls_ready == 1")
    assert stack.query('up{job="imgcls"} == 1')


@pytest.mark.slow
@pytest.mark.container
def test_stack_service_healthcheck_reports_healthy(stack: Stack) -> None:
    assert containers(stack.project, "grafana") == []
    (name,) = containers(stack.project, "imgcls")
    health = podman("healthcheck", "run", name, check=False)
    # podman 4.3 prints nothing on success, later versions "healthy": the exit code decides.
    assert health.returncode == 0, health.stdout + health.stderr
