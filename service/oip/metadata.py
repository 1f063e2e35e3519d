"""Server and model metadata, and the one check of which model and version a request names;
the same values for REST and gRPC.

The model takes one input (the manifest's name, "image") in either of two datatypes: UINT8
[N, H, W, 3] pixels the caller already decoded, resized and cropped, or BYTES [N] encoded images
the server decodes as /v1 does. It has two outputs: the graph's logits, and their softmax
(/v1's scores), so that the classification extension can return either.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata as dist
from typing import Any

from service.model.loading import ModelMeta
from service.oip.errors import ModelNotFound
from service.oip.tensors import BYTES

SERVER_NAME = "imgcls"
EXTENSIONS = ("binary_tensor_data", "classification")
PLATFORM = "onnxruntime_onnx"
UINT8 = "UINT8"
FP32 = "FP32"
INPUT_DATATYPES = (UINT8, BYTES)
PROBABILITIES = "probabilities"


@dataclass(frozen=True, slots=True)
class TensorMeta:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    parameters: dict[str, Any]  # REST only: gRPC's ModelMetadataResponse has no such field


def server_version() -> str:
    try:
        return dist.version("imgcls")
    except dist.PackageNotFoundError:  # a checkout run without `pip install -e .`
        return "0+unknown"


def input_name(meta: ModelMeta) -> str:
    return meta.manifest.input.name


def logits_name(meta: ModelMeta) -> str:
    return meta.manifest.output.name


def check_model(meta: ModelMeta, name: str, version: str | None) -> None:
    """Raise ModelNotFound unless ``name`` (and ``version``, when given) is what serves."""
    if name != meta.name:
        raise ModelNotFound(f"unknown model {name!r}; this server serves {meta.name!r}")
    if version and version != meta.version:
        raise ModelNotFound(
            f"unknown version {version!r} of model {name!r}; the version served is {meta.version!r}"
        )


def model_metadata(meta: ModelMeta) -> ModelMetadata:
    classes = (-1, meta.num_classes)
    return ModelMetadata(
        name=meta.name,
        versions=(meta.version,),
        platform=PLATFORM,
        inputs=(TensorMeta(input_name(meta), UINT8, (-1, *meta.input_shape)),),
        outputs=(
            TensorMeta(logits_name(meta), FP32, classes),
            TensorMeta(PROBABILITIES, FP32, classes),
        ),
        parameters=_parameters(meta),
    )


def _parameters(meta: ModelMeta) -> dict[str, Any]:
    manifest = meta.manifest
    evaluation = manifest.evaluation
    return {
        "input_datatypes": list(INPUT_DATATYPES),  # BYTES: [N] encoded images
        "untrained": meta.untrained,
        "precision": meta.precision,
        "provider": meta.provider,
        "provider_reason": meta.provider_reason,
        "max_batch_size": meta.max_batch_size,
        "num_classes": meta.num_classes,  # the logits' second axis; labels in /v1 and here
        "labels_sha256": manifest.labels_sha256,
        "architecture": manifest.model.architecture,
        "preprocessing": {
            "resize_size": manifest.input.resize_size,
            "crop_size": manifest.input.crop_size,
            "interpolation": manifest.input.interpolation,
            "layout": manifest.input.layout,
            "mean": list(manifest.input.mean),
            "std": list(manifest.input.std),
        },
        "quantization": manifest.quantization.model_dump(mode="json"),
        "evaluation": None if evaluation is None else evaluation.model_dump(mode="json"),
    }
