"""A torch source: the architecture a config names, sized by its checkpoint, with the
checkpoint loaded. The head size comes from the checkpoint's output layer, never from a flag,
and a checkpoint that does not fit is refused naming the first mismatched key and shapes."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from build.errors import ConfigError, WeightsError

Kind = Literal["torchvision", "efficientnet_lite"]
StateDict = dict[str, torch.Tensor]
# Where training scripts commonly nest the weights inside a saved dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
# BatchNorm adds it itself when a checkpoint lacks it (old torch, some exporters).
_OPTIONAL_SUFFIX = ".num_batches_tracked"


@dataclass(frozen=True, slots=True)
class Architecture:
    kind: Kind
    name: str  # "resnet18", "efficientnet-lite0"

    def describe(self) -> str:
        if self.kind == "torchvision":
            return f"torchvision.models.{self.name}"
        return f"efficientnet_lite_pytorch.EfficientNet({self.name})"

    def make(self, num_classes: int | None = None) -> nn.Module:
        """The architecture, randomly initialised, with ``num_classes`` outputs (None: its
        default)."""
        extra = {} if num_classes is None else {"num_classes": num_classes}
        if self.kind == "torchvision":
            return _torchvision(self.name, extra)
        from efficientnet_lite_pytorch import EfficientNet

        try:
            net: nn.Module = EfficientNet.from_name(self.name, **extra)
        except (ValueError, AssertionError) as exc:
            raise ConfigError(
                f"[source] efficientnet_lite: unknown model {self.name!r}; choose one of "
                "efficientnet-lite0 .. efficientnet-lite4"
            ) from exc
        return net


def _torchvision(name: str, extra: dict[str, int]) -> nn.Module:
    import torchvision.models as models

    known = models.list_models(module=models)  # classification models only
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3) or known[:3]
        raise ConfigError(
            f"[source] torchvision: {name!r} is not a torchvision classification architecture "
            f"(did you mean {', '.join(close)}? all: torchvision.models.list_models())"
        )
    # Inception-style nets train an auxiliary head; a served classifier has none.
    if name in ("inception_v3", "googlenet"):
        net: nn.Module = models.get_model(
            name, weights=None, aux_logits=False, init_weights=False, **extra
        )
        return net
    plain: nn.Module = models.get_model(name, weights=None, **extra)
    return plain


def read_checkpoint(path: Path) -> StateDict:
    """A state dict from ``path``: plain, or nested under a training script's usual key, with
    DataParallel's "module." prefix dropped. Tensors only (torch.load weights_only=True)."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors of every kind mean "not a weights file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{path} is not a loadable PyTorch state dict ({first}); save "
            "model.state_dict() with torch.save, not the whole model"
        ) from exc
    state = _unnest(loaded, path)
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _unnest(loaded: object, path: Path) -> StateDict:
    if not isinstance(loaded, dict):
        raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    if loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return loaded
    for key in _NESTED_KEYS:
        inner = loaded.get(key)
        if isinstance(inner, dict) and inner:
            return _unnest(inner, path)
    raise WeightsError(
        f"{path} holds a dict that is not a state dict (keys: {', '.join(map(str, loaded))[:120]})"
    )


def output_layer(net: nn.Module) -> str:
    """The name of the classifier's last layer: the last Linear, else the last Conv2d
    (SqueezeNet's head is a 1x1 convolution)."""
    for kind in (nn.Linear, nn.Conv2d):
        names: list[str] = [
            name for name, module in net.named_modules() if isinstance(module, kind)
        ]
        if names:
            return names[-1]
    raise ConfigError("the architecture has no Linear or Conv2d output layer")


def head_size(arch: Architecture, state: StateDict, path: Path) -> int:
    """How many classes the checkpoint's output layer has."""
    key = f"{output_layer(arch.make())}.weight"
    if key not in state:
        raise WeightsError(
            f"{path} does not fit {arch.describe()}: it has no {key} (the output layer); "
            f"its first keys are {', '.join(list(state)[:3])}"
        )
    return int(state[key].shape[0])


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def check_fit(net: nn.Module, state: StateDict, path: Path, arch: Architecture) -> None:
    """Refuse a checkpoint that load_state_dict(strict=True) would refuse, naming the first
    mismatched key (in the architecture's order) and both shapes."""
    expected = net.state_dict()
    where = f"{path} does not fit {arch.describe()}"
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith(_OPTIONAL_SUFFIX):
                continue
            missing = sum(
                1 for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIX)
            )
            raise WeightsError(
                f"{where}: the checkpoint has no {key} (shape {_shape(tensor)}); "
                f"{missing} key(s) missing in all"
            )
        if state[key].shape != tensor.shape:
            raise WeightsError(
                f"{where}: {key} has shape {_shape(state[key])} in the checkpoint, "
                f"{_shape(tensor)} in the architecture"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise WeightsError(
            f"{where}: the checkpoint's {extra[0]} (shape {_shape(state[extra[0]])}) is not in "
            f"the architecture; {len(extra)} unexpected key(s) in all"
        )


def load(arch: Architecture, path: Path | None, classes_if_random: int) -> tuple[nn.Module, int]:
    """The network in eval mode and its class count. ``path`` None: random weights (speed
    work only), with ``classes_if_random`` outputs."""
    torch.manual_seed(0)  # "random" weights are the same on every build: comparable speed runs
    if path is None:
        return arch.make(classes_if_random).eval(), classes_if_random
    state = read_checkpoint(path)
    classes = head_size(arch, state, path)
    net = arch.make(classes)
    check_fit(net, state, path, arch)
    net.load_state_dict(state, strict=False)  # strictness checked above, with better words
    return net.eval(), classes
