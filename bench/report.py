"""The report: each benchmark returns a Section (markdown, PNG plots, raw data, and what it adds
to the summary); report.md strings them together under what the numbers were measured on (CPU,
cores, flags, library versions, date: absolute timings mean nothing without it), and
results.json keeps the raw numbers. Also the one way every benchmark computes percentiles
(numpy's linear interpolation), formats a table cell, draws a plot (matplotlib's Figure, imported
when first drawn) and reads the targets and the write-up's figures (targets.toml)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

D = TypeVar("D", bound="DataclassInstance")

# The flags that decide which int8/fp32 kernels the engines can use.
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
PACKAGES: tuple[str, ...] = ("onnxruntime-openvino", "onnxruntime", "torch", "torchvision")
PACKAGES += ("numpy", "pillow", "fastapi", "uvicorn", "httpx", "flask")
TARGETS = tomllib.loads((Path(__file__).parent / "targets.toml").read_text())


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        return Summary(0, *[float("nan")] * 5)
    array = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = (float(p) for p in np.percentile(array, [50, 90, 99]))
    return Summary(len(values), float(array.mean()), p50, p90, p99, float(array.max()))


def median_of(runs: Sequence[D]) -> D:
    """Each field's median over repeated runs (a dataclass of numbers)."""
    fields = {k: statistics.median(getattr(run, k) for run in runs) for k in asdict(runs[0])}
    return type(runs[0])(**fields)


def fmt(value: float | None, digits: int = 1) -> str:
    """Table cells: a dash for missing, fixed decimals otherwise."""
    if value is None or value != value:  # NaN
        return "-"
    return f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _figure(size: tuple[float, float]) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure  # no pyplot: no display, nothing global to close

    fig = Figure(figsize=size)
    return fig, fig.subplots()


def _save(
    fig: Figure, ax: Axes, path: Path, labels: tuple[str, str, str], grid: Literal["both", "y"]
) -> str:
    """``labels``: title, x and y; the file name, for Section.plots."""
    ax.set(title=labels[0], xlabel=labels[1], ylabel=labels[2])
    ax.grid(True, axis=grid, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path.name


def line_plot(
    path: Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    labels: tuple[str, str, str],
    logx: bool = False,
    logy: bool = True,
) -> str:
    """Lines with markers; y on a log scale (else linear from 0), x too (base 2) with ``logx``."""
    fig, ax = _figure((8, 5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    else:  # a level over time (memory): from 0, so that a flat line looks flat
        top = max((max(ys) for _, ys in series.values() if ys), default=1.0)
        ax.set_ylim(0, top * 1.15)
    ax.legend(fontsize=8)
    return _save(fig, ax, path, labels, "both")


def bar_plot(path: Path, values: Mapping[str, float], title: str, ylabel: str) -> str:
    fig, ax = _figure((9, 5))
    ax.bar(range(len(values)), list(values.values()))
    ax.set_xticks(range(len(values)), list(values), rotation=30, ha="right", fontsize=8)
    return _save(fig, ax, path, (title, "", ylabel), "y")


def bar(total: int, desc: str) -> tqdm:
    """A benchmark's progress bar, on stderr so that stdout stays clean."""
    return tqdm(total=total, desc=desc, file=sys.stderr, unit="step", dynamic_ncols=True)


@dataclass
class Section:
    name: str  # module name: engines, accuracy, http, peers, coldstart, summary
    title: str
    body: list[str] = field(default_factory=list)  # markdown paragraphs and tables
    plots: list[str] = field(default_factory=list)  # file names inside the results folder
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers; dataclasses welcome
    # For the summary (bench.run_all): cells of the write-up's table by row key (measured here,
    # how far past it), and markdown blocks such as the targets tables.
    writeup: dict[str, tuple[str, str]] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.body.append(text)

    def markdown(self) -> str:
        parts = [f"## {self.title}", *self.body]
        parts += [f"![{Path(plot).stem}]({plot})" for plot in self.plots]
        return "\n\n".join(parts)


@dataclass(frozen=True)
class MachineInfo:
    date: str
    cpu: str
    cores: int
    usable_cpus: int
    flags: list[str]
    memory_gib: float
    kernel: str
    load_average_at_start: list[float]
    versions: dict[str, str]

    def markdown(self) -> str:
        return "\n".join(
            [
                f"- Date: {self.date}",
                f"- CPU: {self.cpu}, {self.cores} cores ({self.usable_cpus} usable), "
                f"{self.memory_gib} GiB RAM, kernel {self.kernel}",
                f"- CPU flags of interest: {', '.join(self.flags) or 'none'}",
                f"- Load average at start: {self.load_average_at_start} (well above 0 means other "
                "work shared the cores: treat the figures as provisional)",
                "- Versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()),
            ]
        )


def _cpuinfo_field(name: str) -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    found = (v for k, _, v in (line.partition(":") for line in lines) if k.strip() == name)
    return next(found, "").strip()


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def machine_info() -> MachineInfo:
    flags = set(_cpuinfo_field("flags").split())
    return MachineInfo(
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=_cpuinfo_field("model name") or platform.processor(),
        cores=os.cpu_count() or 1,
        usable_cpus=len(os.sched_getaffinity(0)),
        flags=[flag for flag in FLAGS if flag in flags],
        memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        kernel=platform.release(),
        load_average_at_start=[round(x, 2) for x in os.getloadavg()],
        versions=_versions(),
    )


def _dump(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    """JSON for what the encoder does not know: a dataclass as its dict, the rest as text."""
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else str(value)


def write_report(
    out_dir: Path, sections: Sequence[Section], quick: bool, machine: MachineInfo | None = None
) -> Path:
    machine = machine or machine_info()
    mode = " (QUICK MODE: checks only, not figures)" if quick else ""
    parts = [f"# imgcls benchmark report{mode}", "## Machine", machine.markdown()]
    text = "\n\n".join([*parts, *(s.markdown() for s in sections)])
    report = out_dir / "report.md"
    report.write_text(text + "\n")
    raw = {"machine": machine, "quick": quick, **{s.name: s.data for s in sections}}
    _dump(out_dir / "results.json", raw)
    return report


def save_section_data(out_dir: Path, section: Section) -> None:
    _dump(out_dir / f"{section.name}.json", section.data)
