"""The BentoML peer (bench/peers/bentoml_ort.py), started the way the peers benchmark starts it
(bench.servers: its command line, a free port, readiness on /readyz): it answers a real JPEG
with the other peers' top-3 JSON, one answer per request when its dispatcher batches several,
and a body that is not an image with 400. Slow: BentoML's arbiter and worker take seconds to
come up."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import servers
from bench.config import BenchConfig, load_jpegs
from bench.loadgen.http1 import CLASSIFY_PATH, HEADERS
from service import paths
from tests.conftest import REPO

MODEL = "resnet18"


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    artifacts = REPO / paths.artifacts_dir()
    if not (artifacts / MODEL / "manifest.json").is_file():
        pytest.skip(f"no {MODEL} artifacts: run `make test-models` first")
    out = tmp_path_factory.mktemp("bentoml_peer")
    cfg = BenchConfig(True, out, artifacts, (REPO / paths.data_dir()).resolve())
    labels = (artifacts / MODEL / "labels.txt").read_text().splitlines()
    with servers.running(cfg, servers.peer_spec(cfg, "bentoml_ort", MODEL)) as server:
        yield server.url, labels


def _jpegs(count: int) -> list[bytes]:
    return load_jpegs((REPO / paths.data_dir()).resolve(), count)


def _check_answer(body: Any, labels: list[str]) -> None:
    assert set(body) == {"model", "predictions"}
    assert body["model"] == MODEL
    predictions = body["predictions"]
    assert len(predictions) == 3
    for p in predictions:
        assert set(p) == {"label", "class_index", "score"}
        assert p["label"] == labels[p["class_index"]]
        assert 0.0 <= p["score"] <= 1.0
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.slow
def test_a_jpeg_gets_the_top3_answer(peer: tuple[str, list[str]]) -> None:
    url, labels = peer
    response = httpx.post(url + CLASSIFY_PATH, content=_jpegs(1)[0], headers=HEADERS)
    assert response.status_code == 200, response.text
    _check_answer(response.json(), labels)


@pytest.mark.slow
def test_concurrent_requests_each_get_one_answer(peer: tuple[str, list[str]]) -> None:
    """Sixteen at once: the dispatcher batches them and each caller gets its own answer."""
    url, labels = peer
    bodies = _jpegs(16)
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(len(bodies)) as pool:

        def post(body: bytes) -> httpx.Response:
            return client.post(url + CLASSIFY_PATH, content=body, headers=HEADERS)

        responses = list(pool.map(post, bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    for response in responses:
        _check_answer(response.json(), labels)


@pytest.mark.slow
@pytest.mark.parametrize("body", [b"not an image", b"", b"\xff\xd8\xff\xe0 truncated"])
def test_a_body_that_is_not_an_image_is_400(peer: tuple[str, list[str]], body: bytes) -> None:
    url, _ = peer
    response = httpx.post(url + CLASSIFY_PATH, content=body, headers=HEADERS)
    assert response.status_code == 400, response.text


@pytest.mark.slow
def test_readyz_is_bentomls_own_and_200(peer: tuple[str, list[str]]) -> None:
    url, _ = peer
    response = httpx.get(url + "/readyz")
    assert response.status_code == 200
    assert response.text == "\n"  # BentoML's probe, not one of ours


def test_every_peer_serving_the_int8_file_is_given_it(tmp_path: Path) -> None:
    """peer_spec passes --model-file to the peers that read the service's int8 file."""
    artifacts = REPO / paths.artifacts_dir()
    if not (artifacts / MODEL / "manifest.json").is_file():
        pytest.skip(f"no {MODEL} artifacts: run `make test-models` first")
    cfg = BenchConfig(True, tmp_path, artifacts, tmp_path)
    for peer in ("fastapi_ort", "fastapi_openvino", "bentoml_ort"):
        args = servers.peer_spec(cfg, peer, MODEL).args
        assert any(a.startswith("--model-file=") and a.endswith(".onnx") for a in args), peer
    assert not any(
        a.startswith("--model-file") for a in servers.peer_spec(cfg, "flask_torchscript").args
    )
