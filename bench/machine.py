"""What the numbers were measured on: CPU, cores, flags, library versions, date. Every report
starts with this, because absolute timings mean nothing without it."""

from __future__ import annotations

import datetime as dt
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

# The flags that decide which int8/fp32 kernels the engines can use.
_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
_PACKAGES = (
    "onnxruntime-openvino",
    "onnxruntime",
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "fastapi",
    "uvicorn",
    "httpx",
    "flask",
)


def _cpuinfo_field(name: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return ""


def _versions() -> dict[str, str]:
    found: dict[str, str] = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


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
    versions: dict[str, str] = field(default_factory=dict)

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


def machine_info() -> MachineInfo:
    flags = set(_cpuinfo_field("flags").split())
    return MachineInfo(
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=_cpuinfo_field("model name") or platform.processor(),
        cores=os.cpu_count() or 1,
        usable_cpus=len(os.sched_getaffinity(0)),
        flags=[flag for flag in _FLAGS if flag in flags],
        memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        kernel=platform.release(),
        load_average_at_start=[round(x, 2) for x in os.getloadavg()],
        versions=_versions(),
    )
