"""Percentiles, the one way every benchmark computes them (numpy's linear interpolation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan)
    array = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return Summary(
        count=len(values),
        mean=float(array.mean()),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        max=float(array.max()),
    )


def fmt(value: float | None, digits: int = 1) -> str:
    """Table cells: a dash for missing, fixed decimals otherwise."""
    if value is None or value != value:  # NaN
        return "-"
    return f"{value:.{digits}f}"
