"""A tiny ONNX model that honours the model contract (uint8
NHWC [N,224,224,3] -> logits [N,1000]) and whose answer is known in advance, written into a
model_artifacts-like directory with a real manifest.

The tiny model is a nearest-colour classifier: class c has a prototype colour P[c] on a
10x10x10 RGB grid, and the logits are -k * ||mean_rgb(image)/255 - P[c]||^2 up to a per-image
constant, which is linear in the mean colour and so fits in Cast/ReduceMean/MatMul/Add. A
uniform image of colour P[c] is therefore classified as c, exactly, through the real session.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from service.model.manifest import (
    Accuracy,
    EvaluationInfo,
    ExportInfo,
    InputSpec,
    Manifest,
    ModelInfo,
    OutputSpec,
    QuantizationInfo,
    file_entry,
    write_manifest,
)

NUM_CLASSES = 1000
SHARPNESS = 400.0  # makes the softmax of the right class clearly dominant


def prototypes() -> npt.NDArray[np.float32]:
    """[1000, 3] colours on 0..1: class c = (r, g, b) digits of c in base 10."""
    c = np.arange(NUM_CLASSES)
    digits = np.stack([c // 100, (c // 10) % 10, c % 10], axis=1)
    return ((digits + 0.5) / 10.0).astype(np.float32)


def class_colour(class_index: int) -> tuple[int, int, int]:
    """The uint8 colour the tiny model classifies as ``class_index``."""
    r, g, b = (np.round(prototypes()[class_index] * 255)).astype(int)
    return int(r), int(g), int(b)


def tiny_model(path: Path, permute: bool = False) -> None:
    """Write the nearest-colour model. ``permute`` shuffles the classes: a model that disagrees
    with the plain one on every image (for the provider-agreement check)."""
    p = prototypes()
    if permute:
        p = p[np.random.default_rng(1).permutation(NUM_CLASSES)]
    weights = (2.0 * SHARPNESS * p.T).astype(np.float32)  # [3, 1000]
    bias = (-SHARPNESS * (p**2).sum(axis=1)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels", "axes"], ["mean"], keepdims=0),
        helper.make_node("Div", ["mean", "scale"], ["colour"]),
        helper.make_node("MatMul", ["colour", "weights"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["logits"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
        numpy_helper.from_array(np.array(255.0, np.float32), "scale"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_nearest_colour",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", 224, 224, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # what every onnxruntime >= 1.16 reads
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_tiny_artifacts(model_dir: Path, name: str = "tiny", untrained: bool = False) -> Path:
    """A complete model directory (both precisions, labels, manifest) around the tiny model."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for file in ("fp32", "int8", "int8-w7"):  # the same model: every CPU gets the same answers
        tiny_model(model_dir / f"model.{file}.onnx")
    (model_dir / "labels.txt").write_text(
        "\n".join(f"colour-{i:03d}" for i in range(NUM_CLASSES)) + "\n"
    )
    write_manifest(model_dir, _manifest(model_dir, name, untrained))
    return model_dir


def _manifest(model_dir: Path, name: str, untrained: bool) -> Manifest:
    accuracy = Accuracy(top1=100.0, top5=100.0)
    return Manifest(
        model=ModelInfo(
            name=name,
            version="test-1",
            architecture="nearest colour",
            weights_source="test",
            weights_sha256=None,
            untrained=untrained,
        ),
        input=InputSpec(
            name="image",
            shape=("batch", 224, 224, 3),
            dtype="uint8",
            layout="NHWC",
            resize_size=256,
            crop_size=224,
            interpolation="bilinear",
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
        ),
        output=OutputSpec(name="logits", num_classes=NUM_CLASSES, kind="logits"),
        files={
            "fp32": file_entry(model_dir, model_dir / "model.fp32.onnx"),
            "int8": file_entry(model_dir, model_dir / "model.int8.onnx"),
            "int8_w7": file_entry(model_dir, model_dir / "model.int8-w7.onnx"),
        },
        export=ExportInfo(
            exporter="onnx.helper",
            opset=18,
            dynamic_batch=True,
            max_abs_logit_diff=0.0,
            diff_images=0,
        ),
        quantization=QuantizationInfo(
            format="QDQ",
            per_channel=True,
            activation_type="QUInt8",
            weight_type="QInt8",
            calibration_method="none (test model)",
            calibration_images=0,
            calibration_sha256="0" * 64,
            calibration_source="none",
        ),
        evaluation=EvaluationInfo(
            dataset="colours",
            images=0,
            small=True,
            fp32=accuracy,
            int8=accuracy,
            top1_agreement=100.0,
            max_top1_drop_points=1.0,
            passed=True,
        ),
        versions={"onnx": onnx.__version__},
        built_at="2026-01-01T00:00:00Z",
    )


def colour_png(class_index: int, size: tuple[int, int] = (300, 240)) -> bytes:
    """A uniform PNG the tiny model classifies as ``class_index``."""
    buffer = io.BytesIO()
    Image.new("RGB", size, class_colour(class_index)).save(buffer, format="PNG")
    return buffer.getvalue()


def colour_batch(class_indices: list[int]) -> npt.NDArray[np.uint8]:
    """[N, 224, 224, 3] uniform images of the given classes' colours."""
    return np.stack(
        [np.full((224, 224, 3), class_colour(c), dtype=np.uint8) for c in class_indices]
    )
