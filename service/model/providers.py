"""Execution-provider names in one place, without importing onnxruntime (the HTTP layer uses
them too): ORT's names, and the short names of settings, the build and the manifest."""

from __future__ import annotations

CPU = "CPUExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
PROVIDER_NAMES: dict[str, str] = {"cpu": CPU, "openvino": OPENVINO}
SHORT_NAMES: dict[str, str] = {name: short for short, name in PROVIDER_NAMES.items()}
