"""Factories for the service's own types, built with every field a real load sets, for the tests
where a double is the point. Production types carry no defaults for these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.model.loading import ModelMeta
from service.model.manifest import Manifest


def model_meta(**overrides: Any) -> ModelMeta:
    fields: dict[str, Any] = {
        "name": "fake",
        "version": "0",
        "untrained": False,
        "precision": "int8",
        "provider": "CPUExecutionProvider",
        "provider_reason": "fake",
        "intra_op_threads": 1,
        "decode_workers": 1,
        "max_batch_size": 4,
        "num_classes": 1000,
        "input_shape": (224, 224, 3),
        "warmup_latency_s": {1: 0.001},
        # Unvalidated and nearly empty: no API answer a fake serves reads the manifest.
        "manifest": Manifest.model_construct(evaluation=None),
        "model_dir": Path("fake"),
        "provider_reason_code": "configured",
        "served_top1": None,
        "model_file": "int8",
        "inference_streams": 1,
        "inference_streams_reason": "fake",
    }
    return ModelMeta(**(fields | overrides))
