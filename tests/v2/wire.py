"""Building v2 requests by hand, for what Triton's clients will not send (malformed requests)
and for the in-process tests; and the pixels a caller of the UINT8 path would send."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import numpy.typing as npt

from service.inference.preprocess import PreprocessSpec, preprocess

MODEL = "efficientnet_lite0"
INPUT = "image"
INFER = f"/v2/models/{MODEL}/infer"
MAX_PIXELS = 40_000_000


def pixels(data: bytes) -> npt.NDArray[np.uint8]:
    """The photo as the server's own preprocessing makes it: what a UINT8 caller sends."""
    return preprocess(data, PreprocessSpec(256, 224), MAX_PIXELS)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def images_input(images: list[bytes]) -> dict[str, Any]:
    return {
        "name": INPUT,
        "datatype": "BYTES",
        "shape": [len(images)],
        "data": [b64(image) for image in images],
    }


def binary_body(header: dict[str, Any], blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), {"Inference-Header-Content-Length": str(len(text))}


def split_response(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        return json.loads(body), b""
    length = int(header_length)
    return json.loads(body[:length]), body[length:]


def classification(row: list[str]) -> list[tuple[float, int, str]]:
    parsed = []
    for item in row:
        score, index, label = item.split(":", 2)
        parsed.append((float(score), int(index), label))
    return parsed
