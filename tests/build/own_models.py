"""Users' models for the tests, made here: synthetic class folders, a head trained on a
network's features, checkpoints and ONNX exports, and the model.toml that names them.

Synthetic images: five classes that differ in colour and shape, drawn with noise, saved as
real PNG/JPEG files (so the build decodes them as a user's), small (64 px) so builds are quick.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw
from torch import nn

from build.config import IMAGENET_MEAN, IMAGENET_STD
from build.graph import UInt8Classifier
from service.inference.preprocess import PreprocessSpec, preprocess

SHAPES = ("red_disc", "green_square", "blue_triangle", "yellow_stripes", "purple_cross")
_COLOURS = {
    "red_disc": (210, 40, 40),
    "green_square": (40, 180, 60),
    "blue_triangle": (40, 70, 210),
    "yellow_stripes": (230, 210, 40),
    "purple_cross": (150, 50, 170),
}
SIZE = 64  # pixels: resize 64, crop 56 in the tests' configs


def _jitter(rng: random.Random, colour: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = (max(0, min(255, c + rng.randint(-35, 35))) for c in colour)
    return (r, g, b)


def draw(label: str, rng: random.Random, size: int = SIZE) -> Image.Image:
    """One image of class ``label``: a noisy background and the class's shape and colour."""
    noise = np.random.default_rng(rng.randint(0, 2**31)).integers(90, 170, (size, size, 3))
    image = Image.fromarray(noise.astype(np.uint8))
    pen = ImageDraw.Draw(image)
    colour = _jitter(rng, _COLOURS[label])
    lo, hi = rng.randint(4, 14), rng.randint(size - 14, size - 4)
    if label == "red_disc":
        pen.ellipse((lo, lo, hi, hi), fill=colour)
    elif label == "green_square":
        pen.rectangle((lo, lo, hi, hi), fill=colour)
    elif label == "blue_triangle":
        pen.polygon([(size // 2, lo), (lo, hi), (hi, hi)], fill=colour)
    elif label == "yellow_stripes":
        for y in range(lo % 8, size, 8):
            pen.rectangle((0, y, size, y + 3), fill=colour)
    else:
        w = rng.randint(5, 9)
        pen.rectangle((size // 2 - w, lo, size // 2 + w, hi), fill=colour)
        pen.rectangle((lo, size // 2 - w, hi, size // 2 + w), fill=colour)
    return image


def class_folders(root: Path, per_class: int, seed: int, labels: Sequence[str] = SHAPES) -> Path:
    """root/<label>/<n>.png|jpg: ``per_class`` images per class, alternately PNG and JPEG."""
    rng = random.Random(seed)
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            suffix = "png" if n % 2 else "jpg"
            draw(label, rng).save(root / label / f"{n:03d}.{suffix}")
    return root


def labels_file(path: Path, labels: Sequence[str]) -> Path:
    path.write_text("\n".join(labels) + "\n")
    return path


def pixels_of(paths: Sequence[Path], spec: PreprocessSpec) -> npt.NDArray[np.uint8]:
    """The pixels the service (and the build) would compute for these files."""
    return np.stack([preprocess(p.read_bytes(), spec) for p in paths])


def train_head(
    features: torch.Tensor,
    targets: torch.Tensor,
    classes: int,
    steps: int = 300,
    per_feature: bool = False,
) -> nn.Linear:
    """A linear classifier on fixed features (logistic regression, Adam), with the features'
    standardisation folded into its weights so it runs on the raw features.

    ``per_feature``: each feature scaled by its own spread. Folded back, a nearly constant
    feature gets a huge weight, and int8's rounding of it then flips answers: a head int8
    breaks (the recipe search's test case). Otherwise one scale for all: a well-conditioned
    head, as training the layer in place gives."""
    mean = features.mean(0)
    std = features.std(0) + 1e-6 if per_feature else features.std() + 1e-6
    x = (features - mean) / std
    torch.manual_seed(0)
    head = nn.Linear(features.shape[1], classes)
    optim = torch.optim.Adam(head.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(steps):
        optim.zero_grad()
        nn.functional.cross_entropy(head(x), targets).backward()
        optim.step()
    folded = nn.Linear(features.shape[1], classes)
    with torch.no_grad():
        folded.weight.copy_(head.weight / std)
        folded.bias.copy_(head.bias - (head.weight * (mean / std)).sum(1))
    return folded


def features(
    net: nn.Module,
    pixels: npt.NDArray[np.uint8],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    batch: int = 32,
) -> torch.Tensor:
    """The network's outputs for uint8 pixels, through the build's own front."""
    front = UInt8Classifier(net, mean, std).eval()
    with torch.no_grad():
        return torch.cat(
            [front(torch.from_numpy(pixels[i : i + batch])) for i in range(0, len(pixels), batch)]
        )


def fit_torchvision_head(
    arch: Callable[..., nn.Module],
    head_name: str,
    train: Path,
    labels: Sequence[str],
    spec: PreprocessSpec,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    per_feature: bool = False,
) -> nn.Module:
    """``arch(num_classes=N)`` (random backbone, seed 0) with a head trained on the backbone's
    features of the images under ``train``/<label>/ (``per_feature``: see train_head)."""
    torch.manual_seed(0)
    net = arch(num_classes=len(labels)).eval()
    paths, targets = [], []
    for index, label in enumerate(labels):
        for path in sorted((train / label).iterdir()):
            paths.append(path)
            targets.append(index)
    setattr(net, head_name, nn.Identity())
    feats = features(net, pixels_of(paths, spec), mean, std)
    head = train_head(feats, torch.tensor(targets), len(labels), per_feature=per_feature)
    setattr(net, head_name, head)
    return net


def fine_tune(
    net: nn.Module,
    train: Path,
    labels: Sequence[str],
    spec: PreprocessSpec,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    epochs: int = 4,
) -> nn.Module:
    """Every layer trained (BatchNorm statistics too) on the images under ``train``/<label>/,
    as a user fine-tunes: a few epochs of Adam, seeded."""
    paths, targets = [], []
    for index, label in enumerate(labels):
        for path in sorted((train / label).iterdir()):
            paths.append(path)
            targets.append(index)
    front = UInt8Classifier(net, mean, std)
    x, y = torch.from_numpy(pixels_of(paths, spec)), torch.tensor(targets)
    torch.manual_seed(0)
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    front.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 16):
            batch = order[start : start + 16]
            optim.zero_grad()
            nn.functional.cross_entropy(front(x[batch]), y[batch]).backward()
            optim.step()
    return net.eval()


def export_float_onnx(net: nn.Module, path: Path, crop: int, opset: int) -> Path:
    """The bare network as a user exports it: float NCHW in, logits out, dynamic batch."""
    dummy = torch.zeros(1, 3, crop, crop)
    torch.onnx.export(
        net.eval(),
        (dummy,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
    return path


def write_config(path: Path, body: str) -> Path:
    path.write_text(body.strip() + "\n")
    return path


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def colour_classifier(path: Path, train: Path) -> Path:
    """logits_k = -|x - c_k|^2 (up to a constant) on the image's mean normalised colour x, with
    c_k the mean colour of class k's training images: a real, if tiny, classifier."""
    spec = PreprocessSpec(64, 56)
    centres = []
    for label in SHAPES:
        pixels = pixels_of(sorted((train / label).iterdir()), spec).astype(np.float32) / 255.0
        mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
        centres.append((pixels.mean(axis=(0, 1, 2)) - mean) / std)
    c = np.array(centres, np.float32)
    weight = numpy_helper.from_array(2.0 * c, "w")
    bias = numpy_helper.from_array(-(c**2).sum(1), "b")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["colour"]),
            helper.make_node("Gemm", ["colour", "w", "b"], ["logits"], transB=1),
        ],
        "colours",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 56, 56])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(SHAPES)])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
