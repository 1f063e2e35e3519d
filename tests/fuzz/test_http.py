"""The request parsers of a running server (h11, multipart, JSON/base64, query parameters)
under hostile bodies: every answer is a JSON error with a 4xx status or a 200 with predictions.
A 5xx, an unhandled-error log line or a dead server fails the run."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.e2e.conftest import ServiceProcess, run_service

pytestmark = pytest.mark.slow

ROUTES = ("/v1/classify", "/v1/classify/batch")
# Header values as a client can send them (h11 refuses surrounding whitespace on its side).
PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)
HEADER_TEXT = st.text(PRINTABLE, max_size=60).map(str.strip)
BOUNDARY = st.text(st.sampled_from("abcXYZ0123456789'()+_,-./:=?"), min_size=1, max_size=70)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["image", "images", "x"]), children, max_size=3)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> Iterator[ServiceProcess]:
    with run_service(
        tmp_path_factory.mktemp("fuzz"), trained_model_dir, IMGCLS_MAX_BATCH_IMAGES="4"
    ) as running:
        yield running
        # After every example: still ready, and nothing was counted or logged as a 5xx.
        assert httpx.get(f"{running.url}/readyz", timeout=10).status_code == 200
        metrics = httpx.get(f"{running.url}/metrics", timeout=10).text
        # (/readyz answered 503 while the model loaded: that one is meant.)
        assert not re.search(r'route="/v1[^"]*",status="5', metrics)
        assert 'status="500"' not in metrics
        assert "unhandled error" not in running.log_text()


@pytest.fixture(scope="module")
def client(server: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def image(photo_bytes: Callable[[str], bytes]) -> bytes:
    small = Image.open(io.BytesIO(photo_bytes("coffee.png"))).convert("RGB")
    small.thumbnail((64, 64))
    out = io.BytesIO()
    small.save(out, "JPEG")
    return out.getvalue()


def payloads(image: bytes) -> st.SearchStrategy[bytes]:
    """A valid image, a corrupted one, or noise."""
    corrupt = st.integers(min_value=0, max_value=len(image)).map(lambda cut: image[:cut])
    return st.just(image) | corrupt | st.binary(max_size=512)


def assert_answered(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body: dict[str, Any] = response.json()
    if response.status_code >= 400:
        assert set(body) == {"error"}
        assert isinstance(body["error"]["code"], str)
        assert isinstance(body["error"]["message"], str)
    elif "results" in body:
        assert all(item["status"] < 500 for item in body["results"])
    else:
        assert body["predictions"]


@given(data=st.data())
def test_multipart_bodies(client: httpx.Client, image: bytes, data: st.DataObject) -> None:
    boundary = data.draw(BOUNDARY)
    declared = data.draw(st.just(boundary) | BOUNDARY)  # the header may lie about it
    parts = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(["file", "files", "other", ""]) | HEADER_TEXT,
                st.none() | HEADER_TEXT,  # filename
                st.none() | st.sampled_from(["image/jpeg", "text/plain"]) | HEADER_TEXT,
                payloads(image),
            ),
            max_size=5,
        )
    )
    body = b""
    for name, filename, content_type, payload in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n"
        body += head.encode() + b"\r\n" + payload + b"\r\n"
    if data.draw(st.booleans()):
        body += f"--{boundary}--\r\n".encode()
    body += data.draw(st.binary(max_size=32))  # trailing garbage
    response = client.post(
        data.draw(st.sampled_from(ROUTES)),
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={declared}"},
    )
    assert_answered(response)


@given(data=st.data())
def test_json_bodies(client: httpx.Client, image: bytes, data: st.DataObject) -> None:
    encoded = base64.b64encode(image).decode()
    strings = st.just(encoded) | st.text(max_size=40) | st.just(encoded[: len(encoded) // 2])
    document = data.draw(
        st.fixed_dictionaries({"image": strings})
        | st.fixed_dictionaries({"images": st.lists(strings | JSON_VALUES, max_size=6)})
        | JSON_VALUES
    )
    body = json.dumps(document).encode()
    if data.draw(st.booleans()):  # or broken JSON: cut anywhere
        body = body[: data.draw(st.integers(min_value=0, max_value=len(body)))]
    response = client.post(
        data.draw(st.sampled_from(ROUTES)),
        content=body,
        headers={"Content-Type": data.draw(st.sampled_from(["application/json", "text/json"]))},
    )
    assert_answered(response)


@given(data=st.data())
def test_raw_bodies_content_types_and_parameters(
    client: httpx.Client, image: bytes, data: st.DataObject
) -> None:
    content_type = data.draw(
        st.sampled_from(["image/jpeg", "image/png", "application/octet-stream", "image/x-nope"])
        | HEADER_TEXT
    )
    top_k = data.draw(st.integers(min_value=-5, max_value=2000).map(str) | HEADER_TEXT)
    response = client.post(
        data.draw(st.sampled_from(ROUTES)),
        params={"top_k": top_k},
        content=data.draw(payloads(image)),
        headers={"Content-Type": content_type},
    )
    assert_answered(response)
