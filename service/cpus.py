"""How many CPUs this process may really use: the smaller of its affinity mask and its cgroup
CPU quota. ONNX Runtime sizes its pool from the host's cores, which in a container with a
2-CPU limit on a 64-core host means 64 spinning threads fighting over 2 CPUs."""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
_CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cgroup_cpu_limit(
    v2: Path = _CGROUP_V2, v1_quota: Path = _CGROUP_V1_QUOTA, v1_period: Path = _CGROUP_V1_PERIOD
) -> float | None:
    """CPUs allowed by the cgroup quota, or None when there is no quota."""
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(v1_quota.read_text())
        period_us = int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else quota_us / period_us


def available_cpus() -> int:
    """Whole CPUs this process can use (at least 1)."""
    affinity = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit()
    if limit is None:
        return max(1, affinity)
    return max(1, min(affinity, math.ceil(limit)))
