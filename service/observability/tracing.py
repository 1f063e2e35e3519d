"""OpenTelemetry traces, off unless the standard ``OTEL_*`` environment turns them on (the only
module importing OpenTelemetry; docs/decisions/tracing.md says why it is built this way).

- ``Tracing.from_environ()``: None unless OTEL_TRACES_EXPORTER names an exporter and the SDK is
  not disabled; the SDK reads the rest. Spans leave through a BatchSpanProcessor's thread, never
  on a request's path; ``shutdown()`` flushes.
- A traced request's server span (``Tracing.start``) is current in a ContextVar its tasks
  inherit; off, nothing sets it and every hook here is one ContextVar lookup.
- Children get explicit times from the service's own timings (``traced``, ``record_batch``);
  a batch is a root span linked to every request span it served, sampled when any of them is.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from importlib import metadata
from typing import Any, ParamSpec, TypeVar

from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk import _configuration as sdk_configuration
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as sdk_sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from service.observability.logs import request_id_var

__all__ = [
    "AttributeValue",
    "RequestSpan",
    "Served",
    "Tracing",
    "current",
    "note_error",
    "note_exception",
    "note_model",
    "record_batch",
    "traced",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
Attributes = Mapping[str, AttributeValue]
Carrier = Iterable[tuple[bytes | str, bytes | str]]  # ASGI headers or gRPC metadata

DEFAULT_SERVICE_NAME = "imgcls"
BATCH_SPAN = "inference batch"
_current: ContextVar[RequestSpan | None] = ContextVar("imgcls_request_span", default=None)


def current() -> RequestSpan | None:
    """The request span of the running request, or None (tracing off, or not a traced route)."""
    return _current.get()


class Tracing:
    """The SDK's tracer provider and this service's tracer."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self.tracer = provider.get_tracer("imgcls")

    @classmethod
    def from_environ(cls) -> Tracing | None:
        """Built from the OTEL_* environment as the SDK reads it, or None: tracing off."""
        names = sdk_configuration._get_exporter_names("traces")  # none, unset: []
        if not names:
            return None
        exporters, _, _ = sdk_configuration._import_exporters(names, [], [])
        tracing = cls.with_exporters([kind() for kind in exporters.values()])
        if isinstance(tracing.tracer, trace.NoOpTracer):  # OTEL_SDK_DISABLED=true
            tracing.shutdown()
            return None
        log.info("tracing on: exporting spans with %s", ", ".join(exporters))
        return tracing

    @classmethod
    def with_exporters(cls, exporters: Sequence[SpanExporter]) -> Tracing:
        # The sampler the SDK would build from OTEL_TRACES_SAMPLER(_ARG), taught about links.
        sampler = _LinkedSampler(sdk_sampling._get_from_env_or_default())
        provider = TracerProvider(sampler=sampler, resource=_resource(), shutdown_on_exit=False)
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def start(self, name: str, carrier: Carrier, attributes: Attributes) -> RequestSpan:
        """A request's server span, its parent taken from ``carrier`` (W3C traceparent and
        tracestate, or whatever OTEL_PROPAGATORS names)."""
        parent = propagate.extract(_headers(carrier), getter=_GETTER)
        request_id = request_id_var.get()
        if request_id is not None:
            attributes = {**attributes, "imgcls.request_id": request_id}
        span = self.tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        return RequestSpan(self.tracer, span)

    def shutdown(self) -> None:
        """Export what is buffered (bounded by OTEL_BSP_EXPORT_TIMEOUT) and stop."""
        self._provider.shutdown()


class RequestSpan:
    """One request's server span and what its children need."""

    def __init__(self, tracer: trace.Tracer, span: trace.Span) -> None:
        self.tracer = tracer
        self.span = span
        self.model: dict[str, AttributeValue] = {}
        self.error_type: str | None = None

    @property
    def recording(self) -> bool:
        return self.span.is_recording()

    @contextlib.contextmanager
    def current(self) -> Iterator[RequestSpan]:
        """The running request's span, for this task and the tasks it creates."""
        token = self.enter()
        try:
            yield self
        finally:
            self.leave(token)

    def enter(self) -> Token[RequestSpan | None]:
        return _current.set(self)

    def leave(self, token: Token[RequestSpan | None]) -> None:
        _current.reset(token)

    def error(self, error_type: str, server_fault: bool, description: str | None = None) -> None:
        """How the request failed: ``error.type`` always; status ERROR only for the server's
        own failures (a server span's 4xx is the caller's, as the semantic conventions say)."""
        self.error_type = error_type
        self.span.set_attribute("error.type", error_type)
        if server_fault:
            self.span.set_status(Status(StatusCode.ERROR, description))

    def end(self, attributes: Attributes, failed: str | None = None) -> None:
        """End the span; ``failed``: an error type for an answer that failed on the server,
        when nothing more precise was noted."""
        self.span.set_attributes(attributes)
        if failed is not None and self.error_type is None:
            self.error(failed, server_fault=True)
        self.span.end()

    def child(
        self,
        name: str,
        start: float,
        end: float,
        attributes: Attributes | None = None,
        links: Sequence[Link] = (),
        error: BaseException | None = None,
        clock: _Clock | None = None,
    ) -> None:
        """A child span from ``start`` to ``end`` (time.monotonic() seconds)."""
        if not self.recording:
            return
        clock = clock or _Clock()
        span = self.tracer.start_span(
            name,
            context=trace.set_span_in_context(self.span),
            attributes=attributes,
            links=links,
            start_time=clock.epoch_ns(start),
        )
        if error is not None:
            _failed(span, error)
        span.end(end_time=clock.epoch_ns(end))


