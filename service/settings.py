"""Every setting of the service, read from IMGCLS_* environment variables into one frozen
``Settings``, built in ``python -m service`` (or by a test) and passed down; nothing reads the
environment at import. Each name carries its unit. Each field's description is its
documentation: docs/reference/settings.md is generated from this class (``make reference``) and
a test fails when the committed copy is stale."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from service import paths
from service.process import available_cpus

# Room for multipart boundaries and part headers, or JSON punctuation, around the image bytes.
_ENVELOPE_BYTES = 64 * 1024

Provider = Literal["auto", "cpu", "openvino"]
Precision = Literal["int8", "fp32"]  # what to serve; the manifest's file keys are FileKey

CPUS = "the CPUs this process may use: min(affinity mask, cgroup CPU quota), resolved once"


def _in(group: str, *, advanced: bool = False, default: str | None = None) -> dict[str, Any]:
    """A field's place in the generated reference (and its default, when computed)."""
    extra: dict[str, Any] = {"group": group, "advanced": advanced}
    if default is not None:
        extra["default_text"] = default
    return extra


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMGCLS_", frozen=True, extra="ignore")

    # -- Model -------------------------------------------------------------------------------
    model_dir: Path | None = Field(
        default=None,
        description="The model folder to serve: one built model, or numbered version "
        "folders (1/, 2/, ...) each holding one. Unset: the best built model under "
        "IMGCLS_ARTIFACTS_DIR (trained before untrained, then resnet18 before "
        "efficientnet_lite0).",
        json_schema_extra=_in("Model"),
    )
    model_version: str | None = Field(
        default=None,
        description="Serve this version of the model folder (a numbered subfolder: "
        "docs/guide/model-versions.md), at start-up and on every reload. Unset: the newest "
        "version that loads (the largest folder number).",
        json_schema_extra=_in("Model"),
    )
    artifacts_dir: Path = Field(
        default=paths.DEFAULT_ARTIFACTS_DIR,
        description="Where build/ wrote the models.",
        json_schema_extra=_in("Model", default="model_artifacts"),
    )
    precision: Precision = Field(
        default="int8",
        description="int8 serves the quantized model; fp32 the unquantized export (2.4-3.5x "
        "slower per image, for comparison).",
        json_schema_extra=_in("Model"),
    )
    provider: Provider = Field(
        default="auto",
        description="Execution provider. auto: where OpenVINO is installed, it must give the "
        "CPU provider's top-1 on the warm-up images, then the faster of the two serves "
        "(+~0.6 s start-up); cpu: ONNX Runtime's own (fastest start); openvino: fails to start "
        "without it. The choice and its reason: the log, GET /v1/model, "
        "imgcls_provider_selected.",
        json_schema_extra=_in("Model"),
    )

    # -- Batching and admission --------------------------------------------------------------
    max_batch_size: PositiveInt = Field(
        default=4,
        description="Images per inference batch. Larger costs less CPU per image on OpenVINO "
        "but every image of a batch waits for all of it, and each size is one more compile at "
        "start; 1 turns batching off.",
        json_schema_extra=_in("Batching and admission"),
    )
    queue_capacity: PositiveInt = Field(
        default=64,
        description="Images admitted at once (decoding, queued or running); beyond it 503 "
        "overloaded with Retry-After. Larger absorbs bursts and lengthens the worst queue wait.",
        json_schema_extra=_in("Batching and admission"),
    )
    request_timeout_s: PositiveFloat = Field(
        default=10.0,
        description="Seconds from admission across decode, queue and inference; past it 504, "
        "and an image not yet run never runs.",
        json_schema_extra=_in("Batching and admission"),
    )
    max_batch_wait_s: float = Field(
        default=0.0,
        ge=0.0,
        description="Seconds a batch is held open to fill. 0: run as soon as the inference "
        "thread is free with what queued meanwhile; >0: more throughput under steady load, that "
        "much more latency when quiet.",
        json_schema_extra=_in("Batching and admission", advanced=True),
    )
    intra_op_threads: PositiveInt = Field(
        default_factory=available_cpus,
        description="ONNX Runtime / OpenVINO threads for a batch that runs alone (batches side "
        "by side share them). Unset: " + CPUS + ".",
        json_schema_extra=_in("Batching and admission", advanced=True, default="CPUs available"),
    )
    inference_streams: PositiveInt | None = Field(
        default=None,
        description="Batches in flight at once under load, each on its own inference thread "
        "(OpenVINO: its streams); a batch that runs alone gets every thread. Unset: measured at "
        "start, 2 where inference costs at least twice the decoding per image, else 1 "
        "(docs/decisions/inference-streams.md).",
        json_schema_extra=_in("Batching and admission", advanced=True, default="measured"),
    )
    inference_stall_s: PositiveFloat = Field(
        default=30.0,
        description="A batch running longer than this means a hung runtime: /livez and /readyz "
        "answer 503 'failed: inference stalled' so the orchestrator restarts the pod.",
        json_schema_extra=_in("Batching and admission", advanced=True),
    )
    worker_nice: int = Field(
        default=19,
        ge=0,
        le=19,
        description="Nice levels added to decode workers and inference threads, so the event "
        "loop reads, answers and refuses at once however busy they are "
        "(docs/decisions/worker-niceness.md). 0: equal priority.",
        json_schema_extra=_in("Batching and admission", advanced=True),
    )
    early_refusal: bool = Field(
        default=True,
        description="Refuse overload at the door: in the HTTP protocol when a request's head "
        "is parsed (httptools) and in an ASGI middleware, before routing or any upload is read. "
        "The same decision the classifier makes at admission, only sooner and cheaper (503 p99 "
        "under overload); off: every request is routed, reads its body, and is refused there "
        "(docs/decisions/protocol-door.md).",
        json_schema_extra=_in("Batching and admission", advanced=True),
    )

    # -- Input limits ------------------------------------------------------------------------
    max_upload_bytes: PositiveInt = Field(
        default=20 * 1024 * 1024,
        description="Bytes of one image; over it 413, refused from Content-Length or at the "
        "first chunk over, before the rest is read.",
        json_schema_extra=_in("Input limits"),
    )
    max_image_pixels: PositiveInt = Field(
        default=40_000_000,
        description="Pixels (width x height) of one image, checked from its header before "
        "decoding (413): the decompression-bomb guard.",
        json_schema_extra=_in("Input limits"),
    )
    max_batch_images: PositiveInt = Field(
        default=32,
        description="Images in one batch request (/v1/classify/batch, a /v2 or gRPC input); "
        "over it 422. Half the queue, so one request cannot take every admission slot.",
        json_schema_extra=_in("Input limits"),
    )
    max_request_bytes: PositiveInt = Field(
        default=64 * 1024 * 1024,
        description="Bytes of a whole batch request body (and a gRPC message).",
        json_schema_extra=_in("Input limits"),
    )
    body_budget_bytes: PositiveInt = Field(
        default=128 * 1024 * 1024,
        description="Request-body bytes (and gRPC messages) held in memory at once across all "
        "requests, counted from Content-Length before any is read; a body that does not fit "
        "gets 503 overloaded with Retry-After. Must hold the largest body a route takes "
        "(docs/decisions/body-budget.md).",
        json_schema_extra=_in("Input limits"),
    )
    body_idle_timeout_s: PositiveFloat = Field(
        default=10.0,
        description="A request body must keep arriving: no byte for this long, or on average "
        "fewer than IMGCLS_BODY_MIN_RATE_BYTES_PER_S once this long has passed, and the "
        "request gets 408 and its connection closes (the bytes it held are given back).",
        json_schema_extra=_in("Input limits"),
    )
    body_min_rate_bytes_per_s: PositiveInt = Field(
        default=4096,
        description="The slowest average upload rate accepted after the first "
        "IMGCLS_BODY_IDLE_TIMEOUT_S of a body (each byte received extends its deadline by "
        "1/rate s). The default lets a 3 MB photo take up to ~12 minutes; a phone on 3G "
        "sends 50-100 KB/s.",
        json_schema_extra=_in("Input limits"),
    )
    body_contended_finish_s: PositiveFloat = Field(
        default=60.0,
        description="When a body does not fit in IMGCLS_BODY_BUDGET_BYTES, uploads still "
        "arriving that would take longer than this to finish (at their average rate so far, "
        "judged after 2 s) are evicted, slowest first and only as many as make room: 408, "
        "connection closed, their bytes given to the newcomer. The default spares a 3 MB photo "
        "from a phone at 50 KB/s (docs/decisions/body-budget.md).",
        json_schema_extra=_in("Input limits"),
    )
    decode_workers: PositiveInt = Field(
        default_factory=available_cpus,
        description="Threads decoding and resizing images beside inference. Unset: " + CPUS + ".",
        json_schema_extra=_in("Input limits", advanced=True, default="CPUs available"),
    )
    decode_budget_pixels: PositiveInt = Field(
        default=40_000_000,
        description="Full-size pixels decoded at once across the decode workers, each counted "
        "at what its format costs to decode against an RGBA PNG's 8 bytes (a JPEG pixel 0.5, "
        "counted after any DCT draft, HEIC 1.3, AVIF 1.4-1.5, WebP 2.3); an image that does "
        "not fit waits its turn, one that alone exceeds the budget is refused (413). Bounds decode "
        "memory to 8 bytes per budget pixel: 320 MB by default.",
        json_schema_extra=_in("Input limits", advanced=True),
    )
    image_block_cache_bytes: NonNegativeInt = Field(
        default=0,
        description="Freed decode memory Pillow keeps for the next image, in 2 MiB blocks (0: "
        "none). A 12 MP photo's pixels (~49 MB) are otherwise mapped and zero-filled afresh "
        "each time: 64 MiB kept costs 10-18 % less server CPU per 12 MP JPEG, but up to 15 % "
        "more per small image while only small ones were decoded, hence off by default "
        "(docs/decisions/image-block-cache.md). Stays resident between images. "
        "PILLOW_BLOCK_SIZE or PILLOW_BLOCKS_MAX, when set, win.",
        json_schema_extra=_in("Input limits", advanced=True),
    )
    jpeg_draft_margin: float = Field(
        default=0.0,
        ge=0.0,
        description="A large JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) "
        "while both sides stay at least this many times the model's resize size; 0 decodes "
        "every pixel. The default, 0, was chosen by measurement (docs/decisions/jpeg-draft.md: "
        "no margin keeps 99.5 % top-1 agreement with a full decode at 12 MP) and is what the "
        "build evaluates at phone size; 2 costs ~4x less decode CPU per 12 MP photo and changes "
        "~1 % of answers (as much as +-1 level of noise does).",
        json_schema_extra=_in("Input limits", advanced=True),
    )

    # -- HTTP server -------------------------------------------------------------------------
    host: str = Field(
        default="127.0.0.1",
        description="Address to listen on; 0.0.0.0 in a container.",
        json_schema_extra=_in("HTTP server"),
    )
    port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        description="HTTP port.",
        json_schema_extra=_in("HTTP server"),
    )
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve the Open Inference Protocol over gRPC on this port (8001 is "
        "Triton's). Unset: off, so no second listener opens unasked.",
        json_schema_extra=_in("HTTP server", default="off"),
    )
    http_keep_alive_s: PositiveFloat = Field(
        default=5.0,
        description="Idle keep-alive connections close after this many seconds; behind a load "
        "balancer, set it above the balancer's idle timeout.",
        json_schema_extra=_in("HTTP server"),
    )
    drain_timeout_s: float = Field(
        default=20.0,
        ge=0.0,
        description="How long SIGTERM waits for admitted requests; keep it below the "
        "orchestrator's grace period (the Kubernetes manifest here: 40 s).",
        json_schema_extra=_in("HTTP server"),
    )
    http_head_timeout_s: PositiveFloat = Field(
        default=10.0,
        description="A connection must deliver a complete request head this long after it "
        "opens (or after a kept-alive request's first byte): else it is closed, with 408 if "
        "part of a head had arrived.",
        json_schema_extra=_in("HTTP server"),
    )
    http_max_head_bytes: PositiveInt = Field(
        default=32 * 1024,
        description="Bytes of a request line and headers together; over it 431 and the "
        "connection closes.",
        json_schema_extra=_in("HTTP server", advanced=True),
    )
    http_max_headers: PositiveInt = Field(
        default=100,
        description="Header fields in one request; over it 431 and the connection closes.",
        json_schema_extra=_in("HTTP server", advanced=True),
    )
    http_max_url_bytes: PositiveInt = Field(
        default=8 * 1024,
        description="Bytes of a request target (path and query); over it 414 and the "
        "connection closes.",
        json_schema_extra=_in("HTTP server", advanced=True),
    )
    http_limit_concurrency: PositiveInt | None = Field(
        default=1024,
        description="Open connections (or running requests) beyond which a request gets 503 "
        "overloaded and its connection closes; health probes are still answered. A last line "
        "of defence; admission is really IMGCLS_QUEUE_CAPACITY.",
        json_schema_extra=_in("HTTP server", advanced=True),
    )
    http_backlog: PositiveInt = Field(
        default=2048,
        description="listen() backlog: connections waiting for accept(); capped by "
        "net.core.somaxconn.",
        json_schema_extra=_in("HTTP server", advanced=True),
    )

    # -- Security ----------------------------------------------------------------------------
    api_tokens: SecretStr | None = Field(
        default=None,
        description="Comma-separated bearer tokens accepted on /v1, /v2 and gRPC; never logged. "
        "Unset (and no file): no authentication.",
        json_schema_extra=_in("Security", default="unset (no auth)"),
    )
    api_tokens_file: Path | None = Field(
        default=None,
        description="A file of bearer tokens, one per line, re-read when it changes: rotation "
        "without a restart. A file that cannot be read keeps the tokens read last.",
        json_schema_extra=_in("Security"),
    )
    auth_probes: bool = Field(
        default=False,
        description="Also require a token on /livez, /readyz and /v2/health/* (kubelets send "
        "none: only behind a proxy that adds it).",
        json_schema_extra=_in("Security"),
    )
    auth_metrics: bool = Field(
        default=False,
        description="Also require a token on /metrics (give Prometheus authorization: "
        "credentials:).",
        json_schema_extra=_in("Security"),
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated browser origins allowed to call the API. Empty: CORS off.",
        json_schema_extra=_in("Security", default="unset (CORS off)"),
    )

    # -- Logs --------------------------------------------------------------------------------
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="json: one object per line, each with its request id; text for humans.",
        json_schema_extra=_in("Logs"),
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="warning drops the per-request access lines.",
        json_schema_extra=_in("Logs"),
    )

    # -- Appended (issue 22): /v2 JSON bodies and gRPC message reads ---------------------------
    max_json_request_bytes: PositiveInt = Field(
        default=24 * 1024 * 1024,
        description="Bytes of a /v2 inference body sent as JSON, or of the JSON header before "
        "binary tensor data; over it 413. Numbers in JSON cost ~5 bytes each to send and far "
        "more to parse: the default fits a full batch of 224x224 UINT8 pixels as tritonclient "
        "writes them (~22 MB). Larger tensors: the binary tensor extension, up to "
        "IMGCLS_MAX_REQUEST_BYTES (which also caps this one).",
        json_schema_extra=_in("Input limits"),
    )
    grpc_receive_timeout_s: PositiveFloat = Field(
        default=10.0,
        description="gRPC request messages are received and decoded a few at a time "
        "(IMGCLS_BODY_BUDGET_BYTES / (3 x IMGCLS_MAX_REQUEST_BYTES), at least one; the others "
        "wait their turn holding 64 KiB at most): seconds a call may wait for its turn (then "
        "RESOURCE_EXHAUSTED) and seconds its message may then take to arrive (then "
        "DEADLINE_EXCEEDED). docs/decisions/grpc-message-reads.md.",
        json_schema_extra=_in("HTTP server", advanced=True),
    )

    # -- Response cache ----------------------------------------------------------------------
    cache_bytes: int = Field(
        default=0,
        ge=0,
        description="Bytes of scores the response cache may hold, least recently used evicted "
        "first; 0: off. One image's entry is ~4.5 KB for 1000 classes (64 MiB: ~15 000 "
        "images). Keyed on the SHA-256 of the image bytes with the model file's digest, its "
        "provider and preprocessing; identical requests in flight are computed once. REST "
        "answers then carry Cache-Status (docs/guide/response-cache.md).",
        json_schema_extra=_in("Response cache", default="`0` (off)"),
    )
    cache_ttl_s: PositiveFloat | None = Field(
        default=None,
        description="Seconds an entry may answer after it was stored. Unset: until evicted or "
        "the model changes (scores are deterministic: a TTL only bounds how long an image's "
        "scores are kept).",
        json_schema_extra=_in("Response cache"),
    )

    # -- Monitoring --------------------------------------------------------------------------
    low_confidence: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="Top-1 probability below which an answer counts as low-confidence "
        "(imgcls_prediction_low_confidence_total); the confidence histogram and the drift "
        "alerts do not depend on it.",
        json_schema_extra=_in("Monitoring"),
    )

    @property
    def max_single_body_bytes(self) -> int:
        """The largest body that can carry one image of max_upload_bytes: base64 grows it by
        4/3."""
        return math.ceil(self.max_upload_bytes / 3) * 4 + _ENVELOPE_BYTES

    @model_validator(mode="after")
    def _largest_body_fits_the_budget(self) -> Self:
        largest = max(self.max_request_bytes, self.max_single_body_bytes)
        if self.body_budget_bytes < largest:
            raise ValueError(
                f"body_budget_bytes ({self.body_budget_bytes}) must hold the largest body a "
                f"route accepts ({largest} bytes: max_request_bytes, or max_upload_bytes "
                "base64-encoded), or that body could never be admitted"
            )
        return self

    @property
    def max_json_body_bytes(self) -> int:
        """The cap of a /v2 JSON body: max_json_request_bytes, never above max_request_bytes."""
        return min(self.max_json_request_bytes, self.max_request_bytes)

    @property
    def grpc_receiving_at_once(self) -> int:
        """gRPC messages received and decoded at once: what the body budget holds of the
        largest, counted three times (grpcio's buffer, its bytes, the decoded copy)."""
        return max(1, self.body_budget_bytes // (3 * self.max_request_bytes))
