"""Errors the build reports to its user as one line (exit code 2), never as a traceback.

BuildError              a user-facing problem: bad option, missing file, no data
├── WeightsError        weights file missing, corrupt, or not loadable into the model
│   └── WeightsUnavailable  official weights neither cached nor downloadable (offline)
├── DataError           evaluation/calibration images missing or unreadable
└── GateFailed          int8 lost more top-1 than allowed (exit code 1: the build ran, the
                        model is not good enough)
"""

from __future__ import annotations


class BuildError(Exception):
    exit_code = 2


class WeightsError(BuildError):
    pass


class WeightsUnavailable(WeightsError):
    pass


class DataError(BuildError):
    pass


class GateFailed(BuildError):
    exit_code = 1
