"""The int8 recipe: how the float graph is calibrated and which nodes stay in float. Data, so
the configured recipe, each step of the search and the manifest speak of the same thing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CalibrationMethod = Literal["minmax", "entropy", "percentile"]


@dataclass(frozen=True, slots=True)
class QuantRecipe:
    """Static QDQ int8: per-channel int8 weights, uint8 activations (U8S8, the fast path here)."""

    calibration_method: CalibrationMethod = "minmax"
    percentile: float = 99.999  # only for "percentile"
    # Only for "entropy": ORT's default of 128 histogram bins for 128 quantized bins leaves the
    # KL search nothing to clip, which makes it MinMax under another name.
    histogram_bins: int = 2048
    # ORT widens a weight's scale (up to ~18x here) when its bias would not fit the int32 bias
    # scale; False keeps the weights precise and lets that bias saturate instead.
    adjust_weights_for_bias: bool = True
    nodes_to_exclude: tuple[str, ...] = ()  # kept in float: the most sensitive layers

    def describe(self) -> str:
        """The calibration as written to the manifest, e.g. "percentile(99.999)"."""
        detail = {"minmax": "", "entropy": f"(bins={self.histogram_bins})"}.get(
            self.calibration_method, f"({self.percentile})"
        )
        bias = "" if self.adjust_weights_for_bias else ", no weight adjust for int32 bias"
        return f"{self.calibration_method}{detail}{bias}"
