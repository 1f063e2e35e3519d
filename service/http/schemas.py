"""Wire models: the JSON bodies of the HTTP API (requests and responses), and nothing else.

Field names carry their unit (``*_ms``); scores are softmax probabilities in 0..1.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


# Requests (JSON variants; multipart and raw image bodies need no model)


class ClassifyJSON(_Wire):
    # bytes: the JSON string's own bytes, no str object in between; service/http/uploads.py
    # checks and decodes the base64 (SIMD, pybase64).
    image: bytes = Field(description="The encoded image (JPEG, PNG, HEIC, ...) in standard base64.")


class ClassifyBatchJSON(_Wire):
    images: list[bytes] = Field(description="Encoded images in base64, answered in this order.")


# Responses


class ErrorDetail(_Wire):
    code: str = Field(description="Stable machine-readable reason, e.g. bad_image, overloaded.")
    message: str


class ErrorBody(_Wire):
    error: ErrorDetail


class PredictionOut(_Wire):
    label: str
    class_index: int
    score: float = Field(description="Softmax probability, 0..1.")


class TimingOut(_Wire):
    decode_ms: float = Field(description="Decode + resize + crop of this image.")
    queue_ms: float = Field(description="Wait in the batch queue before its batch started.")
    inference_ms: float = Field(description="Model run time of the batch this image rode in.")
    batch_size: int = Field(description="Images in that batch.")


class ClassifyResponse(_Wire):
    model: str
    model_version: str = Field(
        description="The version that answered (docs/guide/model-versions.md): during a swap, "
        "the one serving when the request was admitted."
    )
    untrained: bool = Field(description="True: random weights, the answers are noise.")
    predictions: list[PredictionOut]
    timing: TimingOut


class BatchItem(_Wire):
    """One image's outcome: ``predictions`` and ``timing`` on success, ``error`` otherwise."""

    index: int
    status: int = Field(description="The HTTP status this image alone would have had.")
    predictions: list[PredictionOut] | None = None
    timing: TimingOut | None = None
    error: ErrorDetail | None = None


class ClassifyBatchResponse(_Wire):
    model: str
    model_version: str = Field(description="The version that answered every image of the batch.")
    untrained: bool
    results: list[BatchItem]


class ModelResponse(_Wire):
    name: str
    version: str
    untrained: bool
    precision: str
    model_file: str = Field(
        description="The manifest's file serving: int8 (8-bit weights, CPUs with VNNI/AMX or "
        "not x86), int8_w7 (7-bit weights, x86 without VNNI, where 8-bit ones saturate) or fp32."
    )
    provider: str
    provider_reason: str
    num_classes: int
    input_shape: tuple[int, int, int]
    max_batch_size: int
    intra_op_threads: int
    decode_workers: int
    inference_streams: int = Field(
        description="Batches run side by side under load (IMGCLS_INFERENCE_STREAMS, or chosen "
        "at start-up by measuring inference against decoding)."
    )
    inference_streams_reason: str
    warmup_latency_ms: dict[int, float]
    top1_int8: float | None = Field(
        description="Build-time top-1, percent, of the precision and execution provider "
        "serving; None if not evaluated."
    )


class ReadinessResponse(_Wire):
    ready: bool
    reason: str | None
    details: dict[str, object]


class LivenessResponse(_Wire):
    status: str  # ok | failed
    # When failed: "failed: the batcher stopped" | "failed: inference stalled".
    reason: str | None = None
