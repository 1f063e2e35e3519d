"""Errors the build reports to its user as one line (exit code 2), never as a traceback.

BuildError              a user-facing problem: bad option, missing file, no data
├── ConfigError         model.toml unreadable, a key wrong or missing, a file it names missing
├── WeightsError        weights file missing, corrupt, or not loadable into the model
│   └── WeightsUnavailable  official weights neither cached nor downloadable (offline)
├── SourceError         the model is not an image classifier the build can serve: an ONNX
│                       graph of the wrong shape, outputs that do not match the labels
├── DataError           calibration/evaluation images missing, too few, or too many unreadable
└── GateFailed          int8 lost more top-1 than allowed (exit code 1: the build ran, the
                        model is not good enough)
"""

from __future__ import annotations


class BuildError(Exception):
    exit_code = 2


class ConfigError(BuildError):
    pass


class WeightsError(BuildError):
    pass


class WeightsUnavailable(WeightsError):
    pass


class SourceError(BuildError):
    pass


class DataError(BuildError):
    pass


class GateFailed(BuildError):
    exit_code = 1
