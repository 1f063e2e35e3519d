"""How uploads are received (service/http/uploads.py, service/http/multipart.py), with a fake
classifier: what reaches it is the point."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from service.settings import Settings
from tests.api.conftest import fake_factory, serve

pytestmark = pytest.mark.anyio


async def test_a_multipart_body_cut_before_its_closing_boundary_is_422() -> None:
    request = httpx.Request(
        "POST", "http://x/", files={"file": ("a.jpg", b"\xff\xd8" + b"x" * 4000, "image/jpeg")}
    )
    body = request.read()
    async with serve(Settings(), fake_factory()) as served:
        response = await served.client.post(
            "/v1/classify",
            content=body[: len(body) - 100],
            headers={"Content-Type": request.headers["content-type"]},
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == (
        "malformed multipart body: the body ends before the closing boundary"
    )


async def test_json_base64_with_escaped_slashes_and_a_batch_error_names_its_index() -> None:
    """Some JSON encoders (PHP's by default) write "/" as "\\/"; the base64 inside is the same."""
    image = bytes(range(256)) * 4  # base64 with many "/" and "+"
    escaped = json.dumps({"image": base64.b64encode(image).decode()}).replace("/", "\\/")
    async with serve(Settings(), fake_factory()) as served:
        one = await served.client.post(
            "/v1/classify", content=escaped, headers={"Content-Type": "application/json"}
        )
        batch = await served.client.post(
            "/v1/classify/batch", json={"images": [base64.b64encode(image).decode(), "bad!"]}
        )
    assert one.status_code == 200, one.text
    assert batch.status_code == 422
    assert batch.json()["error"]["message"] == "images[1] is not valid base64"
