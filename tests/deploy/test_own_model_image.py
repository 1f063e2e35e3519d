"""The image built with a user's model: deploy/build-image.sh with IMGCLS_MODEL_CONFIG (the
`model` build context and MODEL_CONFIG build argument of deploy/Dockerfile), run with podman,
answering with the user's labels; and the user's gate failing the image build.

The model is a small float ONNX classifier made here (global average colour -> the nearest
class colour, fitted on synthetic images), so the model build inside the image takes seconds
and the image's other layers come from podman's cache."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.build import own_models as om
from tests.conftest import REPO
from tests.deploy.conftest import IMAGE_BUILD_TIMEOUT_S, READY_TIMEOUT_S, TEST_IMAGE, podman
from tests.e2e.conftest import free_port, require_binary, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.container]

OWN_IMAGE = f"{TEST_IMAGE}-own"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    om.class_folders(root / "train", per_class=8, seed=11)
    om.class_folders(root / "images", per_class=12, seed=12)
    om.colour_classifier(root / "colours.onnx", root / "train")
    om.labels_file(root / "labels.txt", om.SHAPES)
    om.write_config(
        root / "model.toml",
        """
name = "colours"
[source]
onnx = "colours.onnx"
[labels]
file = "labels.txt"
[preprocess]
resize = 64
crop = 56
[data]
dir = "images"
[gate]
max_top1_drop = 5.0
""",
    )
    return root


def build_image(project: Path, tag: str, log: Path, *args: str) -> int:
    with log.open("wb") as out:
        return subprocess.run(
            [str(REPO / "deploy" / "build-image.sh"), *args],
            env=os.environ
            | {
                "IMGCLS_IMAGE": tag,
                "IMGCLS_MODEL_CONFIG": str(project / "model.toml"),
                "IMGCLS_SKIP_HOST_SETUP": "1",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=IMAGE_BUILD_TIMEOUT_S,
            check=False,
        ).returncode


@pytest.fixture(scope="module")
def own_image(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_binary("podman")
    log = tmp_path_factory.mktemp("own-image") / "build.log"
    code = build_image(project, OWN_IMAGE, log)
    if code != 0:
        pytest.fail(f"deploy/build-image.sh exited {code}\n{log.read_text()[-6000:]}")
    yield OWN_IMAGE
    podman("rmi", "-f", OWN_IMAGE, check=False)


@pytest.fixture(scope="module")
def own_url(own_image: str) -> Iterator[str]:
    port = free_port()
    name = f"imgcls-own-{port}"
    podman("run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8000", own_image)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200,
            READY_TIMEOUT_S,
            f"{url}/readyz 200",
            lambda: podman("logs", name, check=False).stdout,
        )
        yield url
    finally:
        podman("rm", "-f", name, check=False)


def test_the_image_serves_the_users_model_with_its_labels(own_url: str, project: Path) -> None:
    model = httpx.get(f"{own_url}/v1/model", timeout=10).json()
    assert (model["name"], model["num_classes"]) == ("colours", 5)
    right = 0
    for label in om.SHAPES:
        image = sorted((project / "images" / label).iterdir())[-1]
        response = httpx.post(
            f"{own_url}/v1/classify",
            params={"top_k": 5},
            content=image.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert sorted(p["label"] for p in predictions) == sorted(om.SHAPES)
        right += predictions[0]["label"] == label
    assert right >= 4  # one held-out image per class, nearest colour: nearly all right
    meta = httpx.get(f"{own_url}/v2/models/colours", timeout=10).json()
    assert {o["name"]: o["shape"] for o in meta["outputs"]}["logits"] == [-1, 5]


def test_the_users_gate_fails_the_image_build(project: Path, tmp_path: Path) -> None:
    require_binary("podman")
    tag = f"{TEST_IMAGE}-own-gate"
    log = tmp_path / "gate.log"
    code = build_image(project, tag, log, "--target", "build", "--build-arg", "MAX_TOP1_DROP=-100")
    text = log.read_text()
    assert code != 0, text[-3000:]
    assert "colours: int8 failed the accuracy gate" in text, text[-3000:]
    assert podman("image", "exists", tag, check=False).returncode != 0
