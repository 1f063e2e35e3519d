"""deploy/k8s/kserve/: the ServingRuntime and the InferenceService, checked as far as schemas
allow without a cluster. KServe's CRD schemas are not shipped offline, so: the container is
validated strictly against the pinned Kubernetes version's Pod schema, and the KServe fields
are checked against each other and against the app (ports, settings, probe routes)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import yaml

from service.app import create_app
from service.settings import Settings
from tests.conftest import REPO

KSERVE = REPO / "deploy" / "k8s" / "kserve"
KUBERNETES_VERSION = "1.33.0"  # as tests/deploy/test_manifests.py


def load(name: str) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all((KSERVE / name).read_text()) if d]
    assert isinstance(doc, dict)
    return doc


def runtime() -> dict[str, Any]:
    return load("servingruntime.yaml")


def container() -> dict[str, Any]:
    (found,) = runtime()["spec"]["containers"]
    assert isinstance(found, dict)
    return found


def env() -> dict[str, str]:
    return {item["name"]: item["value"] for item in container()["env"]}


def ports() -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container()["ports"]}


def test_the_folder_holds_exactly_the_two_resources() -> None:
    assert sorted(p.name for p in KSERVE.glob("*.yaml")) == [
        "inferenceservice.yaml",
        "servingruntime.yaml",
    ]
    assert (runtime()["apiVersion"], runtime()["kind"]) == (
        "serving.kserve.io/v1alpha1",
        "ServingRuntime",
    )
    service = load("inferenceservice.yaml")
    assert (service["apiVersion"], service["kind"]) == (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    )


def test_the_container_is_a_valid_kubernetes_container() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "imgcls"},
        "spec": {"containers": [container()]},
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_the_runtime_speaks_v2_over_rest_and_grpc_on_the_ports_the_service_binds() -> None:
    assert set(runtime()["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    assert ports() == {"http1": int(env()["IMGCLS_PORT"]), "h2c": int(env()["IMGCLS_GRPC_PORT"])}
    assert runtime()["spec"]["annotations"]["prometheus.kserve.io/port"] == env()["IMGCLS_PORT"]


def test_every_variable_is_a_setting_with_a_valid_value() -> None:
    variables = env()
    assert all(name.startswith("IMGCLS_") for name in variables)
    fields = {name.removeprefix("IMGCLS_").lower(): value for name, value in variables.items()}
    assert set(fields) <= set(Settings.model_fields)
    settings = Settings(**fields)  # string values, as the environment gives them
    assert settings.grpc_port == ports()["h2c"]


def test_the_probes_are_v2_health_routes_of_the_app_on_the_http_port() -> None:
    routes = set(create_app(Settings()).openapi()["paths"])
    probes = {key: container()[key]["httpGet"] for key in container() if key.endswith("Probe")}
    assert set(probes) == {"startupProbe", "readinessProbe", "livenessProbe"}
    for probe in probes.values():
        assert probe["path"] in routes
        assert probe["path"].startswith("/v2/health/")
        assert probe["port"] == ports()["http1"]
    assert probes["livenessProbe"]["path"] == "/v2/health/live"


def test_the_inference_service_uses_the_runtime_with_both_ports() -> None:
    service = load("inferenceservice.yaml")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime()["metadata"]["name"]
    formats = {(f["name"], f["version"]) for f in runtime()["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    assert model["protocolVersion"] in runtime()["spec"]["protocolVersions"]
    # Knative (serverless mode) routes one port per container: both need RawDeployment.
    annotations = service["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_the_grace_period_covers_the_drain() -> None:
    predictor = load("inferenceservice.yaml")["spec"]["predictor"]
    pre_stop = int(container()["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert predictor["terminationGracePeriodSeconds"] > pre_stop + float(
        env()["IMGCLS_DRAIN_TIMEOUT_S"]
    )
