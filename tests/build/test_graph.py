"""The exported wrapper: uint8 NHWC in, normalisation folded in, same maths as torchvision's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from build.config import IMAGENET_MEAN, IMAGENET_STD
from build.export import compare_with_torch, export_onnx
from build.graph import UInt8Classifier


class Flatten(nn.Module):
    """A 'network' that returns its input, so the test sees the normalised pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_normalisation_matches_the_textbook_formula():
    pixels = torch.randint(0, 256, (2, 4, 5, 3), dtype=torch.uint8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = ((pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std).flatten(1)

    got = UInt8Classifier(Flatten(), IMAGENET_MEAN, IMAGENET_STD)(pixels)

    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_export_has_uint8_nhwc_input_and_dynamic_batch(tmp_path: Path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))
    model = UInt8Classifier(net, IMAGENET_MEAN, IMAGENET_STD).eval()
    path = tmp_path / "m.onnx"

    export_onnx(model, path, crop_size=16)

    graph = onnx.load(str(path)).graph
    (image,) = graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert image.name == "image"
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims == ["batch", 16, 16, 3]
    assert [o.name for o in graph.output] == ["logits"]
    pixels = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    check = compare_with_torch(model, path, pixels, batch_size=3)  # batches of 3 and 2
    assert check.images == 5
    assert check.max_abs_logit_diff < 1e-4
