"""/v2 JSON tensors are checked before they are built, against a real ``python -m service``
(issue 22, finding 6): a JSON body has its own cap (IMGCLS_MAX_JSON_REQUEST_BYTES, 24 MiB), the
values are counted against the shape from the text, and a large parse runs in a worker thread
a slice at a time. While each request below is answered, the server's memory stays within
+300 MB of what it was and /livez answers within 0.5 s (tests/e2e/watch.py).

Before the fix, the first case took +951 MB and held /livez 8.5 s; 12 M zeros within 24 MiB,
+573 MB and 3.6 s."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import ServiceProcess, run_service
from tests.e2e.watch import watching
from tests.v2.wire import INFER, INPUT

pytestmark = pytest.mark.slow

TOKEN = "s3cret"
PIXELS = 224 * 224 * 3


def body(datatype: str, shape: list[int], data: bytes) -> bytes:
    head = {"name": INPUT, "datatype": datatype, "shape": shape}
    return b'{"inputs": [' + json.dumps(head).encode()[:-1] + b', "data": ' + data + b"}]}"


def repeated(item: bytes, count: int) -> bytes:
    return b"[" + b",".join([item] * count) + b"]"


def batch_of_32() -> bytes:
    """32 images of random pixels as tritonclient writes JSON: flat, ", " between values."""
    values = np.random.default_rng(0).integers(0, 256, 32 * PIXELS).tolist()
    return body("UINT8", [32, 224, 224, 3], json.dumps(values).encode())


CASES = {
    "40 MB of zeros for one image: over the JSON cap": (
        lambda: body("UINT8", [1, 224, 224, 3], repeated(b"0", 20_000_000)),
        413,
        "send large tensors as binary data",
    ),
    "12 M zeros within the cap, claimed as 32 images": (
        lambda: body("UINT8", [32, 224, 224, 3], repeated(b"0", 12_000_000)),
        400,
        "12000000 values for shape [32, 224, 224, 3]",
    ),
    "4 M nested empty strings claimed as 32 images": (
        lambda: body("BYTES", [32], repeated(b'[""]', 4_000_000)),
        400,
        "more elements than shape [32] holds",
    ),
    "a full batch of 32 images in JSON": (batch_of_32, 200, '"shape":[32,1000]'),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path) -> object:
    env = {"IMGCLS_API_TOKENS": TOKEN, "IMGCLS_REQUEST_TIMEOUT_S": "120"}
    with run_service(tmp_path_factory.mktemp("json"), trained_model_dir, **env) as served:
        yield served


@pytest.mark.parametrize("case", list(CASES))
def test_json_tensors_cost_their_size_not_millions_of_objects(
    server: ServiceProcess, case: str
) -> None:
    make, status, expected = CASES[case]
    content = make()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with watching(server) as watch:
        answer = httpx.post(f"{server.url}{INFER}", content=content, headers=headers, timeout=300)
    slowest_ms = watch.slowest_livez_s * 1e3
    print(f"{case}: {len(content) / 1e6:.1f} MB -> {answer.status_code}, RSS "
          f"+{watch.growth_mb:.0f} MB, slowest /livez {slowest_ms:.0f} ms")  # fmt: skip
    assert answer.status_code == status, answer.text[:300]
    assert expected in answer.text
    assert watch.growth_mb < 300
    assert watch.livez_statuses == {200}
    assert watch.slowest_livez_s < 0.5
