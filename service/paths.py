"""Where the model artifacts and the labeled data live: the defaults and their environment
variables in one place, for the service, the build, bench and the tests. Read when called,
never at import."""

from __future__ import annotations

import os
from pathlib import Path

ARTIFACTS_DIR_ENV = "IMGCLS_ARTIFACTS_DIR"
DEFAULT_ARTIFACTS_DIR = Path("model_artifacts")
DATA_DIR_ENV = "IMGCLS_DATA_DIR"
# Relative to the working directory (the repository root for `make` and CI); the data is not
# part of the repository (../shared/data/README.md).
DEFAULT_DATA_DIR = Path("../shared/data")


def artifacts_dir() -> Path:
    return Path(os.environ.get(ARTIFACTS_DIR_ENV, DEFAULT_ARTIFACTS_DIR))


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR))
