"""IMGCLS_API_TOKENS covers the gRPC service too: tritonclient.grpc without the token gets
UNAUTHENTICATED before anything runs, with it the same answer as without auth; the health
methods stay open unless IMGCLS_AUTH_PROBES."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import free_port, run_service
from tests.v2.wire import INPUT, MODEL

pytestmark = pytest.mark.slow


def infer(client: grpcclient.InferenceServerClient, image: bytes, **kwargs: object) -> object:
    inputs = [grpcclient.InferInput(INPUT, [1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([image], dtype=np.object_))
    return client.infer(MODEL, inputs, **kwargs)


def test_grpc_calls_need_the_token(
    tmp_path: Path, trained_model_dir: Path, photo_bytes: Callable[[str], bytes]
) -> None:
    port = free_port()
    env = {"IMGCLS_GRPC_PORT": str(port), "IMGCLS_API_TOKENS": "s3cret"}
    image = photo_bytes("coffee.png")
    with run_service(tmp_path, trained_model_dir, **env) as server:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        live = client.is_server_live()  # a probe: open by default
        with pytest.raises(InferenceServerException) as missing:
            infer(client, image)
        with pytest.raises(InferenceServerException) as wrong:
            infer(client, image, headers={"authorization": "Bearer nope"})
        with pytest.raises(InferenceServerException) as metadata:
            client.get_model_metadata(MODEL)
        answer = infer(client, image, headers={"authorization": "Bearer s3cret"})
        client.close()
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert live
    assert missing.value.status() == "StatusCode.UNAUTHENTICATED"
    assert "bearer token is required" in missing.value.message()
    assert wrong.value.status() == "StatusCode.UNAUTHENTICATED"
    assert "not valid" in wrong.value.message()
    assert metadata.value.status() == "StatusCode.UNAUTHENTICATED"
    assert answer.as_numpy("logits").shape == (1, 1000)  # type: ignore[attr-defined]
    assert 'imgcls_rejections_total{reason="unauthorized"} 3.0' in metrics
