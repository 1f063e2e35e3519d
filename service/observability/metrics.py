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
# Top-1 probability: finer near the top, where a trained model's answers gather.
_CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


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

        # Response cache (service/inference/cache.py): its series exist, at zero, when it is off.
        self.cache_requests = Counter(
            "imgcls_cache_requests_total",
            "Images looked up in the response cache, by outcome: hit (answered from it), "
            "collapsed (shared an identical request in flight), miss (computed).",
            ["outcome"],
            registry=r,
        )
        self.cache_evictions = Counter(
            "imgcls_cache_evictions_total",
            "Entries removed from the response cache, by reason: size (least recently used, "
            "to fit the byte bound), expired (older than the TTL), flush (the model changed).",
            ["reason"],
            registry=r,
        )
        # Every outcome and reason from zero: rate() then sees each one's first increments.
        for outcome in ("hit", "collapsed", "miss"):
            self.cache_requests.labels(outcome=outcome)
        for reason in ("size", "expired", "flush"):
            self.cache_evictions.labels(reason=reason)
        self.cache_bytes = Gauge(
            "imgcls_cache_bytes", "Bytes held by the response cache's entries.", registry=r
        )
        self.cache_entries = Gauge(
            "imgcls_cache_entries", "Images whose scores the response cache holds.", registry=r
        )
        self.cache_capacity_bytes = Gauge(
            "imgcls_cache_capacity_bytes",
            "The response cache's byte bound (IMGCLS_CACHE_BYTES; 0: off).",
            registry=r,
        )

        # Prediction monitoring (service/observability/predictions.py): what the model answers.
        self.prediction_confidence = Histogram(
            "imgcls_prediction_confidence",
            "Top-1 softmax probability of every answered image (cache hits included).",
            buckets=_CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "imgcls_predictions_total",
            "Answered images by predicted top-1 class (every class of the model, from zero).",
            ["class_index", "label"],
            registry=r,
        )
        self.low_confidence = Counter(
            "imgcls_prediction_low_confidence_total",
            "Answered images whose top-1 probability is below IMGCLS_LOW_CONFIDENCE.",
            registry=r,
        )
        self.low_confidence_threshold = Gauge(
            "imgcls_prediction_low_confidence_threshold",
            "The top-1 probability below which an answer counts as low-confidence.",
            registry=r,
        )
        self.baseline_confidence = Gauge(
            "imgcls_prediction_baseline_confidence",
            "Mean top-1 probability of the served model on its evaluation images (the build's "
            "baseline; 0 when the manifest has none).",
            registry=r,
        )
        self.baseline_class_share = Gauge(
            "imgcls_prediction_baseline_class_share",
            "Share of the evaluation images predicted as each class (classes never predicted "
            "there are absent: a share of 0).",
            ["class_index", "label"],
            registry=r,
        )
        self.baseline_images = Gauge(
            "imgcls_prediction_baseline_images",
            "Evaluation images the baseline was measured on.",
            registry=r,
        )

        # Saturation (the autoscaling signal): admitted work against the admission capacity.
        self.in_flight = Gauge(
            "imgcls_in_flight_images",
            "Images admitted now (decoding, queued, running or waiting for an identical one), "
            "plus places held by tickets (complete requests not admitted yet).",
            registry=r,
        )
        self.capacity = Gauge(
            "imgcls_capacity_images",
            "Images admitted at once before 503 overloaded (IMGCLS_QUEUE_CAPACITY).",
            registry=r,
        )
        self.saturation = Gauge(
            "imgcls_saturation",
            "imgcls_in_flight_images / imgcls_capacity_images now: 1 means refusing work.",
            registry=r,
        )
        self.in_flight_seconds = Counter(
            "imgcls_in_flight_image_seconds_total",
            "Admitted images times seconds admitted, added when each is answered: its rate is "
            "the mean number of images in flight over the window (Little's law), unsampled.",
            registry=r,
        )
