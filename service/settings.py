"""Every setting of the service, read from IMGCLS_* environment variables. One instance is built
in ``python -m service`` (or by a test) and passed down; nothing reads the environment at import.
Each name carries its unit; the README documents default and trade-off for each."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, PositiveFloat, PositiveInt, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service import paths
from service.cpus import available_cpus

# Room for multipart boundaries and part headers, or JSON punctuation, around the image bytes.
_ENVELOPE_BYTES = 64 * 1024

Provider = Literal["auto", "cpu", "openvino"]
Precision = Literal["int8", "fp32"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMGCLS_", frozen=True, extra="ignore")

    # Model
    model_dir: Path | None = None  # None: the best built model under artifacts_dir (README)
    artifacts_dir: Path = paths.DEFAULT_ARTIFACTS_DIR
    precision: Precision = "int8"
    provider: Provider = "auto"
    # Unset: the CPUs this process may use (affinity and cgroup quota), resolved once, here, so
    # every reader (session, decode pool, /v1/model, metrics) sees the same number.
    intra_op_threads: PositiveInt = Field(default_factory=available_cpus)
    # Batches in flight at once under load, each on its own inference thread and its share of
    # the threads above (OpenVINO: its streams); a batch that runs alone gets every thread.
    # Unset: chosen at start-up by measurement (service/layout.py): 2 where inference costs at
    # least twice the decoding per image (+17 % req/s on 2 AVX2 cores), else 1 (+4-8 % req/s
    # with AMX, where decoding costs as much). 1: one batch at a time on every thread.
    inference_streams: PositiveInt | None = None

    # Batching
    # 4, measured (bench/inprocess.py, README): as many img/s and CPU ms per image as 8 on 2
    # cores, half the batch latency, one OpenVINO shape fewer to compile at start.
    max_batch_size: PositiveInt = 4
    max_batch_wait_s: float = Field(default=0.0, ge=0.0)
    queue_capacity: PositiveInt = 64
    request_timeout_s: PositiveFloat = 10.0
    # A batch running longer than this means a hung runtime: readiness and liveness fail so the
    # orchestrator restarts the process (batches take milliseconds; warm-up is not counted).
    inference_stall_s: PositiveFloat = 30.0

    # Decode workers and inference threads run this much nicer than the event loop (service/
    # priority.py): the loop answers, and refuses, at once however busy the workers are.
    # 19, measured (bench/overload.py, two interleaved pairs of runs): at 4x capacity the 503
    # p99 fell from 22-26 to 10-13 ms and goodput rose from 71-80 to 79-96 % of capacity
    # against nice 5. In a container the workers compete only with the service's own loop.
    worker_nice: int = Field(default=19, ge=0, le=19)

    # Input
    decode_workers: PositiveInt = Field(default_factory=available_cpus)
    max_upload_bytes: PositiveInt = 20 * 1024 * 1024
    max_image_pixels: PositiveInt = 40_000_000
    # Full-size pixels decoded at once across the decode workers (service/budget.py): bounds
    # decode memory at about 8-9 bytes per budgeted pixel whatever arrives together.
    decode_budget_pixels: PositiveInt = 40_000_000
    # Half the queue: one batch request can never take every admission slot by itself.
    max_batch_images: PositiveInt = 32  # images in one /v1/classify/batch request
    max_request_bytes: PositiveInt = 64 * 1024 * 1024  # a whole batch request body
    # Request-body bytes held in memory at once across requests (service/bodies.py); a body
    # that does not fit gets 503 overloaded. At least one largest body must fit.
    body_budget_bytes: PositiveInt = 128 * 1024 * 1024

    # HTTP server (uvicorn, one worker)
    http_limit_concurrency: PositiveInt | None = 1024  # open connections+tasks, then plain 503
    http_backlog: PositiveInt = 2048  # listen() backlog: connections waiting for accept()
    http_keep_alive_s: PositiveFloat = 5.0  # idle keep-alive connections are closed after this

    # Security (README: Security). No tokens: no authentication.
    api_tokens: SecretStr | None = None  # comma-separated bearer tokens; never logged
    api_tokens_file: Path | None = None  # one token per line, re-read when it changes
    auth_probes: bool = False  # require the token on /livez, /readyz, /v2/health/*
    auth_metrics: bool = False  # require the token on /metrics
    cors_origins: str = ""  # comma-separated origins allowed to call the API from a browser

    # Process
    drain_timeout_s: float = Field(default=20.0, ge=0.0)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Open Inference Protocol v2 over gRPC on this port. Unset: off, so no second listener opens
    # unasked (two servers on one host would clash on a fixed default); 8001 is Triton's.
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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
