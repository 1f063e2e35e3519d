"""The progress display: one tqdm bar per benchmark on stderr, so stdout stays clean."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, file=sys.stderr, unit="step", dynamic_ncols=True)
