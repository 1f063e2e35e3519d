"""ONNX Runtime sessions for the build's own measurements: the server's own factory
(service.model.runner.create_session), so what the build measures and writes into the manifest is
measured with the server's thread budget and session options."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.model import runner
from service.model.providers import PROVIDER_NAMES
from service.process import available_cpus

Provider = Literal["cpu", "openvino"]


def available_providers() -> tuple[Provider, ...]:
    names = set(runner.available_providers())
    return tuple(p for p in ("cpu", "openvino") if PROVIDER_NAMES[p] in names)


def session(path: Path, provider: Provider = "cpu", threads: int | None = None) -> Any:
    return runner.create_session(path, PROVIDER_NAMES[provider], threads or available_cpus())


def reference_session(path: Path, threads: int | None = None) -> Any:
    """The CPU provider with graph optimisation off: QDQ nodes run as written (dequantize,
    float kernel, quantize), so no int8 kernel can saturate. What a CPU with VNNI/AMX computes,
    on any CPU (service/model/int8_weights.py), at about fp32's speed."""
    options = runner.session_options(threads or available_cpus())
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=[PROVIDER_NAMES["cpu"]])


def run(sess: Any, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = sess.run(["logits"], {"image": pixels})[0]
    return out
