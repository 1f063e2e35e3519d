"""The exported graph: uint8 NHWC pixels in, logits out. The normalisation is folded inside,
so the server feeds the preprocessed pixels as they are and does no float maths per request,
and a model can never be served with another model's mean/std."""

from __future__ import annotations

import torch
from torch import nn


class UInt8Classifier(nn.Module):
    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self, net: nn.Module, mean: tuple[float, float, float], std: tuple[float, float, float]
    ) -> None:
        super().__init__()
        self.net = net
        # (x/255 - mean)/std == (x - 255*mean) * (1/(255*std)): one Sub and one Mul in the graph.
        offset = torch.tensor([255.0 * m for m in mean]).view(1, 3, 1, 1)
        scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float()
        out: torch.Tensor = self.net((x - self.offset) * self.scale)
        return out
