"""service/observability/tracing.py with the SDK's in-memory exporter: the switch read from the
standard OTEL_* variables, the batch span's links through the real MicroBatcher, phases recorded
by ``traced``, and the link-aware sampler. The wire (OTLP to a real receiver, from the real
service) is tests/e2e/test_tracing.py's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision
from opentelemetry.trace import Link, SpanContext, TraceFlags

from service.app import create_app
from service.errors import BadImage, InferenceFailed
from service.http.middleware import RequestMiddleware
from service.http.tracing import TracingMiddleware
from service.inference.batcher import MicroBatcher
from service.observability.metrics import Metrics
from service.observability.tracing import (
    BATCH_SPAN,
    RequestSpan,
    Tracing,
    _LinkedSampler,
    current,
    traced,
)
from service.settings import Settings
from tests.unit.test_batcher import FakeModel

pytestmark = pytest.mark.anyio
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTEL_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def exported() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = Tracing.with_exporters([exporter])
    yield tracing, exporter
    tracing.shutdown()


def finished(tracing: Tracing, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    tracing.shutdown()  # flushes the batch processor
    return list(exporter.get_finished_spans())


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
    ],
    ids=["unset", "none", "sdk-disabled"],
)
def test_off_unless_the_environment_names_an_exporter(
    clean_env: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert Tracing.from_environ() is None


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_otlp_over_either_protocol(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    clean_env.setenv("OTEL_TRACES_EXPORTER", "otlp")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    caplog.set_level("INFO", logger="service.observability.tracing")
    tracing = Tracing.from_environ()
    assert tracing is not None
    tracing.shutdown()
    exporter = "otlp_proto_http" if protocol == "http/protobuf" else "otlp_proto_grpc"
    assert f"tracing on: exporting spans with {exporter}" in caplog.text


def test_off_the_app_has_no_tracing_middleware() -> None:
    """Tracing off costs nothing per request: its middleware is not even installed."""
    app = create_app(Settings())
    classes = [m.cls for m in app.user_middleware]
    assert RequestMiddleware in classes
    assert TracingMiddleware not in classes


async def test_a_batch_span_links_every_request_it_served(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    model = FakeModel()
    batcher: MicroBatcher[str, str] = MicroBatcher(
        model, max_batch_size=3, max_wait_s=1e6, capacity=8, metrics=Metrics()
    )
    batcher.start()
    requests = [tracing.start(f"request {i}", [], {}) for i in range(3)]

    async def submit(request: RequestSpan, payload: str) -> None:
        with request.current():
            await batcher.submit(payload, time.monotonic() + 60)

    # A full batch only (a huge wait): the three share it.
    await asyncio.gather(*(submit(r, p) for r, p in zip(requests, "abc", strict=True)))
    await batcher.stop()
    for request in requests:
        request.end({})
    spans = finished(tracing, exporter)

    (batch,) = [s for s in spans if s.name == BATCH_SPAN]
    assert model.sizes == [3]
    assert batch.parent is None
    assert batch.attributes is not None
    assert batch.attributes["imgcls.batch.size"] == 3
    served = {r.span.get_span_context().span_id for r in requests}
    assert {link.context.span_id for link in batch.links} == served
    for request in requests:
        context = request.span.get_span_context()
        mine = [s for s in spans if s.parent is not None and s.parent.span_id == context.span_id]
        by_name = {s.name: s for s in mine}
        assert set(by_name) == {"queue wait", "inference"}
        inference = by_name["inference"]
        assert [link.context for link in inference.links] == [batch.context]
        assert (inference.start_time, inference.end_time) == (batch.start_time, batch.end_time)
        assert by_name["queue wait"].end_time == batch.start_time


async def test_a_phase_is_a_child_of_the_running_request_and_fails_with_it(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported

    @traced("decode")
    async def decode(data: bytes) -> bytes:
        if data == b"bad":
            raise BadImage("not an image")
        return data

    assert await decode(b"ok") == b"ok"  # no request span: nothing recorded
    request = tracing.start("POST /v1/classify", [(b"traceparent", TRACEPARENT.encode())], {})
    with request.current():
        assert current() is request
        await decode(b"ok")
        with pytest.raises(BadImage):
            await decode(b"bad")
    assert current() is None
    request.end({"http.response.status_code": 400})
    spans = finished(tracing, exporter)

    root = next(s for s in spans if s.name == "POST /v1/classify")
    assert root.parent is not None
    assert root.parent.span_id == int("b7ad6b7169203331", 16)
    assert root.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    decodes = [s for s in spans if s.name == "decode"]
    assert len(decodes) == 2
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in decodes)
    failed = [s for s in decodes if s.status.status_code is trace.StatusCode.ERROR]
    assert len(failed) == 1
    assert failed[0].attributes is not None
    assert failed[0].attributes["error.type"] == BadImage.code


def _context(sampled: bool) -> SpanContext:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return SpanContext(trace_id=7, span_id=9, is_remote=True, trace_flags=flags)


@pytest.mark.parametrize(
    ("links", "delegate", "decision"),
    [
        ([_context(True)], ALWAYS_OFF, Decision.RECORD_AND_SAMPLE),  # a sampled request's batch
        ([_context(False)], ALWAYS_OFF, Decision.DROP),
        ([], ALWAYS_OFF, Decision.DROP),
        ([], ALWAYS_ON, Decision.RECORD_AND_SAMPLE),
    ],
)
def test_a_root_linked_to_a_sampled_span_is_sampled(
    links: list[SpanContext], delegate: object, decision: Decision
) -> None:
    sampler = _LinkedSampler(delegate)  # type: ignore[arg-type]
    result = sampler.should_sample(None, 1, BATCH_SPAN, links=[Link(c) for c in links])
    assert result.decision is decision


async def test_a_failed_batch_marks_its_span_and_each_request_s_inference(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    batcher: MicroBatcher[str, str] = MicroBatcher(
        FakeModel(), max_batch_size=1, max_wait_s=0, capacity=8, metrics=Metrics()
    )
    batcher.start()
    request = tracing.start("POST /v1/classify", [], {})
    with request.current(), pytest.raises(InferenceFailed):
        await batcher.submit("boom", time.monotonic() + 60)
    await batcher.stop()
    request.end({})
    spans = finished(tracing, exporter)

    failed = {s.name: s for s in spans if s.status.status_code is trace.StatusCode.ERROR}
    assert set(failed) == {BATCH_SPAN, "inference"}
    assert failed[BATCH_SPAN].attributes is not None
    assert failed[BATCH_SPAN].attributes["error.type"] == "ValueError"  # the runtime's error
