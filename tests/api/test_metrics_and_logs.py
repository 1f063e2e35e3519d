"""/metrics (route templates, statuses, rejections) and the JSON access log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from service.observability.logs import setup_logging
from service.settings import Settings
from tests.api.conftest import fake_factory, serve

pytestmark = pytest.mark.anyio


async def test_metrics_count_by_route_template_and_status() -> None:
    async with serve(Settings(), fake_factory()) as served:
        client = served.client
        for _ in range(2):
            await client.post("/v1/classify", content=b"i", headers={"Content-Type": "image/png"})
        await client.post("/v1/classify", content=b"i", headers={"Content-Type": "text/plain"})
        await client.get("/no/such/page")
        await client.get("/livez")
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = response.text
    for line in (
        'imgcls_http_requests_total{method="POST",route="/v1/classify",status="200"} 2.0',
        'imgcls_http_requests_total{method="POST",route="/v1/classify",status="415"} 1.0',
        'imgcls_http_requests_total{method="GET",route="unmatched",status="404"} 1.0',
        'imgcls_http_requests_total{method="GET",route="/livez",status="200"} 1.0',
        'imgcls_http_request_duration_seconds_count{route="/v1/classify"} 3.0',
        'imgcls_rejections_total{reason="unsupported_media_type"} 1.0',
    ):
        assert line in text, line
    assert "/no/such/page" not in text  # raw paths never become labels


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    setup_logging("json", "info", stream)
    yield stream
    root.handlers[:], root.level = saved
    logging.getLogger("uvicorn.access").disabled = False


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_one_json_access_line_per_request_with_request_id(json_logs: io.StringIO) -> None:
    async with serve(Settings(), fake_factory()) as served:
        await served.client.post(
            "/v1/classify",
            content=b"img",
            headers={"Content-Type": "image/png", "X-Request-ID": "log-test-1"},
        )
    access = [r for r in json_lines(json_logs.getvalue()) if r["logger"] == "imgcls.access"]
    assert len(access) == 1
    line = access[0]
    assert {k: line[k] for k in ("method", "route", "path", "status", "request_id")} == {
        "method": "POST",
        "route": "/v1/classify",
        "path": "/v1/classify",
        "status": 200,
        "request_id": "log-test-1",
    }
    assert line["batch_size"] == 4  # from the fake's timing
    assert isinstance(line["duration_ms"], float)
    assert line["level"] == "INFO"
    assert "time" in line


async def test_500_traceback_logged_with_request_id(json_logs: io.StringIO) -> None:
    async with serve(Settings(), fake_factory(error=RuntimeError("kaboom"))) as served:
        await served.client.post(
            "/v1/classify",
            content=b"img",
            headers={"Content-Type": "image/png", "X-Request-ID": "req-boom"},
        )
    records = json_lines(json_logs.getvalue())
    error = next(r for r in records if r["level"] == "ERROR")
    assert error["request_id"] == "req-boom"
    assert "RuntimeError: kaboom" in str(error["exc_info"])


async def test_untrained_model_is_announced_at_startup(json_logs: io.StringIO) -> None:
    async with serve(Settings(), fake_factory(untrained=True)):
        pass
    warnings = [r for r in json_lines(json_logs.getvalue()) if r["level"] == "WARNING"]
    assert any("UNTRAINED" in str(r["message"]) for r in warnings)


def test_uvicorn_colour_copies_are_dropped_from_json_lines(json_logs: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 7, extra={"color_message": "\x1b[36m%d\x1b[0m"}
    )
    (line,) = json_lines(json_logs.getvalue())
    assert line["message"] == "Started server process [7]"
    assert "color_message" not in line
