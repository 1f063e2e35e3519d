"""Every Kubernetes manifest in deploy/k8s is valid against the schemas of a pinned Kubernetes
version (kubernetes-validate, strict: an unknown or misspelt field is an error), and the
kustomization lists them all. Fast: no cluster, no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

K8S = REPO / "deploy" / "k8s"
# The oldest Kubernetes the manifests promise to work on (autoscaling/v2 and policy/v1 are GA
# since 1.23/1.21); kubernetes-validate ships its schemas offline.
KUBERNETES_VERSION = "1.33.0"
KUSTOMIZATION = "kustomization.yaml"


def manifests() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != KUSTOMIZATION)


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("path", manifests(), ids=lambda path: path.name)
def test_manifest_is_valid_for_the_pinned_kubernetes(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = documents(K8S / KUSTOMIZATION)
    assert sorted(kustomization["resources"]) == sorted(path.name for path in manifests())


def test_the_autoscaler_targets_the_deployment_which_leaves_it_the_replica_count() -> None:
    by_kind = {doc["kind"]: doc for path in manifests() for doc in documents(path)}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= set(
        by_kind
    )
    deployment, hpa = by_kind["Deployment"], by_kind["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # a fixed count would fight the autoscaler
    # The PDB must leave room to evict one pod of the smallest fleet the HPA keeps.
    assert by_kind["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    # CPU utilization is measured against requests: the container must request CPU.
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"]


def test_a_broken_manifest_is_caught() -> None:
    """The validator really checks: a misspelt field fails under strict validation."""
    (deployment,) = documents(K8S / "deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
