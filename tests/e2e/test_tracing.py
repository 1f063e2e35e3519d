"""OpenTelemetry traces as a real OTLP receiver gets them: ``python -m service`` run with the
standard OTEL_* variables, exporting with the SDK's OTLP/HTTP exporter to a loopback receiver
(bench/otlp_receiver.py) that decodes each POST /v1/traces with the protocol's own
ExportTraceServiceRequest. The caller's traceparent is the parent, each request has its phases
as children, and a batch's span links to every request it served; off unless asked."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from bench.otlp_receiver import OtlpReceiver, ReceivedSpan, tree
from tests.e2e.conftest import ServiceProcess, free_port, run_service
from tests.v2.wire import INPUT, MODEL

pytestmark = pytest.mark.slow

WAIT_S = 30.0
PHOTO = "chelsea.png"
PHASES = {"read body", "decode", "queue wait", "inference"}


@dataclass
class Traced:
    service: ServiceProcess
    receiver: OtlpReceiver
    grpc_port: int


def otel_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "imgcls-e2e",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: export soon, the tests wait for it
        **extra,
    }


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory,
    trained_model_dir: Path,
    photo_bytes: Callable[[str], bytes],
) -> Iterator[Traced]:
    grpc_port = free_port()
    env = {
        "IMGCLS_GRPC_PORT": str(grpc_port),
        # Long enough for concurrent callers to share one batch.
        "IMGCLS_MAX_BATCH_WAIT_S": "0.2",
    }
    with OtlpReceiver() as receiver:
        env |= otel_env(receiver)
        with run_service(tmp_path_factory.mktemp("traced"), trained_model_dir, **env) as service:
            # One request first, so the traces the tests print are of a warm service.
            assert classify(service.url, photo_bytes(PHOTO), {}).status_code == 200
            yield Traced(service, receiver, grpc_port)


def traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """(header value, trace id, parent span id), random."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


def classify(url: str, data: bytes, headers: dict[str, str]) -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream", **headers}
    return httpx.post(f"{url}/v1/classify", content=data, headers=headers, timeout=30)


def spans_of(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def complete(trace_id: str, server_name: str, phases: set[str] = PHASES) -> Callable[..., bool]:
    """A trace is complete once its server span, its phases and a batch span linking to it
    have arrived."""

    def ready(spans: list[ReceivedSpan]) -> bool:
        mine = spans_of(spans, trace_id)
        names = {s.name for s in mine}
        linked = any(t == trace_id for s in spans for t, _ in s.links)
        return server_name in names and phases <= names and linked

    return ready


def server_span(spans: list[ReceivedSpan], trace_id: str) -> ReceivedSpan:
    (found,) = [s for s in spans_of(spans, trace_id) if s.kind == "SPAN_KIND_SERVER"]
    return found


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_id == parent.span_id and s.trace_id == parent.trace_id]


def batch_of(spans: list[ReceivedSpan], inference: ReceivedSpan) -> ReceivedSpan:
    """The batch span an ``inference`` span links to."""
    ((trace_id, span_id),) = inference.links
    (batch,) = [s for s in spans if s.trace_id == trace_id and s.span_id == span_id]
    return batch


def test_a_request_is_one_trace_under_the_callers_parent(
    traced: Traced, photo_bytes: Callable[[str], bytes]
) -> None:
    header, trace_id, parent_id = traceparent()
    sent = {"traceparent": header, "tracestate": "caller=7", "X-Request-ID": "trace-e2e-1"}
    response = classify(traced.service.url, photo_bytes(PHOTO), sent)
    assert response.status_code == 200, response.text
    spans = traced.receiver.wait_for(complete(trace_id, "POST /v1/classify"), WAIT_S)
    print(tree(spans, trace_id))  # the trace as the receiver got it (docs/guide/tracing.md)

    root = server_span(spans, trace_id)
    assert root.name == "POST /v1/classify"
    assert root.parent_id == parent_id  # the caller's span, from its traceparent
    assert root.trace_state == "caller=7"
    assert root.service == "imgcls-e2e"
    body = response.json()
    assert root.attributes == root.attributes | {
        "http.request.method": "POST",
        "http.route": "/v1/classify",
        "url.path": "/v1/classify",
        "http.response.status_code": 200,
        "imgcls.request_id": "trace-e2e-1",
        "imgcls.model.name": body["model"],
        "imgcls.model.version": body["model_version"],
    }
    assert root.status == "STATUS_CODE_UNSET"
    phases = {s.name: s for s in children(spans, root)}
    assert set(phases) == PHASES
    for phase in phases.values():
        assert root.start_ns <= phase.start_ns <= phase.end_ns <= root.end_ns, phase.name
    order = ["read body", "decode", "queue wait", "inference"]
    starts = [phases[name].start_ns for name in order]
    assert starts == sorted(starts)
    inference = phases["inference"]
    batch = batch_of(spans, inference)
    assert batch.name == "inference batch"
    assert batch.parent_id == ""  # the root of its own trace
    assert (trace_id, root.span_id) in batch.links
    assert inference.attributes["imgcls.batch.size"] == batch.attributes["imgcls.batch.size"]
    assert batch.attributes["imgcls.batch.size"] == len(batch.links)
    assert batch.attributes["imgcls.model.version"] == body["model_version"]
    assert (batch.start_ns, batch.end_ns) == (inference.start_ns, inference.end_ns)


