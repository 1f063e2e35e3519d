"""ONNX Runtime sessions for the build's own measurements, set up like the server's: threads from
the CPUs this process may really use, and no spinning idle threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.cpus import available_cpus

Provider = Literal["cpu", "openvino"]
_PROVIDERS: dict[Provider, tuple[str, dict[str, str]]] = {
    "cpu": ("CPUExecutionProvider", {}),
    "openvino": ("OpenVINOExecutionProvider", {"device_type": "CPU"}),
}


def available_providers() -> tuple[Provider, ...]:
    names = set(ort.get_available_providers())
    return tuple(p for p, (name, _) in _PROVIDERS.items() if name in names)


def session(path: Path, provider: Provider = "cpu", threads: int | None = None) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # OpenVINO prints warnings for every dynamic shape
    name, provider_options = _PROVIDERS[provider]
    return ort.InferenceSession(str(path), options, providers=[(name, provider_options)])


def run(sess: Any, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = sess.run(["logits"], {"image": pixels})[0]
    return out
