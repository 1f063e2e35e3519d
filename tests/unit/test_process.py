"""CPU budget from the cgroup quota and the affinity mask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service import process as cpus


def _files(
    tmp_path: Path, v2: str | None, quota: str | None, period: str | None
) -> dict[str, Path]:
    paths = {"v2": tmp_path / "cpu.max", "v1_quota": tmp_path / "q", "v1_period": tmp_path / "p"}
    for key, text in (("v2", v2), ("v1_quota", quota), ("v1_period", period)):
        if text is not None:
            paths[key].write_text(text)
    return paths


@pytest.mark.parametrize(
    ("v2", "quota", "period", "expected"),
    [
        ("max 100000\n", None, None, None),  # v2, no quota
        ("150000 100000\n", None, None, 1.5),  # v2, 1.5 CPUs
        (None, "200000\n", "100000\n", 2.0),  # v1
        (None, "-1\n", "100000\n", None),  # v1, no quota
        (None, None, None, None),  # no cgroup files at all
        ("garbage", "50000", "100000", 0.5),  # unreadable v2 falls through to v1
    ],
)
def test_cgroup_cpu_limit(
    tmp_path: Path, v2: str | None, quota: str | None, period: str | None, expected: float | None
) -> None:
    assert cpus.cgroup_cpu_limit(**_files(tmp_path, v2, quota, period)) == expected


def test_available_cpus_is_the_smaller_of_affinity_and_quota(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 1.5)
    assert cpus.available_cpus() == 2  # a fractional quota rounds up: 1.5 CPUs can run 2 threads
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
    assert cpus.available_cpus() == 4
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 16.0)
    assert cpus.available_cpus() == 4


def test_available_cpus_is_at_least_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 0.1)
    assert cpus.available_cpus() == 1
