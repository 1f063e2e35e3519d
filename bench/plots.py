"""PNG plots with matplotlib's Agg backend (no display on a server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def _save(
    fig: Figure,
    ax: Axes,
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    grid: Literal["both", "y"],
) -> str:
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, axis=grid, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def line_plot(
    path: Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
) -> str:
    """Lines with markers; y on a log scale, x too (base 2) with ``logx``."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _save(fig, ax, path, title, xlabel, ylabel, "both")


def bar_plot(path: Path, values: Mapping[str, float], title: str, ylabel: str) -> str:
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.bar(range(len(values)), list(values.values()))
    ax.set_xticks(range(len(values)), list(values), rotation=30, ha="right", fontsize=8)
    return _save(fig, ax, path, title, "", ylabel, "y")