def note_model(name: str, version: str) -> None:
    """The model and version serving the running request (on its span, and its batch's)."""
    request = _current.get()
    if request is not None and not request.model:
        request.model = {"imgcls.model.name": name, "imgcls.model.version": version}
        request.span.set_attributes(request.model)


def note_error(code: str, status: int, message: str) -> None:
    """The error the running request is answered with (its code, and its message when the
    server failed)."""
    request = _current.get()
    if request is not None:
        request.error(code, server_fault=status >= 500, description=f"{code}: {message}")


def note_exception(exc: BaseException) -> None:
    """An unexpected exception the running request failed with (the server's fault)."""
    request = _current.get()
    if request is not None:
        request.span.record_exception(exc)
        request.error(type(exc).__qualname__, server_fault=True, description=str(exc))


def traced(name: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Record each call of an async function as a child span ``name`` of the running request's
    span (status ERROR when it raises); off, one ContextVar lookup."""

    def decorate(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(function)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            request = _current.get()
            if request is None:
                return await function(*args, **kwargs)
            started = time.monotonic()
            try:
                result = await function(*args, **kwargs)
            except BaseException as exc:
                request.child(name, started, time.monotonic(), error=exc)
                raise
            request.child(name, started, time.monotonic())
            return result

        return timed

    return decorate


@dataclass(frozen=True, slots=True)
class Served:
    """One item of a batch, as the tracing of its batch needs it."""

    request: RequestSpan | None  # its request's span, captured when it was queued
    enqueued_at: float  # time.monotonic()


def record_batch(
    items: Sequence[Served], started: float, ended: float, error: BaseException | None = None
) -> None:
    """A batch that ran from ``started`` to ``ended``: its own span, linked to each request span
    it served, and in each request its ``queue wait`` and ``inference`` spans."""
    traced_items = [item for item in items if item.request is not None and item.request.recording]
    if not traced_items:
        return
    size = {"imgcls.batch.size": len(items)}
    first = traced_items[0].request
    assert first is not None
    clock = _Clock()  # one reading for every span of the batch: equal times stay equal
    links = [Link(item.request.span.get_span_context()) for item in traced_items if item.request]
    batch = first.tracer.start_span(
        BATCH_SPAN,
        context=trace.set_span_in_context(trace.INVALID_SPAN),  # a root, not the caller's child
        attributes={**size, **first.model},
        links=links,
        start_time=clock.epoch_ns(started),
    )
    if error is not None:
        _failed(batch, error)
    batch.end(end_time=clock.epoch_ns(ended))
    to_batch = [Link(batch.get_span_context())]
    for item in traced_items:
        request = item.request
        assert request is not None
        request.child("queue wait", item.enqueued_at, started, clock=clock)
        request.child("inference", started, ended, size, to_batch, error, clock)


def _failed(span: trace.Span, error: BaseException) -> None:
    span.set_attribute("error.type", getattr(error, "code", type(error).__qualname__))
    span.set_status(Status(StatusCode.ERROR, str(error) or None))


class _Clock:
    """time.monotonic() readings as the epoch nanoseconds spans carry, through one reading of
    both clocks (the wall clock may be stepped; the monotonic one times the phases)."""

    def __init__(self) -> None:
        self._wall_ns = time.time_ns()
        self._monotonic_s = time.monotonic()

    def epoch_ns(self, monotonic_s: float) -> int:
        return self._wall_ns - round((self._monotonic_s - monotonic_s) * 1e9)


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as the SDK reads them; service.name
    ``imgcls`` when neither names one (the SDK's fallback is ``unknown_service``)."""
    try:
        version = metadata.version("imgcls")
    except metadata.PackageNotFoundError:  # a checkout run without `pip install -e .`
        version = "0+unknown"
    resource = Resource({SERVICE_VERSION: version}).merge(Resource.create())
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def _headers(carrier: Carrier) -> dict[str, str]:
    """Lower-case names; a repeated header's values joined with commas (RFC 9110)."""
    found: dict[str, str] = {}
    for raw_name, raw_value in carrier:
        name = _text(raw_name).lower()
        value = _text(raw_value)
        found[name] = f"{found[name]},{value}" if name in found else value
    return found


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _DictGetter(Getter[dict[str, str]]):
    def get(self, carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return None if value is None else [value]

    def keys(self, carrier: dict[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _DictGetter()


class _LinkedSampler(sdk_sampling.Sampler):
    """The configured sampler, except that a root span linked to a sampled span is sampled: a
    batch is kept whenever one of the requests it served is, whatever the ratio."""

    def __init__(self, delegate: sdk_sampling.Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes | None = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> sdk_sampling.SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and any(_sampled(link.context) for link in links or ()):
            return sdk_sampling.SamplingResult(sdk_sampling.Decision.RECORD_AND_SAMPLE, attributes)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"Linked{{{self._delegate.get_description()}}}"


def _sampled(context: SpanContext) -> bool:
    return context.is_valid and context.trace_flags.sampled
