"""/v1/classify and /v1/classify/batch on the real model: real photos, the three body formats,
the response shape, Server-Timing, X-Request-ID, and 64 concurrent callers."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.conftest import Served

pytestmark = pytest.mark.anyio

MEDIA = {"png": "image/png", "jpg": "image/jpeg"}


def media_type(name: str) -> str:
    return MEDIA[name.rsplit(".", 1)[1]]


def asserted(photos: dict[str, Any]) -> list[str]:
    return sorted(name for name, entry in photos.items() if entry["assert"])


async def post_raw(client: httpx.AsyncClient, name: str, data: bytes, **params: Any) -> Any:
    return await client.post(
        "/v1/classify", content=data, headers={"Content-Type": media_type(name)}, params=params
    )


async def test_each_asserted_photo_gets_an_expected_top1(
    real: Served, photos: dict[str, Any], photo_bytes: Callable[[str], bytes]
) -> None:
    names = asserted(photos)
    assert len(names) >= 5  # the data set promises several; an empty loop would prove nothing
    for name in names:
        response = await post_raw(real.client, name, photo_bytes(name))
        assert response.status_code == 200, response.text
        top1 = response.json()["predictions"][0]
        assert top1["class_index"] in photos[name]["accept"], (name, top1)


async def test_response_shape(real: Served, photo_bytes: Callable[[str], bytes]) -> None:
    response = await post_raw(real.client, "chelsea.png", photo_bytes("chelsea.png"), top_k=3)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model", "model_version", "untrained", "predictions", "timing"}
    assert (body["model"], body["untrained"]) == ("efficientnet_lite0", False)
    assert body["model_version"] == real.classifier.meta.version
    predictions = body["predictions"]
    assert len(predictions) == 3
    assert all(set(p) == {"label", "class_index", "score"} for p in predictions)
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert 0 < sum(scores) <= 1.0 + 1e-6
    labels = (real.classifier.meta.model_dir / "labels.txt").read_text().splitlines()
    assert all(labels[p["class_index"]] == p["label"] for p in predictions)
    assert set(body["timing"]) == {"decode_ms", "queue_ms", "inference_ms", "batch_size"}
    assert body["timing"]["batch_size"] >= 1


async def test_multipart_json_and_raw_bodies_give_the_same_answer(
    real: Served, photo_bytes: Callable[[str], bytes]
) -> None:
    data = photo_bytes("coffee.png")
    raw = await post_raw(real.client, "coffee.png", data)
    multipart = await real.client.post(
        "/v1/classify", files={"file": ("coffee.png", data, "image/png")}
    )
    as_json = await real.client.post(
        "/v1/classify", json={"image": base64.b64encode(data).decode()}
    )
    octet = await real.client.post(
        "/v1/classify", content=data, headers={"Content-Type": "application/octet-stream"}
    )
    answers = [r.json()["predictions"] for r in (raw, multipart, as_json, octet)]
    assert [r.status_code for r in (raw, multipart, as_json, octet)] == [200] * 4
    assert all(answer == answers[0] for answer in answers)


async def test_top_k_bounds_accepted(real: Served, photo_bytes: Callable[[str], bytes]) -> None:
    data = photo_bytes("rocket.jpg")
    one = await post_raw(real.client, "rocket.jpg", data, top_k=1)
    every = await post_raw(real.client, "rocket.jpg", data, top_k=1000)
    assert len(one.json()["predictions"]) == 1
    assert len(every.json()["predictions"]) == 1000
    assert sorted(p["class_index"] for p in every.json()["predictions"]) == list(range(1000))


async def test_server_timing_header(real: Served, photo_bytes: Callable[[str], bytes]) -> None:
    response = await post_raw(real.client, "rocket.jpg", photo_bytes("rocket.jpg"))
    header = response.headers["Server-Timing"]
    pattern = (
        r"decode;dur=[\d.]+, queue;dur=[\d.]+, inference;dur=[\d.]+, "
        r'batch_size;desc="(\d+)", total;dur=[\d.]+'
    )
    match = re.fullmatch(pattern, header)
    assert match, header
    assert int(match.group(1)) == response.json()["timing"]["batch_size"]
    # Responses without a classification still carry the total.
    probe = await real.client.get("/livez")
    assert re.fullmatch(r"total;dur=[\d.]+", probe.headers["Server-Timing"])


async def test_request_id_echoed_when_valid_else_generated(real: Served) -> None:
    echoed = await real.client.get("/livez", headers={"X-Request-ID": "abc-123.def:9_Z"})
    assert echoed.headers["X-Request-ID"] == "abc-123.def:9_Z"
    for bad in ("has space", "x" * 129, "new\u00e9line"):
        response = await real.client.get("/livez", headers={"X-Request-ID": bad.encode()})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"]), bad
    fresh = [(await real.client.get("/livez")).headers["X-Request-ID"] for _ in range(2)]
    assert fresh[0] != fresh[1]


async def test_batch_answers_in_order_and_a_bad_image_fails_alone(
    real: Served, photos: dict[str, Any], photo_bytes: Callable[[str], bytes]
) -> None:
    files = [
        ("files", ("coffee.png", photo_bytes("coffee.png"), "image/png")),
        ("files", ("junk.jpg", b"\xff\xd8\xff not really a jpeg", "image/jpeg")),
        ("files", ("rocket.jpg", photo_bytes("rocket.jpg"), "image/jpeg")),
        ("files", ("notes.txt", b"hello", "text/plain")),
    ]
    response = await real.client.post("/v1/classify/batch", files=files, params={"top_k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["untrained"]) == ("efficientnet_lite0", False)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert [r["status"] for r in results] == [200, 400, 200, 415]
    assert results[0]["predictions"][0]["class_index"] in photos["coffee.png"]["accept"]
    assert results[2]["predictions"][0]["class_index"] in photos["rocket.jpg"]["accept"]
    assert len(results[0]["predictions"]) == 2
    assert results[1] == {
        "index": 1,
        "status": 400,
        "error": {"code": "bad_image", "message": "the data is not a decodable image"},
    }
    assert results[3]["error"]["code"] == "unsupported_media_type"
    assert 'batch_size;desc="' in response.headers["Server-Timing"]


async def test_batch_as_json_list(real: Served, photo_bytes: Callable[[str], bytes]) -> None:
    images = [base64.b64encode(photo_bytes(n)).decode() for n in ("rocket.jpg", "coffee.png")]
    response = await real.client.post("/v1/classify/batch", json={"images": images})
    single = [
        (await post_raw(real.client, n, photo_bytes(n))).json()["predictions"]
        for n in ("rocket.jpg", "coffee.png")
    ]
    assert response.status_code == 200
    assert [r["predictions"] for r in response.json()["results"]] == single


async def test_64_concurrent_callers_each_get_their_own_answer(
    real: Served, photos: dict[str, Any], photo_bytes: Callable[[str], bytes]
) -> None:
    names = asserted(photos)
    reference = {
        n: (await post_raw(real.client, n, photo_bytes(n))).json()["predictions"] for n in names
    }
    callers = [names[i % len(names)] for i in range(64)]

    async def call(name: str) -> tuple[str, Any]:
        response = await post_raw(real.client, name, photo_bytes(name))
        assert response.status_code == 200, response.text
        return name, response.json()

    answers = await asyncio.gather(*(call(name) for name in callers))
    assert [name for name, _ in answers] == callers
    for name, body in answers:
        # Same image, same batch-independent answer: nobody got a neighbour's result. Scores
        # may differ in the last bits between batch sizes, so compare classes, then scores.
        got = [p["class_index"] for p in body["predictions"]]
        assert got == [p["class_index"] for p in reference[name]], name
        assert body["predictions"][0]["score"] == pytest.approx(
            reference[name][0]["score"], abs=1e-3
        )
    assert max(body["timing"]["batch_size"] for _, body in answers) > 1  # they were batched