def test_one_batch_span_links_every_request_it_served(
    traced: Traced, photo_bytes: Callable[[str], bytes]
) -> None:
    callers = [traceparent() for _ in range(8)]
    data = photo_bytes(PHOTO)
    with ThreadPoolExecutor(len(callers)) as pool:
        answers = list(
            pool.map(lambda c: classify(traced.service.url, data, {"traceparent": c[0]}), callers)
        )
    assert [a.status_code for a in answers] == [200] * len(callers)

    def all_complete(spans: list[ReceivedSpan]) -> bool:
        return all(complete(t, "POST /v1/classify")(spans) for _, t, _ in callers)

    spans = traced.receiver.wait_for(all_complete, WAIT_S)
    print(tree(spans, callers[0][1]))  # one of them, and the batch that served it
    batches: dict[str, ReceivedSpan] = {}
    for _, trace_id, _ in callers:
        root = server_span(spans, trace_id)
        (inference,) = [s for s in children(spans, root) if s.name == "inference"]
        batch = batch_of(spans, inference)
        assert (trace_id, root.span_id) in batch.links
        assert inference.attributes["imgcls.batch.size"] == batch.attributes["imgcls.batch.size"]
        batches[batch.span_id] = batch
    ours = {t for _, t, _ in callers}
    shared = [b for b in batches.values() if len({t for t, _ in b.links} & ours) > 1]
    assert shared, "the concurrent requests should have shared a batch (0.2 s batch wait)"
    for batch in batches.values():
        assert batch.attributes["imgcls.batch.size"] == len(batch.links)


def test_the_batch_route_has_the_phases_of_each_image(
    traced: Traced, photo_bytes: Callable[[str], bytes]
) -> None:
    header, trace_id, _ = traceparent()
    files = [("files", (f"{i}.png", photo_bytes(PHOTO), "image/png")) for i in range(3)]
    url = f"{traced.service.url}/v1/classify/batch"
    response = httpx.post(url, files=files, headers={"traceparent": header}, timeout=30)
    assert response.status_code == 200, response.text

    def three_images(spans: list[ReceivedSpan]) -> bool:
        names = [s.name for s in spans_of(spans, trace_id)]
        ready = complete(trace_id, "POST /v1/classify/batch")(spans)
        return ready and names.count("inference") == 3

    spans = traced.receiver.wait_for(three_images, WAIT_S)
    root = server_span(spans, trace_id)
    assert root.attributes["http.route"] == "/v1/classify/batch"
    names = sorted(s.name for s in children(spans, root))
    assert names == ["decode"] * 3 + ["inference"] * 3 + ["queue wait"] * 3 + ["read body"]


def test_v2_rest_infer_takes_its_parent_from_the_headers(
    traced: Traced, photo_bytes: Callable[[str], bytes]
) -> None:
    header, trace_id, parent_id = traceparent()
    client = httpclient.InferenceServerClient(traced.service.url.removeprefix("http://"))
    item = httpclient.InferInput(INPUT, [1], "BYTES")
    item.set_data_from_numpy(np.array([photo_bytes(PHOTO)], dtype=np.object_))
    client.infer(MODEL, [item], headers={"traceparent": header})
    route = "/v2/models/{model}/infer"
    spans = traced.receiver.wait_for(complete(trace_id, f"POST {route}"), WAIT_S)
    root = server_span(spans, trace_id)
    assert root.parent_id == parent_id
    assert root.attributes["http.route"] == route
    assert root.attributes["url.path"] == f"/v2/models/{MODEL}/infer"
    assert {s.name for s in children(spans, root)} == PHASES


