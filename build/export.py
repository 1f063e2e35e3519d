"""Stage 1: torch model -> ONNX fp32 with a dynamic batch axis, checked by onnx.checker, and its
logits compared with torch's on real images."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import torch
from torch import nn

from build.sessions import run, session

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def exporter_name() -> str:
    # The TorchScript-based exporter: the dynamo one needs onnxscript and gains nothing for CNNs.
    return f"torch.onnx.export(dynamo=False) torch {torch.__version__}"


@dataclass(frozen=True, slots=True)
class ExportCheck:
    max_abs_logit_diff: float
    images: int


def export_onnx(model: nn.Module, path: Path, crop_size: int) -> None:
    dummy = torch.zeros((1, crop_size, crop_size, 3), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (see exporter_name); its notice is noise.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(),
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)


def compare_with_torch(
    model: nn.Module, path: Path, pixels: npt.NDArray[np.uint8], batch_size: int = 8
) -> ExportCheck:
    """max |torch - ORT| over the logits of real images, in batches (also proves the dynamic
    batch axis works at a size other than the exported one)."""
    sess = session(path, "cpu")
    worst = 0.0
    for start in range(0, len(pixels), batch_size):
        chunk = pixels[start : start + batch_size]
        with torch.no_grad():
            expected = model(torch.from_numpy(chunk)).numpy()
        worst = max(worst, float(np.max(np.abs(expected - run(sess, chunk)))))
    return ExportCheck(max_abs_logit_diff=worst, images=len(pixels))


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Write a graph made here (an ONNX source wrapped), checked as export_onnx checks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
