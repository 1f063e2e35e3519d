"""A real OTLP trace receiver on loopback, for the tracing tests and benchmark: it accepts
``POST /v1/traces`` (OTLP/HTTP, protobuf, gzip or not) and, when asked, the gRPC TraceService,
decodes each export with the protocol's own ExportTraceServiceRequest (package
opentelemetry-proto) and keeps the spans; ``tree`` prints a trace as it arrived (names,
parent/child, durations, attributes, links).

    python -m bench.otlp_receiver [--port 4318] [--quiet]   # print every trace as it arrives

GET /readyz answers 200 once it listens, GET /count the spans and posts received (JSON).
"""

from __future__ import annotations

import argparse
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    trace_id: str  # hex
    span_id: str
    parent_id: str  # "" for a root
    trace_state: str  # W3C tracestate, as the span carries it
    name: str
    kind: str  # SPAN_KIND_SERVER, ...
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace_id, span_id)
    status: str  # STATUS_CODE_UNSET | _OK | _ERROR
    status_message: str
    resource: dict[str, Any]

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class OtlpReceiver:
    """Start with ``with OtlpReceiver() as receiver:``; its ``endpoint`` is the value for
    OTEL_EXPORTER_OTLP_ENDPOINT."""

    def __init__(self, port: int = 0, keep: bool = True, grpc_too: bool = False) -> None:
        """``keep``: False counts the spans and drops them (a long benchmark); ``grpc_too``:
        also serve OTLP/gRPC, on ``grpc_endpoint``."""
        self.spans: list[ReceivedSpan] = []
        self.posts = 0
        self.received = 0  # spans
        self._keep = keep
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(
            ("127.0.0.1", port), _handler(self._received, self._counts)
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.on_spans: Callable[[list[ReceivedSpan]], None] | None = None
        self._grpc: grpc.Server | None = None
        self.grpc_endpoint = ""
        if grpc_too:
            self._grpc = grpc.server(ThreadPoolExecutor(2))
            add_servicer = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
            add_servicer(_TraceService(self._received), self._grpc)  # type: ignore[no-untyped-call]
            self.grpc_endpoint = f"http://127.0.0.1:{self._grpc.add_insecure_port('127.0.0.1:0')}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        if self._grpc is not None:
            self._grpc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._grpc is not None:
            self._grpc.stop(None)
        self._server.shutdown()
        self._server.server_close()

    def wait_for(
        self, ready: Callable[[list[ReceivedSpan]], bool], timeout_s: float
    ) -> list[ReceivedSpan]:
        """The spans once ``ready(spans)`` holds (woken by each export, never polled), or
        TimeoutError."""
        with self._changed:
            if not self._changed.wait_for(lambda: ready(list(self.spans)), timeout_s):
                names = sorted({s.name for s in self.spans})
                raise TimeoutError(f"{len(self.spans)} spans after {timeout_s:g} s: {names}")
            return list(self.spans)

    def _counts(self) -> dict[str, int]:
        with self._changed:
            return {"spans": self.received, "posts": self.posts}

    def _received(self, request: ExportTraceServiceRequest) -> None:
        spans = list(_flatten(request))
        with self._changed:
            self.posts += 1
            self.received += len(spans)
            if self._keep:
                self.spans.extend(spans)
            self._changed.notify_all()
        if self.on_spans is not None:
            self.on_spans(spans)


def _handler(
    received: Callable[[ExportTraceServiceRequest], None], counts: Callable[[], dict[str, int]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in ("/readyz", "/count"):
                self.send_error(404)
                return
            answer = json.dumps(counts()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != TRACES_PATH:
                self.send_error(404)
                return
            received(ExportTraceServiceRequest.FromString(body))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: a test's output is its own

    return Handler


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Callable[[ExportTraceServiceRequest], None]) -> None:
        self._received = received

    def Export(self, request: ExportTraceServiceRequest, context: Any) -> Any:
        self._received(request)
        return ExportTraceServiceResponse()


def _flatten(request: ExportTraceServiceRequest) -> Iterator[ReceivedSpan]:
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield _span(span, resource)


def _span(span: Span, resource: dict[str, Any]) -> ReceivedSpan:
    return ReceivedSpan(
        service=str(resource.get("service.name", "")),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        trace_state=span.trace_state,
        name=span.name,
        kind=Span.SpanKind.Name(span.kind),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes=_attributes(span.attributes),
        links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
        status=Status.StatusCode.Name(span.status.code),
        status_message=span.status.message,
        resource=resource,
    )


def _attributes(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def tree(spans: Sequence[ReceivedSpan], trace_id: str) -> str:
    """One trace as indented lines: offset from the root's start, duration, name, kind,
    status, attributes and links; spans linked FROM another trace (a batch) are listed after
    it, so the whole story of a request is one block."""
    mine = sorted((s for s in spans if s.trace_id == trace_id), key=lambda s: s.start_ns)
    if not mine:
        return f"(no spans of trace {trace_id})"
    ids = {s.span_id for s in mine}
    roots = [s for s in mine if s.parent_id not in ids]
    origin = roots[0].start_ns
    lines = [f"trace {trace_id} (service.name={mine[0].service})"]

    def walk(span: ReceivedSpan, depth: int) -> None:
        lines.append(_line(span, depth, origin))
        for child in (s for s in mine if s.parent_id == span.span_id):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    linking = [s for s in spans if s.trace_id != trace_id and trace_id in (t for t, _ in s.links)]
    for span in sorted(linking, key=lambda s: s.start_ns):
        lines.append(f"linked from trace {span.trace_id}:")
        lines.append(_line(span, 1, origin))
    return "\n".join(lines)


def _line(span: ReceivedSpan, depth: int, origin_ns: int) -> str:
    offset = (span.start_ns - origin_ns) / 1e6
    kind = span.kind.removeprefix("SPAN_KIND_").lower()
    status = "" if span.status == "STATUS_CODE_UNSET" else f" [{span.status[12:]}]"
    indent = "\n" + "  " * (depth + 2)
    attributes = " ".join(f"{k}={v}" for k, v in sorted(span.attributes.items()))
    details = ([attributes] if attributes else []) + [f"link -> {t}/{s}" for t, s in span.links]
    head = f"{'  ' * depth}+{offset:8.3f} ms {span.duration_ms:8.3f} ms  {span.name} ({kind})"
    return f"{head}{status}  span {span.span_id}" + "".join(indent + d for d in details)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--quiet", action="store_true", help="count spans, print nothing")
    args = parser.parse_args()
    with OtlpReceiver(args.port, keep=not args.quiet) as receiver:
        if not args.quiet:
            receiver.on_spans = lambda spans: print(
                *(tree(receiver.spans, t) for t in sorted({s.trace_id for s in spans})),
                sep="\n\n",
                flush=True,
            )
        print(f"receiving OTLP/HTTP traces on {receiver.endpoint}{TRACES_PATH}", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
