"""Tracing in the real app, in-process, on the tiny model, with the SDK's in-memory exporter:
only the inference routes are traced, and a response-cache hit says so on its span (it has no
decode, queue or inference of its own). The wire and the real process: tests/e2e/test_tracing.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.app import create_app
from service.http.state import service_state
from service.observability.tracing import Tracing
from service.settings import Settings
from tests.unit.tiny import colour_png, write_tiny_artifacts

pytestmark = pytest.mark.anyio
PNG = {"Content-Type": "image/png"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_artifacts(tmp_path_factory.mktemp("artifacts") / "tiny")


@contextlib.asynccontextmanager
async def traced_app(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Exported]]:
    exported = Exported()
    app = create_app(settings, tracing=exported.tracing)
    async with app.router.lifespan_context(app):
        await service_state(app).start_task
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://imgcls") as client:
            yield client, exported


class Exported:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracing = Tracing.with_exporters([self.exporter])

    def spans(self) -> list[ReadableSpan]:
        self.tracing.shutdown()  # flush (the app's lifespan shuts it down again: harmless)
        return list(self.exporter.get_finished_spans())


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[str]:
    return sorted(
        s.name for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
    )


async def test_only_inference_routes_are_traced(model_dir: Path) -> None:
    async with traced_app(Settings(model_dir=model_dir, provider="cpu")) as (client, exported):
        for path in ("/livez", "/readyz", "/metrics", "/v1/model", "/v2/models/tiny"):
            assert (await client.get(path)).status_code == 200, path
        answer = await client.post("/v1/classify", content=colour_png(7), headers=PNG)
        assert answer.status_code == 200
        spans = exported.spans()
    roots = [s for s in spans if s.parent is None and s.name != "inference batch"]
    assert [s.name for s in roots] == ["POST /v1/classify"]


async def test_a_cache_hit_says_so_on_its_span(model_dir: Path) -> None:
    settings = Settings(model_dir=model_dir, provider="cpu", cache_bytes=1 << 20)
    async with traced_app(settings) as (client, exported):
        image = colour_png(99)
        for _ in range(2):
            assert (await client.post("/v1/classify", content=image, headers=PNG)).is_success
        spans = exported.spans()
    first, second = sorted(
        (s for s in spans if s.name == "POST /v1/classify"), key=lambda s: s.start_time or 0
    )
    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes["http.response.header.cache-status"] == ("imgcls; fwd=miss",)
    assert second.attributes["http.response.header.cache-status"] == ("imgcls; hit",)
    assert children(spans, first) == ["decode", "inference", "queue wait", "read body"]
    assert children(spans, second) == ["read body"]
