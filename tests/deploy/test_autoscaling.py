"""deploy/k8s/autoscaling: the KEDA ScaledObject and the prometheus-adapter HPA, each a kustomize
component that replaces the CPU HPA. Checked offline as the other manifests are: rendered by
kubectl kustomize with deploy/k8s, built-in kinds against the pinned Kubernetes schemas
(strict), the ScaledObject against KEDA's own CRD schema (vendored in tests/deploy/schemas,
made strict) and the checks of KEDA's admission webhook that need no cluster, each trigger's
metadata against the keys its scaler reads, the adapter's config against its strict schema,
and every query as PromQL (promtool) over series the service exports. tests/e2e/
test_autoscaling_queries.py runs the same queries against a real Prometheus scraping the service."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.observability.metrics import Metrics
from tests.conftest import REPO
from tests.deploy.test_manifests import KUBERNETES_VERSION, documents
from tests.e2e.conftest import require_binary

K8S = REPO / "deploy" / "k8s"
AUTOSCALING = K8S / "autoscaling"
SCHEMAS = Path(__file__).parent / "schemas"
COMPONENTS = ("keda", "prometheus-adapter")
SCALED_OBJECT = AUTOSCALING / "keda" / "scaledobject.yaml"
ADAPTER_CONFIG = AUTOSCALING / "prometheus-adapter" / "adapter-config.yaml"
HPA = AUTOSCALING / "prometheus-adapter" / "hpa.yaml"
# What prometheus-adapter puts into a metricsQuery template, for one pod of one namespace.
ADAPTER_TEMPLATE = {
    "<<.Series>>": "{series}",
    "<<.LabelMatchers>>": 'namespace="imgcls",pod=~"imgcls-.+"',
    "<<.GroupBy>>": "pod",
}


def rendered(component: str, tmp_path: Path) -> list[dict[str, Any]]:
    """deploy/k8s with the component, as `kubectl kustomize` renders it (offline)."""
    overlay = tmp_path / component
    overlay.mkdir()
    kustomization = {
        "resources": [os.path.relpath(K8S, overlay)],
        "components": [os.path.relpath(AUTOSCALING / component, overlay)],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = subprocess.run(
        [require_binary("kubectl"), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def strict(schema: Any) -> Any:
    """A CRD's structural schema as the API server's strict field validation applies it: an
    object with known properties takes no others, unless it says it keeps unknown fields."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        keeps = schema.get("x-kubernetes-preserve-unknown-fields") is True
        if "properties" in schema and "additionalProperties" not in schema and not keeps:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def keda_validator() -> jsonschema.Draft7Validator:
    (crd,) = documents(SCHEMAS / "keda.sh_scaledobjects.yaml")
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def scaled_object() -> dict[str, Any]:
    (doc,) = documents(SCALED_OBJECT)
    return doc


def adapter_config() -> dict[str, Any]:
    (config_map,) = documents(ADAPTER_CONFIG)
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return config


def exported_series() -> set[str]:
    """The sample names of the service's own metrics (those that exist without labels)."""
    return {s.name for family in Metrics().registry.collect() for s in family.samples}


def queried_series(promql: str) -> set[str]:
    return set(re.findall(r"\bimgcls_[a-z0-9_]+", promql))


def queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query the autoscalers send, adapter templates filled in."""
    for trigger in scaled_object()["spec"]["triggers"]:
        if trigger["type"] == "prometheus":
            yield f"keda {trigger['name']}", trigger["metadata"]["query"]
    for rule in adapter_config()["rules"]:
        query = rule["metricsQuery"]
        for placeholder, value in ADAPTER_TEMPLATE.items():
            query = query.replace(placeholder, value)
        series = rule["seriesQuery"].split("{")[0]
        yield f"adapter {rule['name']['as']}", query.replace("{series}", series)


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_replaces_the_cpu_hpa_and_validates(component: str, tmp_path: Path) -> None:
    docs = rendered(component, tmp_path)
    kinds = sorted(doc["kind"] for doc in docs)
    autoscaler = "ScaledObject" if component == "keda" else "HorizontalPodAutoscaler"
    assert kinds == sorted(["Deployment", "Service", "PodDisruptionBudget", autoscaler])
    (scaler,) = [doc for doc in docs if doc["kind"] == autoscaler]
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    target = scaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    for doc in docs:
        if doc["kind"] != "ScaledObject":
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_scaled_object_matches_kedas_crd_and_webhook() -> None:
    so = scaled_object()
    assert (so["apiVersion"], so["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    errors = [error.message for error in keda_validator().iter_errors(so)]
    assert not errors
    spec = so["spec"]
    # The admission webhook's checks that need no cluster (apis/keda/v1alpha1).
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    names = [t["name"] for t in spec["triggers"] if "name" in t]
    assert len(names) == len(set(names))
    assert any(t["type"] not in ("cpu", "memory") for t in spec["triggers"])  # fallback
    # The CPU trigger is measured against requests: the container must request CPU.
    (deployment,) = documents(K8S / "deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"]


def test_a_misspelt_scaled_object_field_is_caught() -> None:
    so = scaled_object()
    so["spec"]["minReplicaCounts"] = so["spec"].pop("minReplicaCount")
    so["spec"]["triggers"][0]["metricTyp"] = "Value"
    found = {tuple(error.path) for error in keda_validator().iter_errors(so)}
    assert found == {("spec",), ("spec", "triggers", 0)}


def test_every_trigger_sets_only_what_its_scaler_reads() -> None:
    scalers = yaml.safe_load((SCHEMAS / "keda-scalers.yaml").read_text())
    for trigger in scaled_object()["spec"]["triggers"]:
        known = scalers[trigger["type"]]
        metadata = trigger["metadata"]
        assert trigger["metricType"] in known["metricTypes"], trigger
        assert set(known["required"]) <= set(metadata), trigger
        assert set(metadata) <= set(known["required"]) | set(known["optional"]), trigger
        assert all(isinstance(value, str) for value in metadata.values())  # the CRD's map
        for key in set(known["numbers"]) & set(metadata):
            assert float(metadata[key]) > 0, (key, metadata[key])


def test_the_adapter_config_is_strictly_valid_and_serves_the_hpas_metrics() -> None:
    (config_map,) = documents(ADAPTER_CONFIG)
    kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
    schema = json.loads((SCHEMAS / "prometheus-adapter-config.schema.json").read_text())
    config = adapter_config()
    jsonschema.validate(config, schema)
    served = {rule["name"]["as"] for rule in config["rules"]}
    (hpa,) = documents(HPA)
    pods = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert sorted(pods) == sorted(served)
    for rule in config["rules"]:
        assert rule["metricsQuery"]
        assert re.fullmatch(rule["name"]["matches"], rule["seriesQuery"].split("{")[0])


def test_a_misspelt_adapter_field_is_caught() -> None:
    schema = json.loads((SCHEMAS / "prometheus-adapter-config.schema.json").read_text())
    config = adapter_config()
    config["rules"][0]["metricQuery"] = config["rules"][0].pop("metricsQuery")
    with pytest.raises(jsonschema.ValidationError, match="metricQuery"):
        jsonschema.validate(config, schema)


def test_every_query_is_promql_over_series_the_service_exports(tmp_path: Path) -> None:
    found = list(queries())
    assert len(found) == 4
    exported = exported_series()
    for where, query in found:
        assert queried_series(query) <= exported, (where, queried_series(query) - exported)
    rules = {"groups": [{"name": "autoscaling", "rules": []}]}
    for index, (_, query) in enumerate(found):
        rules["groups"][0]["rules"].append({"record": f"autoscaling:query{index}", "expr": query})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [require_binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
