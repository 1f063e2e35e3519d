"""The catalog: the models shipped as configs in build/models/ (resnet18, efficientnet_lite0),
reachable by name for `python -m build --model NAME` and for bench/. A thin view over the same
config files `--config` reads: one way to build a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from build import config, network
from build.config import ModelConfig
from build.torch_source import architecture
from build.weights import OfficialWeights, ResolvedWeights, official
from service.inference.preprocess import PreprocessSpec

MODEL_NAMES = config.shipped_names()


@dataclass(frozen=True, slots=True)
class CatalogModel:
    config: ModelConfig

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def arch(self) -> network.Architecture:
        return architecture(self.config.source)

    @property
    def official(self) -> OfficialWeights:
        assert self.config.source.weights is not None
        return official(self.config.source.weights, self.config.source.torchvision)

    @property
    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec(self.config.preprocess.resize, self.config.preprocess.crop)

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.config.preprocess.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.config.preprocess.std

    def make_net(self) -> nn.Module:
        """The architecture with the catalog's head (1000 ImageNet classes), untrained."""
        return self.arch.make(len(class_names()))

    def load(self, weights: ResolvedWeights) -> nn.Module:
        net, _ = network.load(self.arch, weights.path, len(class_names()))
        return net


def get(name: str) -> CatalogModel:
    return CatalogModel(config.load(config.shipped(name)))


def load_state(net: nn.Module, path: Path) -> None:
    """Load the state dict at ``path`` into ``net``, refusing one that does not fit."""
    state = network.read_checkpoint(path)
    network.check_fit(net, state, path, network.Architecture("torchvision", type(net).__name__))
    net.load_state_dict(state, strict=False)


def class_names() -> list[str]:
    """The ImageNet-1k names in index order (build/models/imagenet1k.txt, as torchvision ships
    them)."""
    return config.read_labels_file(config.SHIPPED_DIR / "imagenet1k.txt", "imagenet1k.txt")
