"""Every Prometheus object of the service, defined once, in base units (seconds, bytes).

They live on a registry owned by one ``Metrics`` instance (built in create_app), not on the
global default registry, so that each app (and each test) has its own counters and building a
second app never fails with "duplicated timeseries".
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

# Latency buckets for a service whose requests take ~2-100 ms and whose worst case is the
# request timeout (10 s by default).
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # RSS, CPU seconds, open fds of this process
        PlatformCollector(registry=r)

        # HTTP (api layer)
        self.requests = Counter(
            "imgcls_http_requests_total",
            "HTTP requests by route template and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "imgcls_http_request_duration_seconds",
            "Time from request received to response ready, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # gRPC (service/grpc/server.py): every call, by method and status code name
        self.grpc_requests = Counter(
            "imgcls_grpc_requests_total",
            "gRPC calls by method (ModelInfer, ...) and status code name (OK, NOT_FOUND, ...).",
            ["method", "code"],
            registry=r,
        )
        self.grpc_request_duration = Histogram(
            "imgcls_grpc_request_duration_seconds",
            "Time from a gRPC call's handler start to its answer, by method.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.open_connections = Gauge(
            "imgcls_http_open_connections",
            "HTTP connections open now (set by the server; 0 in-process).",
            registry=r,
        )
        self.connections_closed = Counter(
            "imgcls_http_connections_closed_total",
            "HTTP connections the server closed on a clock, with no request to answer: "
            "head_timeout (no byte of a head), body_timeout (a body left unread, too slow).",
            ["reason"],
            registry=r,
        )
        self.rejections = Counter(
            "imgcls_rejections_total",
            "Images refused or failed, by reason (the error code: bad_image, overloaded, ...).",
            ["reason"],
            registry=r,
        )

        # Data plane (classifier, batcher, runner)
        self.decode_duration = Histogram(
            "imgcls_decode_duration_seconds",
            "Decode + resize + crop of one image, in the decode pool.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "imgcls_queue_wait_seconds",
            "Time an image waited in the batch queue before its batch started.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "imgcls_inference_duration_seconds",
            "ONNX Runtime run time of one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "imgcls_batch_size",
            "Images per batch run by the inference thread.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "imgcls_queue_depth", "Images waiting in the batch queue.", registry=r
        )
        self.body_bytes = Gauge(
            "imgcls_request_body_bytes",
            "Bytes of request bodies held in memory now (the body budget's use).",
            registry=r,
        )
        self.oldest_queued_age = Gauge(
            "imgcls_queue_oldest_age_seconds",
            "Age of the oldest image waiting in the batch queue (0 when empty).",
            registry=r,
        )
        self.warmup_latency = Gauge(
            "imgcls_warmup_latency_seconds",
            "Median latency of one batch measured at warm-up, by batch size.",
            ["batch_size"],
            registry=r,
        )
        self.ready = Gauge(
            "imgcls_ready", "1 when the model is loaded, warmed and admitting work.", registry=r
        )
        self.model_info = Info(
            "imgcls_model",
            "The model being served: name, version, classes, architecture, labels digest, "
            "precision, provider, threads.",
            registry=r,
        )
        self.provider_selected = Gauge(
            "imgcls_provider_selected",
            "1 for the execution provider serving, with the reason it was chosen.",
            ["provider", "reason"],
            registry=r,
        )