def test_grpc_model_infer_takes_its_parent_from_the_metadata(
    traced: Traced, photo_bytes: Callable[[str], bytes]
) -> None:
    header, trace_id, parent_id = traceparent()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{traced.grpc_port}")
    item = grpcclient.InferInput(INPUT, [1], "BYTES")
    item.set_data_from_numpy(np.array([photo_bytes(PHOTO)], dtype=np.object_))
    client.infer(MODEL, [item], headers={"traceparent": header, "x-request-id": "grpc-trace-1"})
    name = "inference.GRPCInferenceService/ModelInfer"
    phases = {"read message", "decode", "queue wait", "inference"}
    spans = traced.receiver.wait_for(complete(trace_id, name, phases), WAIT_S)
    root = server_span(spans, trace_id)
    assert root.name == name
    assert root.parent_id == parent_id
    assert root.attributes == root.attributes | {
        "rpc.system.name": "grpc",
        "rpc.method": name,
        "rpc.response.status_code": "OK",
        "imgcls.request_id": "grpc-trace-1",
        "imgcls.model.name": MODEL,
    }
    assert {s.name for s in children(spans, root)} == phases


def test_a_failed_request_says_why(traced: Traced) -> None:
    header, trace_id, _ = traceparent()
    response = classify(traced.service.url, b"not an image", {"traceparent": header})
    assert response.status_code == 400
    code = response.json()["error"]["code"]

    def failed(spans: list[ReceivedSpan]) -> bool:
        return {"POST /v1/classify", "decode"} <= {s.name for s in spans_of(spans, trace_id)}

    spans = traced.receiver.wait_for(failed, WAIT_S)
    root = server_span(spans, trace_id)
    assert root.attributes["http.response.status_code"] == 400
    assert root.attributes["error.type"] == code
    assert root.status == "STATUS_CODE_UNSET"  # a 4xx is the caller's error, not the server's
    (decode,) = [s for s in children(spans, root) if s.name == "decode"]
    assert decode.status == "STATUS_CODE_ERROR"
    assert decode.attributes["error.type"] == code


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"OTEL_TRACES_EXPORTER": ""}, id="exporter-unset"),
        pytest.param({"OTEL_TRACES_EXPORTER": "none"}, id="exporter-none"),
        pytest.param({"OTEL_SDK_DISABLED": "true"}, id="sdk-disabled"),
    ],
)
def test_nothing_is_sent_unless_the_environment_asks(
    tmp_path: Path,
    trained_model_dir: Path,
    photo_bytes: Callable[[str], bytes],
    extra: dict[str, str],
) -> None:
    with OtlpReceiver() as receiver:
        env = otel_env(receiver, **extra)
        with run_service(tmp_path, trained_model_dir, **env) as service:
            header, _, _ = traceparent()
            assert classify(service.url, photo_bytes(PHOTO), {"traceparent": header}).is_success
            assert service.stop() == 0  # the shutdown flushes what tracing would have buffered
        assert receiver.posts == 0
        assert "tracing on" not in service.log_text()


def test_a_batch_is_sampled_when_a_request_it_served_is(
    tmp_path: Path, trained_model_dir: Path, photo_bytes: Callable[[str], bytes]
) -> None:
    """With a ratio of 0, only requests whose caller sampled them are traced; their batch
    (a root span, which the ratio alone would drop) is kept with them."""
    sampler = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    with OtlpReceiver() as receiver:
        env = otel_env(receiver, **sampler)
        with run_service(tmp_path, trained_model_dir, **env) as service:
            kept, trace_id, _ = traceparent(sampled=True)
            dropped, _, _ = traceparent(sampled=False)
            for header in (dropped, kept, ""):
                sent = {"traceparent": header} if header else {}
                assert classify(service.url, photo_bytes(PHOTO), sent).is_success
            spans = receiver.wait_for(complete(trace_id, "POST /v1/classify"), WAIT_S)
            assert service.stop() == 0
        spans = receiver.spans
    assert {s.trace_id for s in spans if s.name != "inference batch"} == {trace_id}
    batches = [s for s in spans if s.name == "inference batch"]
    assert len(batches) == 1
    assert {t for t, _ in batches[0].links} == {trace_id}


def test_otlp_over_grpc(
    tmp_path: Path, trained_model_dir: Path, photo_bytes: Callable[[str], bytes]
) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc: the same spans, through the SDK's gRPC exporter."""
    with OtlpReceiver(grpc_too=True) as receiver:
        env = otel_env(receiver, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.grpc_endpoint
        with run_service(tmp_path, trained_model_dir, **env) as service:
            header, trace_id, parent_id = traceparent()
            assert classify(service.url, photo_bytes(PHOTO), {"traceparent": header}).is_success
            spans = receiver.wait_for(complete(trace_id, "POST /v1/classify"), WAIT_S)
    assert server_span(spans, trace_id).parent_id == parent_id
    assert "exporting spans with otlp_proto_grpc" in service.log_text()
