"""A refusal rendered once and reused (service/http/door.py): the bytes the HTTP protocol sends
must be the response the ASGI door would build, and a cached rendering must never answer a
refusal that differs in anything a caller reads (message, Retry-After, protocol)."""

from __future__ import annotations

import json

from service.errors import Draining, Overloaded
from service.http.door import Refusal

V1 = "/v1/classify"
V2 = "/v2/models/resnet18/infer"
FULL = "16 images in flight, the limit is 16"


def test_the_rendering_is_the_response_as_bytes() -> None:
    refusal = Refusal(V1, Overloaded(FULL, 2))
    response = refusal.response()
    rendered = refusal.rendered()
    assert rendered.body == response.body
    assert list(rendered.headers) == response.raw_headers
    assert json.loads(rendered.body) == {"error": {"code": "overloaded", "message": FULL}}
    assert (b"retry-after", b"2") in rendered.headers


def test_the_same_refusal_is_rendered_once() -> None:
    first = Refusal(V1, Overloaded(FULL, 1)).rendered()
    assert Refusal(V1, Overloaded(FULL, 1)).rendered() is first


def test_a_refusal_that_differs_is_never_answered_from_another_ones_rendering() -> None:
    base = Refusal(V1, Overloaded(FULL, 1)).rendered()
    later = Refusal(V1, Overloaded(FULL, 3)).rendered()
    fuller = Refusal(V1, Overloaded("17 images in flight, the limit is 16", 1)).rendered()
    v2 = Refusal(V2, Overloaded(FULL, 1)).rendered()
    draining = Refusal(V1, Draining(FULL, 1)).rendered()
    no_retry = Refusal(V1, Overloaded(FULL)).rendered()

    assert (b"retry-after", b"3") in later.headers
    assert later.body == base.body
    assert json.loads(fuller.body)["error"]["message"] == "17 images in flight, the limit is 16"
    assert json.loads(v2.body) == {"error": FULL}  # the Open Inference Protocol's shape
    assert json.loads(draining.body)["error"]["code"] == "draining"
    assert not any(name == b"retry-after" for name, _ in no_retry.headers)
