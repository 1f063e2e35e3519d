"""Stage 2: ONNX fp32 -> static int8 QDQ (per-channel int8 weights, uint8 activations).

Calibration and quantization are split (quantize_static does both in one call) so the ranges
measured once can be reused: the sensitivity study quantizes dozens of variants of one model.
The calibration pixels come from build.data, i.e. from the server's own preprocessing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantType,
    quant_pre_process,
)
from onnxruntime.quantization.calibrate import TensorsData, create_calibrator
from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
from onnxruntime.quantization.quant_utils import load_model_with_shape_infer
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from build import progress
from build.export import INPUT_NAME
from build.recipe import QuantRecipe
from service.model.int8_weights import WeightBits

CALIBRATION_BATCH = 10
_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
ACTIVATION_TYPE = QuantType.QUInt8  # U8S8: the kernels ORT fuses here (DESIGN.md section 5)
WEIGHT_TYPE = QuantType.QInt8


class PixelReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds the calibration images in batches of one size, with a progress bar. One size:
    ORT's histogram collector (percentile, entropy) stacks the batches' outputs and fails on a
    shorter last batch, so the size is the largest divisor of the count up to ``batch_size``."""

    def __init__(self, pixels: npt.NDArray[np.uint8], batch_size: int = CALIBRATION_BATCH) -> None:
        size = even_batch(len(pixels), batch_size)
        self._batches = [pixels[i : i + size] for i in range(0, len(pixels), size)]
        self._iter: Iterator[npt.NDArray[np.uint8]] = iter(
            progress.bar(self._batches, "calibrate", "batch")
        )

    def get_next(self) -> dict[str, npt.NDArray[np.uint8]] | None:
        batch = next(self._iter, None)
        return None if batch is None else {INPUT_NAME: batch}

    def __len__(self) -> int:
        return len(self._batches)


def even_batch(count: int, largest: int) -> int:
    """The largest batch size up to ``largest`` that divides ``count`` (1 for a prime)."""
    return next(size for size in range(min(largest, max(count, 1)), 0, -1) if count % size == 0)


def _op_types() -> list[str]:
    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def prepare(fp32_path: Path, out_path: Path) -> None:
    """quant_pre_process: shape inference + graph optimisation. Without it, the legacy
    exporter's graph leaves the biases unquantized (DESIGN.md section 5)."""
    quant_pre_process(str(fp32_path), str(out_path))


def calibrate(model_path: Path, pixels: npt.NDArray[np.uint8], recipe: QuantRecipe) -> TensorsData:
    extra: dict[str, Any] = {}
    if recipe.calibration_method == "percentile":
        extra["percentile"] = recipe.percentile
    if recipe.calibration_method == "entropy":
        extra["num_bins"] = recipe.histogram_bins
    with tempfile.TemporaryDirectory(prefix="imgcls-calib-") as tmp:
        calibrator = create_calibrator(
            model_path,
            _op_types(),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_METHODS[recipe.calibration_method],
            providers=["CPUExecutionProvider"],
            extra_options=extra,
        )
        calibrator.collect_data(PixelReader(pixels))
        ranges: TensorsData = calibrator.compute_data()
    return ranges


def quantize_with_ranges(
    prepared_path: Path,
    out_path: Path,
    ranges: TensorsData,
    recipe: QuantRecipe,
    weights: WeightBits = "int8",
) -> None:
    """QDQ-quantize with ranges already measured (the recipe's calibration is not rerun).
    ``weights``: "int8" (full range, for CPUs with VNNI/AMX) or "int8_w7" (7-bit weights, for
    x86 CPUs whose u8s8 kernels saturate: service/model/int8_weights.py)."""
    quantizer = QDQQuantizer(
        load_model_with_shape_infer(prepared_path),
        True,  # per_channel: one scale per output channel keeps depthwise convs accurate
        weights == "int8_w7",  # reduce_range: 7-bit weights
        WEIGHT_TYPE,
        ACTIVATION_TYPE,
        ranges,
        [],  # nodes_to_quantize: all
        list(recipe.nodes_to_exclude),
        _op_types(),
        {"QDQDisableWeightAdjustForInt32Bias": not recipe.adjust_weights_for_bias},
    )
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(out_path), False)


def quantize(
    fp32_path: Path,
    out_paths: Mapping[WeightBits, Path],
    pixels: npt.NDArray[np.uint8],
    recipe: QuantRecipe,
) -> None:
    """Calibrate once, then write one int8 file per weight range in ``out_paths``."""
    with tempfile.TemporaryDirectory(prefix="imgcls-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare(fp32_path, prepared)
        ranges = calibrate(prepared, pixels, recipe)
        for weights, out_path in out_paths.items():
            quantize_with_ranges(prepared, out_path, ranges, recipe, weights)
